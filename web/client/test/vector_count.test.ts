// How many published and agent-mesh vectors the foundation tests check (each test file asserts its
// own counts; this sums them from the files so the total in reports can be reproduced). The Noise
// files (ik-handshake.json, the cacophony vectors) are counted by the Noise tests.
import { expect, test } from 'vitest';
import { listVectorDir, loadVectors } from './vectors.js';

test('vectors checked by the foundation tests', () => {
  const count = (file: string, f: (v: any) => number) => [file, f(loadVectors(file))] as const; // eslint-disable-line @typescript-eslint/no-explicit-any
  const rows = [
    count('wycheproof-ed25519_test.json', (v) => v.numberOfTests),
    count('wycheproof-x25519_test.json', (v) => v.numberOfTests),
    count('wycheproof-chacha20_poly1305_test.json', (v) => v.numberOfTests),
    ['jcs/input/*.json', listVectorDir('jcs/input').length] as const,
    count('agent-mesh/keys.json', (v) =>
      v.identities.length + v.static_dh.length + v.secret_key_files.valid.length + v.secret_key_files.invalid.length),
    count('agent-mesh/base64url.json', (v) => v.valid.length + v.invalid.length),
    count('agent-mesh/auth.json', (v) =>
      v.cases.length + v.rejected_signatures.length + v.relay_id_comparison.length +
      v.http_signatures.cases.length + v.http_signatures.rejected.length),
    count('agent-mesh/envelope.json', (v) =>
      v.valid.length + v.invalid.length + v.capability_names.valid.length + v.capability_names.invalid.length +
      v.uuids.valid.length + v.uuids.invalid.length + v.bodies.length),
    count('agent-mesh/relay-frames.json', (v) =>
      Object.keys(v.frames).length + v.close_codes.length + v.hello_cases.length + v.malformed_control_frames.length),
    count('agent-mesh/ed25519-edge-cases.json', (v) => v.verify.length + v.agent_ids.length),
    count('agent-mesh/revocation-rotation.json', (v) =>
      v.revocations.valid.length + v.revocations.invalid.length + v.rotations.valid.length + v.rotations.invalid.length),
  ];
  const total = rows.reduce((sum, [, n]) => sum + n, 0);
  console.log([...rows.map(([file, n]) => `${String(n).padStart(5)}  ${file}`), `${String(total).padStart(5)}  total`].join('\n'));
  expect(total).toBe(1292);
});
