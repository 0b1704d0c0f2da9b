// Loads the published and agent-mesh test vectors from the repository's tests/vectors/ (trusted
// data: plain JSON.parse is enough here). Each test file counts the cases it checks through
// `countVectors`, and vector_count.test.ts prints the total.
import { readFileSync, readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

import { hexToBytes } from '../src/bytes.js';
import { Identity } from '../src/identity.js';

export const VECTORS_DIR = fileURLToPath(new URL('../../../tests/vectors/', import.meta.url));

export function readVectorText(relativePath: string): string {
  return readFileSync(VECTORS_DIR + relativePath, 'utf8');
}

export function readVectorBytes(relativePath: string): Uint8Array {
  return new Uint8Array(readFileSync(VECTORS_DIR + relativePath));
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export function loadVectors(relativePath: string): any {
  return JSON.parse(readVectorText(relativePath));
}

export function listVectorDir(relativePath: string): string[] {
  return readdirSync(VECTORS_DIR + relativePath).sort();
}

let vectorKeys: { identities: { name: string; agent_id: string; seed_hex: string }[] } | undefined;

/** The Identity of a keys.json agent, found by its `name` (alice, bob, carol) or `agent_id`. */
function vectorIdentity(field: 'name' | 'agent_id', value: string): Identity {
  vectorKeys ??= loadVectors('agent-mesh/keys.json');
  const entry = vectorKeys!.identities.find((i) => i[field] === value);
  if (entry === undefined) throw new Error(`no seed for ${field} ${value} in keys.json`);
  return Identity.fromSeed(hexToBytes(entry.seed_hex));
}

/** The Identity of a keys.json agent by name (alice, bob, carol). */
export const identityNamed = (name: string): Identity => vectorIdentity('name', name);
/** The Identity of a keys.json agent ID (alice, bob, carol, rfc8032_test1). */
export const identityOf = (agentId: string): Identity => vectorIdentity('agent_id', agentId);
