#!/usr/bin/env node
// A local stand-in for GitHub's OAuth device flow (RFC 8628 as GitHub speaks it) and its
// `GET /user`, for tests of the registry's login. Node 20, node:http/https only, no npm packages.
//
//   node tests/support/github-standin.mjs [flags]
//
// The first line on stdout is `listening http://127.0.0.1:<port>` (`https://` with --tls-cert),
// so tests can start it on port 0 and read the port. Nothing else is written to stdout.
//
// Flags (all optional):
//   --port <n>              port to listen on (default 0: ephemeral); always 127.0.0.1
//   --client-id <id>        the OAuth app's client ID (default `standin-client-id`)
//   --client-secret <s>     its client secret (default `standin-client-secret`); the token
//                           endpoint requires it (GitHub accepts it there but does not need it;
//                           the registry always sends it, so the stand-in checks it)
//   --interval-ms <n>       minimum time between polls of one device code, in milliseconds
//                           (default 5000, GitHub's 5 s). The wire field `interval` stays in seconds
//                           as GitHub sends it, so 50 ms is sent as `"interval": 0.05` and 0 as
//                           `0` (GitHub itself only ever sends whole seconds)
//   --expires-s <n>         lifetime of a device code in seconds, fractions allowed (default 900)
//   --error-status <n>      HTTP status of device-flow error answers (default 200, which is what
//                           GitHub sends; 400 is what RFC 8628 §3.5 asks for)
//   --tls-cert <pem> --tls-key <pem>   serve HTTPS instead of HTTP
//
// Endpoints, as on github.com / api.github.com:
//   POST /login/device/code          client_id, scope → {device_code, user_code,
//                                    verification_uri, expires_in, interval}
//   POST /login/oauth/access_token   client_id, client_secret, device_code, grant_type =
//                                    urn:ietf:params:oauth:grant-type:device_code →
//                                    {access_token, token_type: "bearer", scope} or {error,
//                                    error_description, error_uri} with error one of
//                                    authorization_pending, slow_down (+ the new `interval`: the
//                                    old one + 5 s, kept for later polls), expired_token,
//                                    access_denied, incorrect_client_credentials,
//                                    incorrect_device_code, unsupported_grant_type
//   GET  /user                       Authorization: Bearer <token> (or `token <token>`) →
//                                    {login, id, node_id, type, ...}; 401 "Bad credentials"
// Bodies may be form-encoded or JSON; answers are JSON when Accept names application/json and
// form-encoded otherwise (GitHub's default). A poll sooner than the interval after the previous
// poll of the same device code is answered slow_down (the first poll is never early). An issued
// token ends its device code (later polls: incorrect_device_code).
//
// Test control (the person at the browser), JSON bodies, JSON answers, 404 for an unknown code:
//   POST /_control/approve {user_code, login, id}   the user approves as GitHub user id/login
//   POST /_control/deny    {user_code}              the user clicks cancel
//   POST /_control/expire  {user_code}              the code expires now (no waiting in tests)
// And for tests of HTTP clients:
//   ANY  /_control/echo         → {method, url, headers, body, sni}
//   GET  /_control/bytes?n=N    → N bytes of "x", chunked (no Content-Length)
//   ANY  /_control/status?code=N → status N with an empty JSON object
//   ANY  /_control/hang         → never answers
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';

const DEVICE_GRANT = 'urn:ietf:params:oauth:grant-type:device_code';
const MAX_BODY_BYTES = 64 * 1024;
const USER_CODE_ALPHABET = 'BCDFGHJKLMNPQRSTVWXZ'; // no vowels, no look-alikes (RFC 8628 §6.1)

function parseFlags(argv) {
  const flags = {
    port: 0,
    clientId: 'standin-client-id',
    clientSecret: 'standin-client-secret',
    intervalMs: 5000,
    expiresS: 900,
    errorStatus: 200,
    tlsCert: '',
    tlsKey: '',
  };
  const names = {
    '--port': ['port', Number],
    '--client-id': ['clientId', String],
    '--client-secret': ['clientSecret', String],
    '--interval-ms': ['intervalMs', Number],
    '--expires-s': ['expiresS', Number],
    '--error-status': ['errorStatus', Number],
    '--tls-cert': ['tlsCert', String],
    '--tls-key': ['tlsKey', String],
  };
  for (let i = 0; i < argv.length; i += 2) {
    const spec = names[argv[i]];
    if (!spec || i + 1 >= argv.length) {
      process.stderr.write(`github-standin: unknown flag or missing value: ${argv[i]}\n`);
      process.exit(2);
    }
    const value = spec[1](argv[i + 1]);
    if (spec[1] === Number && !(Number.isFinite(value) && value >= 0)) {
      process.stderr.write(`github-standin: ${argv[i]} must be a number >= 0\n`);
      process.exit(2);
    }
    flags[spec[0]] = value;
  }
  if (Boolean(flags.tlsCert) !== Boolean(flags.tlsKey)) {
    process.stderr.write('github-standin: --tls-cert and --tls-key go together\n');
    process.exit(2);
  }
  return flags;
}

const flags = parseFlags(process.argv.slice(2));
const scheme = flags.tlsCert ? 'https' : 'http';

// device_code → {userCode, clientId, scope, expiresAt, intervalMs, lastPollAt, state, user}
const devices = new Map();
const byUserCode = new Map(); // user_code → device_code
const tokens = new Map(); // access_token → {id, login}

function userCode() {
  const bytes = randomBytes(8);
  const chars = [...bytes].map((b) => USER_CODE_ALPHABET[b % USER_CODE_ALPHABET.length]);
  return `${chars.slice(0, 4).join('')}-${chars.slice(4).join('')}`;
}

function wantsJson(req) {
  return (req.headers.accept || '').toLowerCase().includes('application/json');
}

function send(res, status, body, headers = {}) {
  res.writeHead(status, { 'content-length': Buffer.byteLength(body), ...headers });
  res.end(body);
}

function sendJson(res, status, value) {
  send(res, status, JSON.stringify(value), { 'content-type': 'application/json; charset=utf-8' });
}

// OAuth endpoints answer like GitHub: JSON when asked for, form-encoded otherwise.
function sendOauth(req, res, status, value) {
  if (wantsJson(req)) return sendJson(res, status, value);
  const form = new URLSearchParams(Object.entries(value).map(([k, v]) => [k, String(v)])).toString();
  send(res, status, form, { 'content-type': 'application/x-www-form-urlencoded; charset=utf-8' });
}

const DESCRIPTIONS = {
  authorization_pending: 'The authorization request is still pending.',
  slow_down: 'Too many requests have been made in the same timeframe.',
  expired_token: 'The device_code has expired.',
  access_denied: 'The authorization request was denied.',
  incorrect_client_credentials: 'The client_id and/or client_secret passed are incorrect.',
  incorrect_device_code: 'The device_code provided is not valid.',
  unsupported_grant_type: 'The grant type is not supported.',
};

function oauthError(req, res, error, extra = {}) {
  sendOauth(req, res, flags.errorStatus, {
    error,
    error_description: DESCRIPTIONS[error] || error,
    error_uri: 'https://docs.github.com/developers/apps/authorizing-oauth-apps#error-codes-for-the-device-flow',
    ...extra,
  });
}

// Reads a bounded body and parses it as JSON or a form by Content-Type.
function readParams(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on('data', (chunk) => {
      size += chunk.length;
      if (size > MAX_BODY_BYTES) {
        reject(new Error('body too large'));
        req.destroy();
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => {
      const text = Buffer.concat(chunks).toString('utf8');
      const type = (req.headers['content-type'] || '').toLowerCase();
      try {
        if (type.startsWith('application/json')) {
          const value = text ? JSON.parse(text) : {};
          resolve({ text, params: value && typeof value === 'object' ? value : {} });
        } else {
          resolve({ text, params: Object.fromEntries(new URLSearchParams(text)) });
        }
      } catch {
        reject(new Error('body is not valid JSON'));
      }
    });
    req.on('error', reject);
  });
}

function deviceCode(req, res, params) {
  if (params.client_id !== flags.clientId) return oauthError(req, res, 'incorrect_client_credentials');
  if (params.client_secret !== undefined && params.client_secret !== flags.clientSecret)
    return oauthError(req, res, 'incorrect_client_credentials');
  const code = randomBytes(20).toString('hex'); // 40 characters, as GitHub's
  let user = userCode();
  while (byUserCode.has(user)) user = userCode();
  devices.set(code, {
    userCode: user,
    scope: typeof params.scope === 'string' ? params.scope : '',
    expiresAt: Date.now() + flags.expiresS * 1000,
    intervalMs: flags.intervalMs,
    lastPollAt: null,
    state: 'pending',
    user: null,
  });
  byUserCode.set(user, code);
  sendOauth(req, res, 200, {
    device_code: code,
    user_code: user,
    verification_uri: `${scheme}://127.0.0.1:${server.address().port}/login/device`,
    expires_in: flags.expiresS,
    interval: flags.intervalMs / 1000,
  });
}

function accessToken(req, res, params) {
  if (params.client_id !== flags.clientId || params.client_secret !== flags.clientSecret)
    return oauthError(req, res, 'incorrect_client_credentials');
  if (params.grant_type !== DEVICE_GRANT) return oauthError(req, res, 'unsupported_grant_type');
  const device = devices.get(params.device_code);
  if (!device || device.state === 'used') return oauthError(req, res, 'incorrect_device_code');
  const now = Date.now();
  if (now >= device.expiresAt) return oauthError(req, res, 'expired_token');
  const early = device.lastPollAt !== null && now - device.lastPollAt < device.intervalMs;
  device.lastPollAt = now;
  if (early) {
    device.intervalMs += 5000; // RFC 8628 §3.5: for this and all later requests
    return oauthError(req, res, 'slow_down', { interval: device.intervalMs / 1000 });
  }
  if (device.state === 'denied') return oauthError(req, res, 'access_denied');
  if (device.state !== 'approved') return oauthError(req, res, 'authorization_pending');
  device.state = 'used';
  const token = `gho_${randomBytes(18).toString('base64url')}`;
  tokens.set(token, device.user);
  sendOauth(req, res, 200, { access_token: token, token_type: 'bearer', scope: device.scope });
}

function user(req, res) {
  const match = /^(?:bearer|token)\s+(\S+)$/i.exec(req.headers.authorization || '');
  const who = match && tokens.get(match[1]);
  if (!who) {
    return sendJson(res, 401, {
      message: 'Bad credentials',
      documentation_url: 'https://docs.github.com/rest',
    });
  }
  sendJson(res, 200, {
    login: who.login,
    id: who.id,
    node_id: Buffer.from(`04:User${who.id}`).toString('base64'),
    type: 'User',
    site_admin: false,
    name: null,
    html_url: `https://github.com/${who.login}`,
  });
}

function control(res, params, action) {
  const code = byUserCode.get(params.user_code);
  const device = code && devices.get(code);
  if (!device) return sendJson(res, 404, { error: 'unknown user_code' });
  if (action === 'approve') {
    if (typeof params.login !== 'string' || !Number.isSafeInteger(params.id))
      return sendJson(res, 400, { error: 'approve needs login (string) and id (integer)' });
    device.state = 'approved';
    device.user = { id: params.id, login: params.login };
  } else if (action === 'deny') {
    device.state = 'denied';
  } else {
    device.expiresAt = 0;
  }
  sendJson(res, 200, { ok: true });
}

async function handle(req, res) {
  const url = new URL(req.url, 'http://standin');
  const route = `${req.method} ${url.pathname}`;
  if (url.pathname === '/_control/hang') return; // never answers
  let body;
  try {
    body = await readParams(req);
  } catch (e) {
    return sendJson(res, 400, { error: e.message });
  }
  const { params } = body;
  switch (route) {
    case 'POST /login/device/code':
      return deviceCode(req, res, params);
    case 'POST /login/oauth/access_token':
      return accessToken(req, res, params);
    case 'GET /user':
      return user(req, res);
    case 'POST /_control/approve':
      return control(res, params, 'approve');
    case 'POST /_control/deny':
      return control(res, params, 'deny');
    case 'POST /_control/expire':
      return control(res, params, 'expire');
    case 'GET /_control/bytes': {
      const n = Number(url.searchParams.get('n') || '0');
      res.writeHead(200, { 'content-type': 'text/plain' }); // no length: chunked
      const chunk = Buffer.alloc(64 * 1024, 'x');
      for (let left = n; left > 0; left -= chunk.length) res.write(left >= chunk.length ? chunk : chunk.subarray(0, left));
      return res.end();
    }
    default:
      break;
  }
  if (url.pathname === '/_control/echo') {
    return sendJson(res, 200, {
      method: req.method,
      url: req.url,
      headers: req.headers,
      body: body.text,
      sni: req.socket.servername || null,
    });
  }
  if (url.pathname === '/_control/status') {
    return sendJson(res, Number(url.searchParams.get('code') || '200'), {});
  }
  sendJson(res, 404, { message: 'Not Found', documentation_url: 'https://docs.github.com/rest' });
}

function onRequest(req, res) {
  handle(req, res).catch((e) => {
    process.stderr.write(`github-standin: ${e.stack}\n`);
    if (!res.headersSent) sendJson(res, 500, { error: 'internal' });
  });
}

const server = flags.tlsCert
  ? https.createServer({ cert: readFileSync(flags.tlsCert), key: readFileSync(flags.tlsKey) }, onRequest)
  : http.createServer(onRequest);

server.listen(flags.port, '127.0.0.1', () => {
  process.stdout.write(`listening ${scheme}://127.0.0.1:${server.address().port}\n`);
});

for (const signal of ['SIGTERM', 'SIGINT']) process.on(signal, () => process.exit(0));
