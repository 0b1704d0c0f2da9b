// The browser UI: `npm run build` in web/ writes web/app/dist, which agent-mesh-server serves at /
// under a strict Content-Security-Policy (no inline script or style, this origin only), so the
// build must emit nothing inline: module scripts and CSS files only, no module-preload polyfill.
import { fileURLToPath } from 'node:url';
import react from '@vitejs/plugin-react';
import { defineConfig } from 'vite';

const root = fileURLToPath(new URL('.', import.meta.url));

export default defineConfig({
  root,
  base: '/',
  plugins: [react()],
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    target: 'es2022',
    sourcemap: false,
    modulePreload: { polyfill: false },
    // Small assets would become data: URLs; keep them hashed files (the CSP allows no data: URLs).
    assetsInlineLimit: 0,
    reportCompressedSize: false,
  },
  server: {
    // `npx vite --config app/vite.config.ts` against a running agent-mesh-server on :8080.
    proxy: {
      '/api': 'http://127.0.0.1:8080',
      '/relay': { target: 'ws://127.0.0.1:8080', ws: true },
    },
  },
});
