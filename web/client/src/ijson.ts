// I-JSON parsing (RFC 7493, protocol §1). Our own parser, because JSON.parse silently keeps the
// last of duplicate member names, accepts lone surrogates, rounds huge integers and cannot tell
// `1` from `1.0`. Rules, the same as the C++ core's parse_ijson:
//   - strict RFC 8259 grammar; input bounded in size (UTF-8 bytes) and nesting depth;
//   - no duplicate member names, no lone surrogates (escaped or raw), no unescaped controls;
//   - a number written without fraction or exponent must lie within ±(2^53−1);
//   - other numbers must fit a double, and may not have a magnitude in (2^53−1, 1e21): JCS writes
//     those as plain digits, an integer §1 forbids (docs/protocol.md "JSON numbers");
//   - whether each number was written without fraction/exponent is kept (isIntegerLiteral).
import { MeshError, badRequest, quoteForMessage } from './errors.js';
import { hasLoneSurrogate, utf8Decode, utf8Length } from './bytes.js';

export type JsonValue = null | boolean | number | string | JsonValue[] | JsonObject;
export interface JsonObject {
  [name: string]: JsonValue;
}

/** One maximal envelope frame (protocol §3, max_envelope_bytes default). */
export const DEFAULT_MAX_JSON_BYTES = 1024 * 1024;
/** Deep enough for any real body, shallow enough that no recursion can exhaust the stack. */
export const MAX_JSON_DEPTH = 64;
export const MAX_SAFE_INTEGER = 9007199254740991;
/** From 1e21 on ECMAScript (hence JCS) writes numbers in exponent form. */
const FIRST_EXPONENT_FORM_MAGNITUDE = 1e21;

export interface ParseOptions {
  /** Bound on the UTF-8 size of the text; larger input is `too_large`. */
  maxBytes?: number;
  /** Bound on the nesting of arrays and objects; deeper input is `bad_request`. */
  maxDepth?: number;
}

// Per parsed container: the member names / indices whose number was written with a fraction or
// exponent, with the value read. Containers with none are absent; containers built in code are
// never here. Keeping the value means a member replaced after parsing is judged by its new value.
const nonIntegerLiterals = new WeakMap<object, Map<string | number, number>>();

/**
 * True if `container[key]` is an integer in the sense of protocol §1: a number written without
 * fraction or exponent (for parsed values) within ±(2^53−1). For values built in code, which have
 * no written form, any safe integer counts.
 */
export function isIntegerLiteral(container: JsonObject | JsonValue[], key: string | number): boolean {
  const value = Array.isArray(container) ? container[key as number] : (container as JsonObject)[key as string];
  if (typeof value !== 'number' || !Number.isSafeInteger(value)) return false;
  const written = nonIntegerLiterals.get(container)?.get(key);
  return written === undefined || !Object.is(written, value);
}

export function isJsonObject(value: JsonValue | undefined): value is JsonObject {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/**
 * Parses I-JSON text (a string, or UTF-8 bytes decoded strictly). Throws MeshError: `too_large`
 * over maxBytes, otherwise `bad_request` with a message starting "JSON: " that names the problem
 * and its offset (UTF-16 code units into the text).
 */
export function parseIJson(text: string | Uint8Array, options: ParseOptions = {}): JsonValue {
  const maxBytes = options.maxBytes ?? DEFAULT_MAX_JSON_BYTES;
  const maxDepth = options.maxDepth ?? MAX_JSON_DEPTH;
  let source: string;
  if (typeof text === 'string') {
    const size = utf8Length(text);
    if (size > maxBytes) throw tooLarge(size, maxBytes);
    source = text;
  } else {
    if (text.length > maxBytes) throw tooLarge(text.length, maxBytes);
    try {
      source = utf8Decode(text);
    } catch {
      throw badRequest('JSON: invalid UTF-8');
    }
  }
  return new Parser(source, maxDepth).parseDocument();
}

function tooLarge(size: number, maxBytes: number): MeshError {
  return new MeshError('too_large', `JSON text of ${size} bytes exceeds the limit of ${maxBytes} bytes`);
}

const enum Char {
  Tab = 0x09,
  Newline = 0x0a,
  Return = 0x0d,
  Space = 0x20,
  Quote = 0x22,
  Plus = 0x2b,
  Comma = 0x2c,
  Minus = 0x2d,
  Dot = 0x2e,
  Zero = 0x30,
  Nine = 0x39,
  Colon = 0x3a,
  UpperE = 0x45,
  LeftBracket = 0x5b,
  Backslash = 0x5c,
  RightBracket = 0x5d,
  LowerE = 0x65,
  LeftBrace = 0x7b,
  RightBrace = 0x7d,
}

function isDigit(code: number): boolean {
  return code >= Char.Zero && code <= Char.Nine;
}

const SAFE_INTEGER_DIGITS = String(MAX_SAFE_INTEGER);

/** Digits of a magnitude (no sign, no leading zero) within 2^53−1, compared as text. */
function digitsAreSafe(digits: string): boolean {
  if (digits.length !== SAFE_INTEGER_DIGITS.length) return digits.length < SAFE_INTEGER_DIGITS.length;
  return digits <= SAFE_INTEGER_DIGITS;
}

class Parser {
  private pos = 0;
  private depth = 0;

  constructor(
    private readonly text: string,
    private readonly maxDepth: number,
  ) {}

  parseDocument(): JsonValue {
    this.skipWhitespace();
    if (this.pos >= this.text.length) throw badRequest('JSON: empty input');
    const value = this.parseValue();
    this.skipWhitespace();
    if (this.pos < this.text.length) throw this.error('unexpected content after the value');
    return value;
  }

  private error(what: string, at = this.pos): MeshError {
    return badRequest(`JSON: ${what} at offset ${at}`);
  }

  /** The error for the character at `pos` where a value or token was expected. */
  private unexpected(): MeshError {
    if (this.pos >= this.text.length) return this.error('unexpected end of input');
    const code = this.text.charCodeAt(this.pos);
    if (code < 0x20) return this.error('unexpected control character');
    if (code >= 0xd800 && code <= 0xdfff && hasLoneSurrogate(this.text.slice(this.pos, this.pos + 2))) {
      return this.error('lone UTF-16 surrogate');
    }
    return this.error(`syntax error (unexpected ${quoteForMessage(String.fromCodePoint(this.text.codePointAt(this.pos)!))})`);
  }

  private skipWhitespace(): void {
    const text = this.text;
    while (this.pos < text.length) {
      const code = text.charCodeAt(this.pos);
      if (code !== Char.Space && code !== Char.Newline && code !== Char.Return && code !== Char.Tab) return;
      this.pos++;
    }
  }

  private parseValue(): JsonValue {
    const code = this.text.charCodeAt(this.pos);
    switch (code) {
      case Char.LeftBrace:
        return this.parseObject();
      case Char.LeftBracket:
        return this.parseArray();
      case Char.Quote:
        return this.parseString();
      case 0x74: // t
        return this.parseLiteral('true', true);
      case 0x66: // f
        return this.parseLiteral('false', false);
      case 0x6e: // n
        return this.parseLiteral('null', null);
      default:
        if (code === Char.Minus || isDigit(code)) return this.parseNumber().value;
        throw this.unexpected();
    }
  }

  private parseLiteral<T extends JsonValue>(word: string, value: T): T {
    for (let i = 0; i < word.length; i++) {
      if (this.text.charCodeAt(this.pos) !== word.charCodeAt(i)) throw this.unexpected();
      this.pos++;
    }
    return value;
  }

  private enter(): void {
    if (++this.depth > this.maxDepth) throw this.error(`nesting deeper than ${this.maxDepth} levels`);
  }

  private expect(code: number, what: string): void {
    if (this.text.charCodeAt(this.pos) !== code) {
      if (this.pos >= this.text.length) throw this.error('unexpected end of input');
      throw this.error(`syntax error (expected ${what})`);
    }
    this.pos++;
  }

  private parseObject(): JsonObject {
    this.enter();
    const object: JsonObject = {};
    let nonIntegers: Map<string, number> | undefined;
    this.pos++; // {
    this.skipWhitespace();
    if (this.text.charCodeAt(this.pos) === Char.RightBrace) {
      this.pos++;
      this.depth--;
      return object;
    }
    for (;;) {
      this.skipWhitespace();
      if (this.text.charCodeAt(this.pos) !== Char.Quote) {
        if (this.pos >= this.text.length) throw this.error('unexpected end of input');
        throw this.error('syntax error (expected a member name)');
      }
      const nameAt = this.pos;
      const name = this.parseString();
      if (Object.prototype.hasOwnProperty.call(object, name)) {
        throw badRequest(`JSON: duplicate member ${quoteForMessage(name)} at offset ${nameAt}`);
      }
      this.skipWhitespace();
      this.expect(Char.Colon, "':'");
      this.skipWhitespace();
      const value = this.parseMemberValue();
      if (value.nonInteger) (nonIntegers ??= new Map()).set(name, value.value as number);
      if (name === '__proto__') {
        // Plain assignment would set the prototype instead of creating a member.
        Object.defineProperty(object, name, { value: value.value, writable: true, enumerable: true, configurable: true });
      } else {
        object[name] = value.value;
      }
      this.skipWhitespace();
      const code = this.text.charCodeAt(this.pos);
      if (code === Char.Comma) {
        this.pos++;
        continue;
      }
      if (code === Char.RightBrace) {
        this.pos++;
        break;
      }
      if (this.pos >= this.text.length) throw this.error('unexpected end of input');
      throw this.error("syntax error (expected ',' or '}')");
    }
    if (nonIntegers !== undefined) nonIntegerLiterals.set(object, nonIntegers);
    this.depth--;
    return object;
  }

  private parseArray(): JsonValue[] {
    this.enter();
    const array: JsonValue[] = [];
    let nonIntegers: Map<number, number> | undefined;
    this.pos++; // [
    this.skipWhitespace();
    if (this.text.charCodeAt(this.pos) === Char.RightBracket) {
      this.pos++;
      this.depth--;
      return array;
    }
    for (;;) {
      this.skipWhitespace();
      const value = this.parseMemberValue();
      if (value.nonInteger) (nonIntegers ??= new Map()).set(array.length, value.value as number);
      array.push(value.value);
      this.skipWhitespace();
      const code = this.text.charCodeAt(this.pos);
      if (code === Char.Comma) {
        this.pos++;
        continue;
      }
      if (code === Char.RightBracket) {
        this.pos++;
        break;
      }
      if (this.pos >= this.text.length) throw this.error('unexpected end of input');
      throw this.error("syntax error (expected ',' or ']')");
    }
    if (nonIntegers !== undefined) nonIntegerLiterals.set(array, nonIntegers);
    this.depth--;
    return array;
  }

  /** A value inside a container, noting whether it is a number with fraction or exponent. */
  private parseMemberValue(): { value: JsonValue; nonInteger: boolean } {
    const code = this.text.charCodeAt(this.pos);
    if (code === Char.Minus || isDigit(code)) {
      const number = this.parseNumber();
      return { value: number.value, nonInteger: !number.integerLiteral };
    }
    return { value: this.parseValue(), nonInteger: false };
  }

  private parseNumber(): { value: number; integerLiteral: boolean } {
    const text = this.text;
    const start = this.pos;
    if (text.charCodeAt(this.pos) === Char.Minus) this.pos++;
    const digitsStart = this.pos;
    if (text.charCodeAt(this.pos) === Char.Zero) {
      this.pos++;
      if (isDigit(text.charCodeAt(this.pos))) throw this.error('number with a leading zero', start);
    } else if (isDigit(text.charCodeAt(this.pos))) {
      while (isDigit(text.charCodeAt(this.pos))) this.pos++;
    } else {
      throw this.unexpected();
    }
    const digitsEnd = this.pos;
    let integerLiteral = true;
    if (text.charCodeAt(this.pos) === Char.Dot) {
      integerLiteral = false;
      this.pos++;
      if (!isDigit(text.charCodeAt(this.pos))) throw this.unexpected();
      while (isDigit(text.charCodeAt(this.pos))) this.pos++;
    }
    const e = text.charCodeAt(this.pos);
    if (e === Char.LowerE || e === Char.UpperE) {
      integerLiteral = false;
      this.pos++;
      const sign = text.charCodeAt(this.pos);
      if (sign === Char.Plus || sign === Char.Minus) this.pos++;
      if (!isDigit(text.charCodeAt(this.pos))) throw this.unexpected();
      while (isDigit(text.charCodeAt(this.pos))) this.pos++;
    }
    const literal = text.slice(start, this.pos);
    if (integerLiteral) {
      // protocol §1: an integer whatever its size; compared as digits so no rounding can hide it.
      if (!digitsAreSafe(text.slice(digitsStart, digitsEnd))) {
        throw badRequest(
          `JSON: integer ${quoteForMessage(literal)} at offset ${start} is outside the I-JSON safe range ±(2^53−1)`,
        );
      }
      return { value: Number(literal), integerLiteral: true };
    }
    // Number() rounds decimal text correctly (ECMAScript StringToNumber), so JCS bytes match other
    // languages; underflow gives ±0 as JSON.parse does.
    const value = Number(literal);
    if (!Number.isFinite(value)) {
      throw badRequest(`JSON: number ${quoteForMessage(literal)} at offset ${start} does not fit a double`);
    }
    const magnitude = Math.abs(value);
    if (magnitude > MAX_SAFE_INTEGER && magnitude < FIRST_EXPONENT_FORM_MAGNITUDE) {
      throw badRequest(
        `JSON: number ${quoteForMessage(literal)} at offset ${start} is an integer outside the I-JSON safe range in canonical (JCS) form`,
      );
    }
    return { value, integerLiteral: false };
  }

  private parseString(): string {
    const text = this.text;
    this.pos++; // opening quote
    let out = '';
    let runStart = this.pos;
    for (;;) {
      if (this.pos >= text.length) throw this.error('unexpected end of input');
      const code = text.charCodeAt(this.pos);
      if (code === Char.Quote) {
        out += text.slice(runStart, this.pos);
        this.pos++;
        return out;
      }
      if (code === Char.Backslash) {
        out += text.slice(runStart, this.pos);
        out += this.parseEscape();
        runStart = this.pos;
        continue;
      }
      if (code < 0x20) throw this.error('unescaped control character');
      if (code >= 0xd800 && code <= 0xdfff) {
        // A raw surrogate in the text: only a well-formed pair is a character.
        const next = text.charCodeAt(this.pos + 1);
        if (code > 0xdbff || !(next >= 0xdc00 && next <= 0xdfff)) throw this.error('lone UTF-16 surrogate');
        this.pos += 2;
        continue;
      }
      this.pos++;
    }
  }

  /** One escape starting at the backslash; returns the characters it stands for. */
  private parseEscape(): string {
    const at = this.pos;
    this.pos++; // backslash
    if (this.pos >= this.text.length) throw this.error('unexpected end of input');
    const code = this.text.charCodeAt(this.pos);
    this.pos++;
    switch (code) {
      case Char.Quote:
        return '"';
      case Char.Backslash:
        return '\\';
      case 0x2f: // /
        return '/';
      case 0x62: // b
        return '\b';
      case 0x66: // f
        return '\f';
      case 0x6e: // n
        return '\n';
      case 0x72: // r
        return '\r';
      case 0x74: // t
        return '\t';
      case 0x75: {
        // u
        const unit = this.parseHex4(at);
        if (unit >= 0xdc00 && unit <= 0xdfff) throw this.error('lone UTF-16 surrogate in a \\u escape (I-JSON)', at);
        if (unit >= 0xd800 && unit <= 0xdbff) {
          // I-JSON: a high surrogate escape must be followed at once by a low surrogate escape.
          if (this.text.charCodeAt(this.pos) !== Char.Backslash || this.text.charCodeAt(this.pos + 1) !== 0x75) {
            if (this.pos >= this.text.length) throw this.error('unexpected end of input');
            throw this.error('lone UTF-16 surrogate in a \\u escape (I-JSON)', at);
          }
          const lowAt = this.pos;
          this.pos += 2;
          const low = this.parseHex4(lowAt);
          if (!(low >= 0xdc00 && low <= 0xdfff)) throw this.error('lone UTF-16 surrogate in a \\u escape (I-JSON)', at);
          return String.fromCharCode(unit, low);
        }
        return String.fromCharCode(unit);
      }
      default:
        throw this.error('syntax error (invalid escape)', at);
    }
  }

  private parseHex4(escapeAt: number): number {
    let value = 0;
    for (let i = 0; i < 4; i++) {
      if (this.pos >= this.text.length) throw this.error('unexpected end of input');
      const code = this.text.charCodeAt(this.pos);
      let digit: number;
      if (code >= 0x30 && code <= 0x39) digit = code - 0x30;
      else if (code >= 0x61 && code <= 0x66) digit = code - 0x61 + 10;
      else if (code >= 0x41 && code <= 0x46) digit = code - 0x41 + 10;
      else throw this.error('syntax error (invalid \\u escape)', escapeAt);
      value = value * 16 + digit;
      this.pos++;
    }
    return value;
  }
}
