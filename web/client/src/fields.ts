// Strict reading of the members of a protocol object (§1): unknown members, nulls, wrong types and
// integers written with a fraction or exponent are rejected, each with a MeshError(bad_request)
// naming the object and the member. Shared by every parser of protocol objects (envelopes, bodies,
// control frames, §7 objects, cards), like the C++ core's FieldReader.
import { badRequest, quoteForMessage, type MeshError } from './errors.js';
import { decodeBase64url } from './base64url.js';
import { isIntegerLiteral, isJsonObject, type JsonObject, type JsonValue } from './ijson.js';
import { checkUuidV4 } from './uuid.js';
import { checkAgentId } from './identity.js';

function has(object: JsonObject, name: string): boolean {
  return Object.prototype.hasOwnProperty.call(object, name);
}

export class FieldReader {
  constructor(
    readonly object: JsonObject,
    /** Names the object at the start of every message: "envelope", "hello", "card: capabilities[2]". */
    readonly context: string,
  ) {}

  problem(name: string, what: string): MeshError {
    return badRequest(`${this.context}: ${name} ${what}`);
  }

  has(name: string): boolean {
    return has(this.object, name);
  }

  /** Every member name must be in `known`. */
  rejectUnknown(known: readonly string[]): void {
    for (const name of Object.keys(this.object)) {
      if (!known.includes(name)) throw badRequest(`${this.context}: unknown member ${quoteForMessage(name)}`);
    }
  }

  /** Present and not null (optional members are omitted, never null; required ones are never null). */
  private required(name: string): JsonValue {
    if (!has(this.object, name)) throw badRequest(`${this.context}: missing member "${name}"`);
    const value = this.object[name]!;
    if (value === null) throw this.problem(name, 'must not be null');
    return value;
  }

  requiredString(name: string): string {
    const value = this.required(name);
    if (typeof value !== 'string') throw this.problem(name, 'must be a string');
    return value;
  }

  optionalString(name: string): string | undefined {
    return has(this.object, name) ? this.requiredString(name) : undefined;
  }

  /** An integer field (§1): written without fraction or exponent, within ±(2^53−1). */
  requiredInteger(name: string): number {
    this.required(name);
    if (!isIntegerLiteral(this.object, name)) {
      throw this.problem(name, 'must be an integer written without fraction or exponent');
    }
    return this.object[name] as number;
  }

  optionalInteger(name: string): number | undefined {
    return has(this.object, name) ? this.requiredInteger(name) : undefined;
  }

  requiredNonNegative(name: string): number {
    const value = this.requiredInteger(name);
    if (value < 0) throw this.problem(name, 'must not be negative');
    return value;
  }

  requiredBool(name: string): boolean {
    const value = this.required(name);
    if (typeof value !== 'boolean') throw this.problem(name, 'must be true or false');
    return value;
  }

  optionalBool(name: string): boolean | undefined {
    return has(this.object, name) ? this.requiredBool(name) : undefined;
  }

  /** A free-form value (`body`): any JSON value, null included. */
  requiredAny(name: string): JsonValue {
    if (!has(this.object, name)) throw badRequest(`${this.context}: missing member "${name}"`);
    return this.object[name]!;
  }

  /** A free-form optional member (schemas): any JSON value but null. */
  optionalNonNull(name: string): JsonValue | undefined {
    return has(this.object, name) ? this.required(name) : undefined;
  }

  requiredArray(name: string): JsonValue[] {
    const value = this.required(name);
    if (!Array.isArray(value)) throw this.problem(name, 'must be an array');
    return value;
  }

  optionalObject(name: string): JsonObject | undefined {
    if (!has(this.object, name)) return undefined;
    const value = this.required(name);
    if (!isJsonObject(value)) throw this.problem(name, 'must be an object');
    return value;
  }

  requiredUuid(name: string): string {
    const text = this.requiredString(name);
    try {
      return checkUuidV4(text, name);
    } catch (error) {
      throw badRequest(`${this.context}: ${(error as Error).message}`);
    }
  }

  requiredAgentId(name: string): string {
    const text = this.requiredString(name);
    try {
      return checkAgentId(text, name);
    } catch (error) {
      throw badRequest(`${this.context}: ${(error as Error).message}`);
    }
  }

  /** Canonical base64url of exactly `length` bytes (signatures, nonces, tokens, sid). */
  requiredBytes(name: string, length: number): Uint8Array {
    const text = this.requiredString(name);
    try {
      return decodeBase64url(text, length);
    } catch (error) {
      throw this.problem(name, `must be base64url of ${length} bytes: ${(error as Error).message}`);
    }
  }
}

/** The object a protocol value must be, or MeshError(bad_request) "<what> must be a JSON object". */
export function requireObject(value: JsonValue, what: string): JsonObject {
  if (!isJsonObject(value)) throw badRequest(`${what} must be a JSON object`);
  return value;
}
