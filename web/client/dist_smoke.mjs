// The built library (client/dist, `npm run build:client`) loads in plain Node without a TypeScript
// loader and works: an identity, a signed envelope that verifies, a tampered one that does not, and a
// MeshClient built (its link fails to connect here, on purpose). Run by ctest `web_client_dist`.
import assert from 'node:assert/strict';

const client = await import('./dist/index.js');
const { signEnvelope, verifyEnvelope, envelopeToObject } = await import('./dist/envelope.js');
const { newUuidV4 } = await import('./dist/uuid.js');

const alice = client.Identity.generate();
const bob = client.Identity.generate();
assert.ok(client.isValidAgentId(alice.agentId));

const envelope = signEnvelope(
  { id: newUuidV4(), from: alice.agentId, to: bob.agentId, msg_type: 'request', timestamp: Date.now(),
    payload: { capability: 'echo', body: { message: 'hi' } } },
  alice,
);
const object = envelopeToObject(envelope);
assert.equal(verifyEnvelope(object), true);
assert.equal(verifyEnvelope({ ...object, timestamp: object.timestamp + 1 }), false);

assert.ok(new client.MeshClient(alice, { relayUrl: 'ws://127.0.0.1:9/relay/ws', WebSocket: class {
  constructor() { throw new Error('no network in this check'); }
} }));
console.log('client/dist loads and works in plain Node');
process.exit(0);
