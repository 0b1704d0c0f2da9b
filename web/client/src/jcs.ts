// RFC 8785 JSON Canonicalization Scheme: the bytes every signature covers (protocol §1).
// Members sorted by UTF-16 code units (JavaScript's own string order), numbers as ECMAScript's
// Number::toString, strings with the minimal escapes of JSON.stringify, no whitespace.
// Only what our own parser (ijson.ts) accepts has a canonical form here, so we never sign or send
// what a receiver must refuse: numbers of magnitude in (2^53−1, 1e21) — written as plain digits,
// an integer beyond I-JSON's range — are refused, and so is every object that is not a plain
// object or array (Date, Map, Set, typed arrays, class instances would otherwise become `{}` or
// lists of indices).
import { badRequest } from './errors.js';
import { hasLoneSurrogate, utf8Encode } from './bytes.js';
import { MAX_JSON_DEPTH, MAX_SAFE_INTEGER, type JsonValue } from './ijson.js';

/** Canonical text of a JSON value. Throws MeshError for values that have no JSON form. */
export function canonicalize(value: JsonValue): string {
  const parts: string[] = [];
  write(value, parts, 0);
  return parts.join('');
}

/**
 * Throws exactly what canonicalize would for `value`, without building the text: the check a
 * request or reply gets before it is queued, so a body is serialised only once, when it is sealed.
 */
export function checkJsonForm(value: JsonValue): void {
  write(value, undefined, 0);
}

/** UTF-8 of the canonical text: what gets signed. */
export function canonicalBytes(value: JsonValue): Uint8Array {
  return utf8Encode(canonicalize(value));
}

/**
 * Deeper trees than a parser would accept are still serialised, but only up to a bound far past
 * MAX_JSON_DEPTH, so a cyclic structure built in code fails cleanly instead of overflowing.
 */
const MAX_WRITE_DEPTH = MAX_JSON_DEPTH * 16;

// `out` undefined: only the checks (checkJsonForm), in the same order, so the same error comes first.
function write(value: JsonValue, out: string[] | undefined, depth: number): void {
  if (depth > MAX_WRITE_DEPTH) throw badRequest(`JCS: value nested deeper than ${MAX_WRITE_DEPTH} levels (cyclic?)`);
  switch (typeof value) {
    case 'string':
      if (out) out.push(quote(value));
      else checkString(value);
      return;
    case 'number': {
      const text = numberToJcs(value);
      out?.push(text);
      return;
    }
    case 'boolean':
      out?.push(value ? 'true' : 'false');
      return;
    case 'object':
      if (value === null) {
        out?.push('null');
      } else if (Array.isArray(value)) {
        if (!isPlainArray(value)) throw badRequest(`JCS: ${describe(value)} has no JSON form`);
        out?.push('[');
        for (let i = 0; i < value.length; i++) {
          if (i > 0) out?.push(',');
          const element = value[i];
          if (element === undefined) throw badRequest(`JCS: array element ${i} is undefined`);
          write(element, out, depth + 1);
        }
        out?.push(']');
      } else {
        if (!isPlainObject(value)) throw badRequest(`JCS: ${describe(value)} has no JSON form`);
        out?.push('{');
        // Default sort compares UTF-16 code units: exactly RFC 8785 §3.2.3.
        const names = Object.keys(value).sort();
        let first = true;
        for (const name of names) {
          const member = value[name];
          // Optional members are omitted, never undefined on the wire: skip them as JSON.stringify does.
          if (member === undefined) continue;
          if (!first) out?.push(',');
          first = false;
          if (out) out.push(quote(name), ':');
          else checkString(name);
          write(member, out, depth + 1);
        }
        out?.push('}');
      }
      return;
    default:
      throw badRequest(`JCS: a ${typeof value} has no JSON form`);
  }
}

/** RFC 8785 §3.2.2.2: JSON.stringify's string form, which the RFC adopts; lone surrogates refused. */
function quote(text: string): string {
  checkString(text);
  return JSON.stringify(text);
}

function checkString(text: string): void {
  if (hasLoneSurrogate(text)) throw badRequest('JCS: string contains a lone UTF-16 surrogate');
}

/**
 * RFC 8785 §3.2.2.3: ECMAScript Number::toString; both zeros are "0"; no form for NaN/Infinity, nor
 * (docs/protocol.md "JSON numbers") for magnitudes in (2^53−1, 1e21), which it writes as plain
 * digits: an integer outside ±(2^53−1) that every receiver refuses.
 */
export function numberToJcs(value: number): string {
  if (!Number.isFinite(value)) throw badRequest(`JCS: ${value} has no JSON form`);
  if (value === 0) return '0';
  const magnitude = Math.abs(value);
  if (magnitude > MAX_SAFE_INTEGER && magnitude < 1e21) {
    throw badRequest(`JCS: ${value} would be written as an integer beyond ±(2^53−1), which I-JSON receivers refuse`);
  }
  return String(value);
}

/** An object literal (or Object.create(null)), also from another realm; not a Date, Map, class… */
function isPlainObject(value: object): boolean {
  const proto: unknown = Object.getPrototypeOf(value);
  if (proto === null || proto === Object.prototype) return true;
  // Another realm's Object.prototype: its own prototype is null and its constructor is "Object".
  if (Object.getPrototypeOf(proto) !== null) return false;
  const ctor = (proto as { constructor?: unknown }).constructor;
  return typeof ctor === 'function' && ctor.name === 'Object';
}

/** An array literal, also from another realm; not an Array subclass. */
function isPlainArray(value: unknown[]): boolean {
  const proto: unknown = Object.getPrototypeOf(value);
  if (proto === Array.prototype) return true;
  if (proto === null || (proto as { constructor?: { name?: unknown } }).constructor?.name !== 'Array') return false;
  const objectProto: unknown = Object.getPrototypeOf(proto);
  return objectProto !== null && Object.getPrototypeOf(objectProto) === null;
}

function describe(value: object): string {
  const name = (Object.getPrototypeOf(value) as { constructor?: { name?: unknown } } | null)?.constructor?.name;
  return typeof name === 'string' && name !== '' ? `a ${name.slice(0, 40)}` : 'an object with a prototype';
}
