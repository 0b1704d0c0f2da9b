import { defineConfig } from 'vitest/config';

// The web UI's unit tests (app/test/*.test.ts): the controller's logic in Node, against a scripted
// registry, fake agents and, for the incoming-chat paths, a real MeshAgent on the client's FakeRelay.
// Run from web/: `npm run test:app` (ctest web_app_unit).
export default defineConfig({
  test: {
    include: ['app/test/**/*.test.ts'],
    testTimeout: 20_000,
    hookTimeout: 30_000,
    pool: 'forks',
  },
});
