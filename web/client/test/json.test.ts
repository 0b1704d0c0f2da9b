// RFC 8785 reference vectors (tests/vectors/jcs) and the I-JSON parser's rules (protocol §1,
// docs/protocol.md "JSON numbers"): one test per rejection path, as the C++ core's json_test.
import { describe, expect, test } from 'vitest';
import { MeshError } from '../src/errors.js';
import { utf8Encode } from '../src/bytes.js';
import { MAX_JSON_DEPTH, isIntegerLiteral, parseIJson, type JsonObject, type JsonValue, type ParseOptions } from '../src/ijson.js';
import { canonicalBytes, canonicalize, checkJsonForm, numberToJcs } from '../src/jcs.js';
import { listVectorDir, readVectorText } from './vectors.js';

function rejection(text: string | Uint8Array, options?: ParseOptions): MeshError {
  try {
    parseIJson(text, options);
  } catch (error) {
    if (error instanceof MeshError) return error;
    throw new Error(`not a MeshError: ${String(error)}`);
  }
  throw new Error(`accepted: ${typeof text === 'string' ? text.slice(0, 80) : 'bytes'}`);
}

function expectBadRequest(text: string | Uint8Array, fragment: string): void {
  const error = rejection(text);
  expect(error.code).toBe('bad_request');
  expect(error.message).toContain(fragment);
  expect(error.message.startsWith('JSON: ')).toBe(true);
}

describe('RFC 8785 vectors', () => {
  const names = listVectorDir('jcs/input');

  test('every input canonicalises to its output byte for byte', () => {
    expect(names).toHaveLength(6);
    for (const name of names) {
      const expected = readVectorText(`jcs/output/${name}`);
      const parsed = parseIJson(readVectorText(`jcs/input/${name}`));
      expect(canonicalize(parsed), name).toBe(expected);
      expect(Array.from(canonicalBytes(parsed)), name).toEqual(Array.from(utf8Encode(expected)));
      // The canonical form of anything accepted is itself accepted and canonical.
      expect(canonicalize(parseIJson(expected)), name).toBe(expected);
    }
  });
});

describe('JCS units', () => {
  test('numbers follow ECMAScript Number::toString', () => {
    const cases: [number, string][] = [
      [0, '0'],
      [-0, '0'],
      [1, '1'],
      [-1.5, '-1.5'],
      [1e21, '1e+21'],
      [-1e21, '-1e+21'],
      [1e-7, '1e-7'],
      [0.000001, '0.000001'],
      [333333333.3333333, '333333333.3333333'],
      [5e-324, '5e-324'],
      [1.7976931348623157e308, '1.7976931348623157e+308'],
      [9007199254740991, '9007199254740991'],
    ];
    for (const [value, text] of cases) expect(numberToJcs(value)).toBe(text);
    expect(() => numberToJcs(Number.NaN)).toThrow(MeshError);
    expect(() => numberToJcs(Number.POSITIVE_INFINITY)).toThrow(MeshError);
  });

  test('numbers JCS would write as integers beyond ±(2^53−1) are refused, as the parser refuses them', () => {
    // Number::toString writes these as plain digits ("100000000000000000000"): an integer that
    // every receiver's parser (ours included) refuses, so they have no canonical form here.
    for (const value of [2 ** 53, -(2 ** 53), 2 ** 60, 1e20, -1e20, 999999999999999900000]) {
      expect(() => numberToJcs(value), String(value)).toThrow(expect.objectContaining({ code: 'bad_request' }));
      expect(() => parseIJson(String(value)), String(value)).toThrow(MeshError);
    }
    expect(() => canonicalize({ x: 2 ** 60 })).toThrow(/beyond ±\(2\^53−1\)/);
    // The edges: 2^53 − 1 and 1e21 keep their forms.
    expect(canonicalize([2 ** 53 - 1, -(2 ** 53 - 1), 1e21, 9007199254740990.5])).toBe('[9007199254740991,-9007199254740991,1e+21,9007199254740990]');
  });

  test('parsed doubles are correctly rounded; underflow is zero', () => {
    expect(canonicalize(parseIJson('333333333.33333329'))).toBe('333333333.3333333');
    expect(canonicalize(parseIJson('1.3927926388013963e-143'))).toBe('1.3927926388013963e-143');
    expect(canonicalize(parseIJson('[1e-400,-1e-400]'))).toBe('[0,0]');
  });

  test('minimal escaping with lower-case hex', () => {
    expect(canonicalize('\u0000\u001f\u007f"\\/\b\f\n\r\t\u2028é')).toBe('"\\u0000\\u001f\u007f\\"\\\\/\\b\\f\\n\\r\\t\u2028é"');
    expect(() => canonicalize('\ud800')).toThrow(/lone UTF-16 surrogate/);
  });

  test('no whitespace; members sorted by UTF-16 code units, recursively', () => {
    expect(canonicalize(parseIJson(' { "b" : [ true , false , null ] , "a" : { } } '))).toBe('{"a":{},"b":[true,false,null]}');
    expect(canonicalize(parseIJson('{"\\ufb33":3,"\\ud83d\\ude02":2,"\\u20ac":1}'))).toBe('{"\u20ac":1,"\ud83d\ude02":2,"\ufb33":3}');
    expect(canonicalize({ b: { d: 1, c: 2 }, a: [{ z: 1, y: 2 }] })).toBe('{"a":[{"y":2,"z":1}],"b":{"c":2,"d":1}}');
  });

  test('values with no JSON form are refused', () => {
    expect(() => canonicalize({ f: (() => 1) as unknown as JsonValue })).toThrow(/no JSON form/);
    const cyclic: JsonObject = {};
    cyclic.self = cyclic;
    expect(() => canonicalize(cyclic)).toThrow(MeshError);
  });

  test('only plain objects and arrays have a JSON form (no Date, Map, Set, typed array or class)', () => {
    class Point {
      x = 1;
    }
    class List extends Array<number> {}
    const cases: [string, unknown][] = [
      ['Date', new Date(0)],
      ['Map', new Map([['a', 1]])],
      ['Set', new Set([1])],
      ['Uint8Array', new Uint8Array([1, 2])],
      ['ArrayBuffer', new ArrayBuffer(2)],
      ['Point', new Point()],
      ['List', List.from([1])],
      ['RegExp', /x/],
    ];
    for (const [name, value] of cases) {
      expect(() => canonicalize({ nested: [value as JsonValue] }), name).toThrow(expect.objectContaining({ code: 'bad_request' }));
      expect(() => canonicalize(value as JsonValue), name).toThrow(new RegExp(`${name} has no JSON form`));
    }
    // Object.create(null) and parsed values are plain.
    const bare = Object.create(null) as JsonObject;
    bare.a = 1;
    expect(canonicalize({ bare, parsed: parseIJson('{"b":[1]}') })).toBe('{"bare":{"a":1},"parsed":{"b":[1]}}');
  });

  test('checkJsonForm refuses exactly what canonicalize refuses, with the same message', () => {
    const cyclic: JsonObject = {};
    cyclic.self = cyclic;
    const values: unknown[] = [
      { a: [1, 'x', null, true, { b: 2.5 }] },
      { x: 2 ** 60 },
      '\ud800',
      { '\udc00': 1 },
      { z: 1, a: new Date(0) },
      [1, new Map()],
      [1, undefined],
      { f: () => 1 },
      cyclic,
      Number.NaN,
      parseIJson('{"\\ufb33":3,"b":[{"c":-0}]}'),
    ];
    for (const value of values) {
      let expected: string | undefined;
      try {
        canonicalize(value as JsonValue);
      } catch (error) {
        expected = (error as Error).message;
      }
      if (expected === undefined) expect(() => checkJsonForm(value as JsonValue)).not.toThrow();
      else expect(() => checkJsonForm(value as JsonValue)).toThrow(expected);
    }
  });

  test('a member named __proto__ is an ordinary member', () => {
    const value = parseIJson('{"__proto__":{"x":1},"a":2}') as JsonObject;
    expect(Object.getPrototypeOf(value)).toBe(Object.prototype);
    expect(canonicalize(value)).toBe('{"__proto__":{"x":1},"a":2}');
    expectBadRequest('{"__proto__":1,"__proto__":2}', 'duplicate member "__proto__"');
  });
});

describe('I-JSON acceptance', () => {
  test('safe integers, and whether a number was written as an integer', () => {
    const value = parseIJson('{"max":9007199254740991,"min":-9007199254740991,"z":-0,"f":1.0,"e":1e2,"s":"1","a":[1,1.5,2e0]}') as JsonObject;
    expect(value.max).toBe(9007199254740991);
    expect(isIntegerLiteral(value, 'max')).toBe(true);
    expect(isIntegerLiteral(value, 'min')).toBe(true);
    expect(isIntegerLiteral(value, 'z')).toBe(true);
    expect(isIntegerLiteral(value, 'f')).toBe(false);
    expect(isIntegerLiteral(value, 'e')).toBe(false);
    expect(isIntegerLiteral(value, 's')).toBe(false);
    expect(isIntegerLiteral(value, 'missing')).toBe(false);
    const array = value.a as JsonValue[];
    expect([0, 1, 2].map((i) => isIntegerLiteral(array, i))).toEqual([true, false, false]);
    // Values built in code have no written form: any safe integer counts.
    expect(isIntegerLiteral({ n: 5 }, 'n')).toBe(true);
    expect(isIntegerLiteral({ n: 2 ** 53 }, 'n')).toBe(false);
    // A member replaced after parsing is judged by its new value.
    const replaced = parseIJson('{"n":1.0}') as JsonObject;
    replaced.n = 2;
    expect(isIntegerLiteral(replaced, 'n')).toBe(true);
  });

  test('fraction or exponent makes a double; big ones print in exponent form', () => {
    expect(canonicalize(parseIJson('[1e21,-1.5e300,9007199254740991.0]'))).toBe('[1e+21,-1.5e+300,9007199254740991]');
  });

  test('surrogate pairs, escapes, whitespace, same key in different objects', () => {
    expect(parseIJson('"\\ud83d\\ude02"')).toBe('😂');
    expect(parseIJson('"\\uD83D\\uDE02"')).toBe('😂');
    expect(parseIJson('"\\\\ud800"')).toBe('\\ud800');
    expect(parseIJson('"😂"')).toBe('😂');
    expect(parseIJson(' \t\r\n[1] \n')).toEqual([1]);
    expect(parseIJson('{"a":{"a":1},"b":[{"a":2},{"a":3}]}')).toEqual({ a: { a: 1 }, b: [{ a: 2 }, { a: 3 }] });
  });

  test('bounds: input at the size and depth bounds is accepted', () => {
    expect(parseIJson('[1]', { maxBytes: 3 })).toEqual([1]);
    expect(parseIJson('"é"', { maxBytes: 4 })).toBe('é');
    const depth = MAX_JSON_DEPTH;
    expect(() => parseIJson('['.repeat(depth) + ']'.repeat(depth))).not.toThrow();
  });

  test('UTF-8 bytes are decoded strictly', () => {
    expect(parseIJson(utf8Encode('{"a":"é"}'))).toEqual({ a: 'é' });
  });
});

describe('I-JSON rejections', () => {
  test('over the size bound is too_large (counted in UTF-8 bytes)', () => {
    const error = rejection('[1, 2]', { maxBytes: 5 });
    expect(error.code).toBe('too_large');
    expect(error.message).toBe('JSON text of 6 bytes exceeds the limit of 5 bytes');
    expect(rejection('"é"', { maxBytes: 3 }).code).toBe('too_large');
    expect(rejection(new Uint8Array(6), { maxBytes: 5 }).code).toBe('too_large');
    expect(rejection('x'.repeat(2 * 1024 * 1024)).code).toBe('too_large');
  });

  test('nesting over the depth bound', () => {
    const depth = MAX_JSON_DEPTH + 1;
    expectBadRequest('['.repeat(depth) + ']'.repeat(depth), 'nesting deeper than 64');
    const error = rejection('{"a":{"b":[1]}}', { maxDepth: 2 });
    expect(error.message).toContain('nesting deeper than 2');
    // Far deeper input fails the same way, without exhausting the stack.
    expectBadRequest('['.repeat(100000), 'nesting deeper than 64');
  });

  test('duplicate member names, however written, named in the message', () => {
    expectBadRequest('{"id":1,"x":2,"id":3}', 'JSON: duplicate member "id"');
    expectBadRequest('{"a":1,"\\u0061":2}', 'duplicate member "a"');
    expectBadRequest('[1,[2,[{"ok":true},[{"k":1,"v":{"sig":"x","n":1,"sig":"y"}}]]]]', 'duplicate member "sig"');
    let big = '{';
    for (let i = 0; i < 500; i++) big += `"k${i}":${i},`;
    expectBadRequest(`${big}"k250":0}`, 'duplicate member "k250"');
  });

  test('hostile member names are escaped and clipped in messages', () => {
    const key = `\\n${'x'.repeat(1000)}`;
    const error = rejection(`{"${key}":1,"${key}":2}`);
    expect(error.message).toContain('duplicate member "\\nxxxx');
    expect(error.message.length).toBeLessThan(200);
    expect(error.message).not.toContain('\n');
    const pairs = `x${'😂'.repeat(40)}`;
    const cut = rejection(`{"${pairs}":1,"${pairs}":2}`);
    expect(cut.message).toContain('..."');
    expect(() => utf8Encode(cut.message)).not.toThrow(); // no half surrogate pair
  });

  test('lone surrogates, escaped or raw', () => {
    expectBadRequest('["\\ud800"]', 'lone UTF-16 surrogate');
    expectBadRequest('["\\uDBFFx"]', 'lone UTF-16 surrogate');
    expectBadRequest('{"\\ud800":1}', 'lone UTF-16 surrogate');
    expectBadRequest('"\\ud800', 'unexpected end of input');
    expectBadRequest('["\\udc00"]', 'lone UTF-16 surrogate');
    expectBadRequest('["\\uDFFF tail"]', 'lone UTF-16 surrogate');
    expectBadRequest('["\\ud800\\u0041"]', 'lone UTF-16 surrogate');
    expectBadRequest('["\\ud800\\n"]', 'lone UTF-16 surrogate');
    expectBadRequest('["\\ud800\\ud800"]', 'lone UTF-16 surrogate');
    expectBadRequest('["\ud800"]', 'lone UTF-16 surrogate');
    expectBadRequest('["\udc00x"]', 'lone UTF-16 surrogate');
    expectBadRequest('["\\ud83d\ude02"]', 'lone UTF-16 surrogate'); // escape + raw half
  });

  test('integers outside ±(2^53−1), however long', () => {
    expectBadRequest('9007199254740992', 'integer "9007199254740992" at offset 0 is outside');
    expectBadRequest('{"n":9007199254740992}', 'integer "9007199254740992" at offset 5');
    expectBadRequest('-9007199254740992', 'integer "-9007199254740992"');
    expectBadRequest('[-9223372036854775808]', 'integer "-9223372036854775808"');
    expectBadRequest('18446744073709551616', 'integer "18446744073709551616"');
    expectBadRequest('9'.repeat(5000), 'is outside the I-JSON safe range');
  });

  test('numbers that overflow a double', () => {
    expectBadRequest('1e400', 'number "1e400" at offset 0 does not fit a double');
    expectBadRequest('[-1e400]', 'number "-1e400" at offset 1 does not fit a double');
    expectBadRequest('1.7976931348623159e308', 'does not fit a double');
  });

  test('doubles whose canonical form is an unsafe integer', () => {
    expectBadRequest('1e20', 'number "1e20" at offset 0 is an integer outside the I-JSON safe range');
    expectBadRequest('[-9007199254740992.0]', 'is an integer outside the I-JSON safe range');
    expectBadRequest('73337333733333333.30', 'in canonical (JCS) form');
    expectBadRequest('9.999999999999999e20', 'in canonical (JCS) form');
    expect(canonicalize(parseIJson('999999999999999999999.0'))).toBe('1e+21');
  });

  test('grammar: trailing content, empty, truncated, literals, leading zeros, extensions, controls', () => {
    expectBadRequest('{}x', 'unexpected content after the value at offset 2');
    expectBadRequest('{} {}', 'unexpected content after the value at offset 3');
    expectBadRequest('1 2', 'unexpected content after the value');
    expectBadRequest('', 'JSON: empty input');
    expectBadRequest('  \n', 'JSON: empty input');
    expectBadRequest('{"a":[1,2', 'unexpected end of input');
    expectBadRequest('NaN', 'syntax error');
    expectBadRequest('[Infinity]', 'syntax error');
    expectBadRequest('-Infinity', 'syntax error');
    expectBadRequest('01', 'number with a leading zero at offset 0');
    expectBadRequest('[-01]', 'number with a leading zero at offset 1');
    expectBadRequest('{"n":00}', 'number with a leading zero');
    expectBadRequest('[1,]', 'syntax error');
    expectBadRequest('{"a":1,}', 'syntax error');
    expectBadRequest('/* c */ 1', 'syntax error');
    expectBadRequest("'a'", 'syntax error');
    expectBadRequest('"a\u0001"', 'unescaped control character at offset 2');
    expectBadRequest('\ufeff{}', 'syntax error'); // a byte-order mark is not JSON
    expectBadRequest('1.', 'unexpected end of input');
    expectBadRequest('1.e5', 'syntax error');
    expectBadRequest('1e', 'unexpected end of input');
    expectBadRequest('-', 'unexpected end of input');
    expectBadRequest('"\\x"', 'invalid escape');
    expectBadRequest('"\\u12g4"', 'invalid \\u escape');
  });

  test('invalid UTF-8 bytes', () => {
    for (const bad of [[0x22, 0xff, 0x22], [0x22, 0xc0, 0xaf, 0x22], [0x22, 0xed, 0xa0, 0x80, 0x22], [0x22, 0xe2, 0x82, 0x22]]) {
      expectBadRequest(new Uint8Array(bad), 'invalid UTF-8');
    }
  });

  test('every error is bad_request with the JSON prefix', () => {
    for (const text of ['{', '[1', 'tru', '"\\x"', '{"a" 1}', '{1:2}', 'nul', 'falsy', '[1 2]', '{"a":1 "b":2}']) {
      const error = rejection(text);
      expect(error.code, text).toBe('bad_request');
      expect(error.message.startsWith('JSON: '), error.message).toBe(true);
    }
  });
});
