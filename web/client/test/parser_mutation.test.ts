// The TypeScript side's counterpart of the libFuzzer targets: every parser that reads untrusted text
// gets the vectors' inputs mutated many times over (bytes flipped, inserted, deleted, spliced,
// truncated, duplicated) and must either accept or throw a MeshError — never a TypeError, a
// RangeError, a stack overflow or a hang. Seeded, so a failure names the seed and input that reproduce
// it. MESH_MUTATION_ITERATIONS raises the count (scripts/test-long runs it longer).
import { describe, expect, test } from 'vitest';

import { decodeBase64url } from '../src/base64url.js';
import { parseBody } from '../src/bodies.js';
import { utf8Decode } from '../src/bytes.js';
import { parseEnvelope } from '../src/envelope.js';
import { MeshError } from '../src/errors.js';
import { parseClientFrame, parseRelayFrame } from '../src/frames.js';
import { Identity } from '../src/identity.js';
import { parseIJson } from '../src/ijson.js';
import type { JsonValue } from '../src/ijson.js';
import { parseRevocation, parseRotation, verifyCard } from '../src/signed_objects.js';
import { listVectorDir, loadVectors, readVectorText } from './vectors.js';

const ITERATIONS = Number(process.env.MESH_MUTATION_ITERATIONS ?? 1500);
const SEED = Number(process.env.MESH_MUTATION_SEED ?? 0x5eed);

// xorshift32: small, fast and reproducible across runs and machines.
function random(seed: number): () => number {
  let state = seed >>> 0 || 1;
  return () => {
    state ^= state << 13;
    state >>>= 0;
    state ^= state >>> 17;
    state ^= state << 5;
    state >>>= 0;
    return state;
  };
}

// Tokens that steer mutations towards the parsers' interesting corners.
const DICTIONARY = [
  '"', '\\', '\\u', '\\ud800', '\\udc00', '{', '}', '[', ']', ':', ',', '-', '1e400', '9007199254740993',
  '-0', '0.0', 'null', 'true', '"msg_type"', '"type"', '"payload"', '"signature"', '"encrypted":true',
  '"n":', '"sid":', '=', '\u0000', '\u00ff', '\ud83d\ude00', '[[[[[[[[[[[[', '{"a":1,"a":2}',
];

function mutate(input: string, next: () => number): string {
  let text = input;
  const rounds = 1 + (next() % 4);
  for (let r = 0; r < rounds; r++) {
    const at = text.length === 0 ? 0 : next() % (text.length + 1);
    switch (next() % 7) {
      case 0: // replace one character with any code unit (lone surrogates included)
        text = text.slice(0, at) + String.fromCharCode(next() % 0x10000) + text.slice(at + 1);
        break;
      case 1: // insert a dictionary token
        text = text.slice(0, at) + DICTIONARY[next() % DICTIONARY.length] + text.slice(at);
        break;
      case 2: // delete a run
        text = text.slice(0, at) + text.slice(at + 1 + (next() % 16));
        break;
      case 3: // truncate
        text = text.slice(0, at);
        break;
      case 4: { // duplicate a run (duplicate members, repeated nesting)
        const length = next() % 64;
        text = text.slice(0, at) + text.slice(at, at + length) + text.slice(at);
        break;
      }
      case 5: // flip an ASCII character's case or low bit
        if (at < text.length) text = text.slice(0, at) + String.fromCharCode(text.charCodeAt(at) ^ (1 << (next() % 6))) + text.slice(at + 1);
        break;
      default: { // splice in the tail of itself at another place
        const from = text.length === 0 ? 0 : next() % text.length;
        text = text.slice(0, at) + text.slice(from);
        break;
      }
    }
  }
  return text;
}

function corpus(): Record<string, string[]> {
  const envelopes = loadVectors('agent-mesh/envelope.json');
  const frames = loadVectors('agent-mesh/relay-frames.json');
  const keys = loadVectors('agent-mesh/keys.json');
  const lifecycle = loadVectors('agent-mesh/revocation-rotation.json');
  const texts = (items: JsonValue[]) => items.map((item) => (typeof item === 'string' ? item : JSON.stringify(item)));
  const envelopeTexts: string[] = [
    ...envelopes.valid.map((v: { envelope?: JsonValue; received_text?: string }) => v.received_text ?? JSON.stringify(v.envelope)),
    ...envelopes.invalid.map((v: { received_text: string }) => v.received_text),
  ];
  const frameTexts: string[] = [
    ...Object.values(frames.frames as Record<string, JsonValue>).map((f) => JSON.stringify(f)),
    ...frames.malformed_control_frames.map((f: { text: string }) => f.text),
    ...frames.hello_cases.map((c: { hello: JsonValue }) => (typeof c.hello === 'string' ? c.hello : JSON.stringify(c.hello))),
  ];
  const jcsInputs = listVectorDir('jcs/input').map((name) => readVectorText(`jcs/input/${name}`));
  return {
    json: [...jcsInputs, ...envelopeTexts],
    envelope: envelopeTexts,
    frame: frameTexts,
    body: envelopes.bodies.map((b: { text: string }) => b.text),
    keyFile: [
      ...keys.secret_key_files.valid.map((k: { file_text: string }) => k.file_text),
      ...keys.secret_key_files.invalid.map((k: { file_text: string }) => k.file_text),
    ],
    base64url: loadVectors('agent-mesh/base64url.json').valid.map((v: { text: string }) => v.text),
    lifecycle: texts([
      ...lifecycle.revocations.valid.map((v: { object: JsonValue }) => v.object),
      ...lifecycle.rotations.valid.map((v: { object: JsonValue }) => v.object),
    ]),
  };
}

const RECEIVER = (() => {
  const envelopes = loadVectors('agent-mesh/envelope.json');
  return envelopes.valid[0].receiver as string;
})();

const PARSERS: Record<string, [keyof ReturnType<typeof corpus>, (text: string) => unknown]> = {
  parseIJson: ['json', (text) => parseIJson(text, { maxBytes: 64 * 1024 })],
  parseEnvelope: ['envelope', (text) => parseEnvelope(text, RECEIVER)],
  parseRelayFrame: ['frame', (text) => parseRelayFrame(text)],
  parseClientFrame: ['frame', (text) => parseClientFrame(text)],
  parseBody: ['body', (text) => parseBody('request', parseIJson(text))],
  'Identity.fromKeyFileText': ['keyFile', (text) => Identity.fromKeyFileText(text)],
  decodeBase64url: ['base64url', (text) => decodeBase64url(text)],
  parseRevocation: ['lifecycle', (text) => parseRevocation(text)],
  parseRotation: ['lifecycle', (text) => parseRotation(text)],
  verifyCard: ['json', (text) => verifyCard(text)],
  'parseIJson(bytes)': ['json', (text) => parseIJson(new TextEncoder().encode(text).map((b, i) => (i % 97 === 13 ? b ^ 0x80 : b)))],
};

describe('every parser accepts or throws MeshError on mutated vectors', () => {
  const inputs = corpus();
  for (const [name, [kind, parse]] of Object.entries(PARSERS)) {
    test(`${name}: ${ITERATIONS} mutations`, () => {
      const seeds = inputs[kind] ?? [];
      expect(seeds.length).toBeGreaterThan(0);
      const next = random(SEED ^ name.length);
      let rejected = 0;
      for (let i = 0; i < ITERATIONS; i++) {
        const input = mutate(seeds[i % seeds.length]!, next);
        try {
          parse(input);
        } catch (error) {
          if (!(error instanceof MeshError)) {
            throw new Error(`${name} threw ${String(error)} (seed ${SEED}, iteration ${i}) on ${JSON.stringify(input).slice(0, 400)}`);
          }
          expect(error.message.length).toBeGreaterThan(0);
          rejected++;
        }
      }
      // Mutations break most inputs: a parser accepting nearly everything is not checking.
      expect(rejected).toBeGreaterThan(ITERATIONS / 10);
    });
  }

  test('deep nesting and huge inputs are refused by bound, not by the stack', () => {
    for (const text of ['['.repeat(100_000), '{"a":'.repeat(50_000), `"${'x'.repeat(2 * 1024 * 1024)}"`]) {
      expect(() => parseIJson(text)).toThrow(MeshError);
      expect(() => parseEnvelope(text, RECEIVER)).toThrow(MeshError);
      expect(() => parseRelayFrame(text)).toThrow(MeshError);
    }
    expect(() => utf8Decode(new Uint8Array([0xc0, 0x80]))).toThrow(MeshError);
  });
});
