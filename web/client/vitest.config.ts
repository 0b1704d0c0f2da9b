import { defineConfig } from 'vitest/config';

// The client's tests: vectors and units (client/test/*.test.ts), interop through the real C++
// binaries (client/interop/*.test.ts, which need the CMake build in ../build).
export default defineConfig({
  test: {
    include: ['client/test/**/*.test.ts', 'client/interop/**/*.test.ts'],
    testTimeout: 20_000,
    hookTimeout: 30_000,
    pool: 'forks',
  },
});
