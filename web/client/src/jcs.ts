// RFC 8785 JSON Canonicalization Scheme: the bytes every signature covers (protocol §1).
// Members sorted by UTF-16 code units (JavaScript's own string order), numbers as ECMAScript's
// Number::toString, strings with the minimal escapes of JSON.stringify, no whitespace.
import { badRequest } from './errors.js';
import { hasLoneSurrogate, utf8Encode } from './bytes.js';
import { MAX_JSON_DEPTH, type JsonValue } from './ijson.js';

/** Canonical text of a JSON value. Throws MeshError for values that have no JSON form. */
export function canonicalize(value: JsonValue): string {
  const parts: string[] = [];
  write(value, parts, 0);
  return parts.join('');
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

function write(value: JsonValue, out: string[], depth: number): void {
  if (depth > MAX_WRITE_DEPTH) throw badRequest(`JCS: value nested deeper than ${MAX_WRITE_DEPTH} levels (cyclic?)`);
  switch (typeof value) {
    case 'string':
      out.push(quote(value));
      return;
    case 'number':
      out.push(numberToJcs(value));
      return;
    case 'boolean':
      out.push(value ? 'true' : 'false');
      return;
    case 'object':
      if (value === null) {
        out.push('null');
      } else if (Array.isArray(value)) {
        out.push('[');
        for (let i = 0; i < value.length; i++) {
          if (i > 0) out.push(',');
          const element = value[i];
          if (element === undefined) throw badRequest(`JCS: array element ${i} is undefined`);
          write(element, out, depth + 1);
        }
        out.push(']');
      } else {
        out.push('{');
        // Default sort compares UTF-16 code units: exactly RFC 8785 §3.2.3.
        const names = Object.keys(value).sort();
        let first = true;
        for (const name of names) {
          const member = value[name];
          // Optional members are omitted, never undefined on the wire: skip them as JSON.stringify does.
          if (member === undefined) continue;
          if (!first) out.push(',');
          first = false;
          out.push(quote(name), ':');
          write(member, out, depth + 1);
        }
        out.push('}');
      }
      return;
    default:
      throw badRequest(`JCS: a ${typeof value} has no JSON form`);
  }
}

/** RFC 8785 §3.2.2.2: JSON.stringify's string form, which the RFC adopts; lone surrogates refused. */
function quote(text: string): string {
  if (hasLoneSurrogate(text)) throw badRequest('JCS: string contains a lone UTF-16 surrogate');
  return JSON.stringify(text);
}

/** RFC 8785 §3.2.2.3: ECMAScript Number::toString; both zeros are "0"; no form for NaN/Infinity. */
export function numberToJcs(value: number): string {
  if (!Number.isFinite(value)) throw badRequest(`JCS: ${value} has no JSON form`);
  if (value === 0) return '0';
  return String(value);
}
