// The MeshError a call throws (or a promise rejects with); fails the test when it is anything else
// or nothing.
import { MeshError } from '../src/errors.js';

export function thrown(f: () => unknown): MeshError {
  try {
    f();
  } catch (error) {
    if (error instanceof MeshError) return error;
    throw new Error(`threw something other than MeshError: ${String(error)}`);
  }
  throw new Error('did not throw');
}

export async function rejection(promise: Promise<unknown>): Promise<MeshError> {
  try {
    await promise;
  } catch (error) {
    if (error instanceof MeshError) return error;
    throw new Error(`rejected with something other than MeshError: ${String(error)}`);
  }
  throw new Error('expected a rejection');
}
