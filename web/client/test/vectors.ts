// Loads the published and agent-mesh test vectors from the repository's tests/vectors/ (trusted
// data: plain JSON.parse is enough here). Each test file counts the cases it checks through
// `countVectors`, and vector_count.test.ts prints the total.
import { readFileSync, readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

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
