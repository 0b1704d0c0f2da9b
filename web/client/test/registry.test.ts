// RegistryClient (client/src/registry.ts) against a scripted fetch: request shapes, credentials,
// the device flow's RFC 6749 answers, error mapping and the ACL helpers. The real registry is
// exercised end to end by web/e2e (headless Chromium against mesh-demo --serve).
import { describe, expect, it } from 'vitest';
import { MeshError } from '../src/errors.js';
import { Identity, verifySigned } from '../src/identity.js';
import { decodeBase64url } from '../src/base64url.js';
import { canonicalize } from '../src/jcs.js';
import type { JsonObject } from '../src/ijson.js';
import { RegistryClient, mayManage, personalGroup, ruleAllows, type AclRule, type Me } from '../src/registry.js';

interface Seen {
  url: string;
  method: string;
  headers: Record<string, string>;
  body: string | undefined;
}

function scripted(answers: Array<{ status: number; body?: unknown; headers?: Record<string, string> } | Error>) {
  const seen: Seen[] = [];
  const fetch = (async (input: RequestInfo | URL, init?: RequestInit) => {
    seen.push({
      url: String(input),
      method: init?.method ?? 'GET',
      headers: { ...(init?.headers as Record<string, string>) },
      body: typeof init?.body === 'string' ? init.body : undefined,
    });
    const next = answers.shift();
    if (next === undefined) throw new Error('unexpected call');
    if (next instanceof Error) throw next;
    return new Response(next.body === undefined ? '' : JSON.stringify(next.body), {
      status: next.status,
      headers: { 'Content-Type': 'application/json', ...next.headers },
    });
  }) as typeof globalThis.fetch;
  return { fetch, seen };
}

const me: Me = {
  user: { id: 'u1', login: 'ada', created_at: '2026-01-01T00:00:00Z' },
  groups: [
    { id: 'g-personal', name: 'ada', role: 'owner', personal: true },
    { id: 'g-team', name: 'team', role: 'member', personal: false },
  ],
};

describe('RegistryClient', () => {
  it('sends the token as Bearer and reads /users/me', async () => {
    const { fetch, seen } = scripted([{ status: 200, body: me }]);
    const client = new RegistryClient({ baseUrl: 'http://127.0.0.1:8080', token: 'tok', fetch });
    expect(await client.me()).toEqual(me);
    expect(seen[0]!.url).toBe('http://127.0.0.1:8080/api/v1/users/me');
    expect(seen[0]!.headers.Authorization).toBe('Bearer tok');
  });

  it('maps registry errors to MeshErrors with the registry code and message', async () => {
    const { fetch } = scripted([
      { status: 401, body: { error: { code: 'unauthorized', message: 'unknown or revoked token' } } },
      { status: 429, body: { error: { code: 'rate_limited', message: 'slow down' } }, headers: { 'Retry-After': '3' } },
      { status: 502, body: 'not our shape' },
      new TypeError('Failed to fetch'),
    ]);
    const client = new RegistryClient({ baseUrl: 'http://r', token: 't', fetch });
    await expect(client.me()).rejects.toMatchObject({ code: 'unauthorized', message: 'unknown or revoked token' });
    const limited = await client.me().catch((e: unknown) => e);
    expect(limited).toBeInstanceOf(MeshError);
    expect(limited).toMatchObject({ code: 'rate_limited', retryAfterMs: 3000 });
    await expect(client.me()).rejects.toMatchObject({ code: 'unreachable' });
    await expect(client.me()).rejects.toMatchObject({ code: 'unreachable', message: expect.stringContaining('unreachable') });
  });

  it('refuses token calls without a token, before any request', async () => {
    const { fetch, seen } = scripted([]);
    await expect(new RegistryClient({ fetch }).me()).rejects.toMatchObject({ code: 'unauthorized' });
    expect(seen).toHaveLength(0);
  });

  it('times out with `timeout`', async () => {
    const fetch = ((_: RequestInfo | URL, init?: RequestInit) =>
      new Promise((_resolve, reject) => {
        init?.signal?.addEventListener('abort', () => reject(new DOMException('aborted', 'AbortError')));
      })) as typeof globalThis.fetch;
    const client = new RegistryClient({ baseUrl: 'http://r', token: 't', fetch, timeoutMs: 20 });
    await expect(client.me()).rejects.toMatchObject({ code: 'timeout' });
  });

  it('runs the device flow: start, pending, slow_down, approved, and the RFC errors', async () => {
    const { fetch, seen } = scripted([
      { status: 200, body: { device_code: 'h'.repeat(43), user_code: 'ABCD-EFGH', verification_uri: 'https://github.com/login/device', expires_in: 900, interval: 5 } },
      { status: 400, body: { error: 'authorization_pending' } },
      { status: 400, body: { error: 'slow_down', interval: 10 } },
      { status: 200, body: { access_token: 'new-token', token_type: 'bearer' } },
      { status: 400, body: { error: 'expired_token' } },
      { status: 400, body: { error: 'access_denied' } },
      { status: 404, body: { error: { code: 'not_found', message: 'device login is not configured' } } },
    ]);
    const client = new RegistryClient({ baseUrl: 'http://r', fetch });
    const login = await client.startDeviceLogin();
    expect(login).toMatchObject({ userCode: 'ABCD-EFGH', verificationUri: 'https://github.com/login/device', interval: 5, expiresIn: 900 });
    expect(await client.pollDeviceLogin(login.deviceCode)).toEqual({ state: 'pending' });
    expect(await client.pollDeviceLogin(login.deviceCode)).toEqual({ state: 'slow_down', interval: 10 });
    expect(await client.pollDeviceLogin(login.deviceCode)).toEqual({ state: 'approved', token: 'new-token' });
    expect(JSON.parse(seen[1]!.body!)).toEqual({ grant_type: 'urn:ietf:params:oauth:grant-type:device_code', device_code: 'h'.repeat(43) });
    expect(seen[1]!.headers.Authorization).toBeUndefined();
    await expect(client.pollDeviceLogin('x')).rejects.toMatchObject({ code: 'expired_token' });
    await expect(client.pollDeviceLogin('x')).rejects.toMatchObject({ code: 'access_denied' });
    await expect(client.startDeviceLogin()).rejects.toMatchObject({ code: 'not_found' });
  });

  it('registers a card signed by the browser key, without the seed', async () => {
    const identity = Identity.generate();
    const { fetch, seen } = scripted([{ status: 201, body: { agent_id: identity.agentId, online: false } }]);
    const client = new RegistryClient({ baseUrl: 'http://r', token: 't', fetch, now: () => 1_800_000_000_000 });
    const group = '0f8fad5b-d9cb-469f-a165-70867728950e';
    await client.registerCard(identity, group, {
      name: 'ada (browser)',
      capabilities: [{ name: 'chat', description: 'a person answers' }],
      metadata: { kind: 'browser' },
    });
    expect(seen[0]!.method).toBe('POST');
    expect(seen[0]!.url).toBe('http://r/api/v1/agents');
    const card = JSON.parse(seen[0]!.body!) as JsonObject;
    expect(card).toMatchObject({
      agent_id: identity.agentId,
      group_id: group,
      name: 'ada (browser)',
      capabilities: [{ name: 'chat', description: 'a person answers' }],
      metadata: { kind: 'browser' },
      timestamp: 1_800_000_000_000,
    });
    const { signature, ...unsigned } = card;
    expect(verifySigned(identity.agentId, 'card', canonicalize(unsigned), decodeBase64url(signature as string, 64))).toBe(true);
    const hexSeed = Array.from(identity.seed, (b) => b.toString(16).padStart(2, '0')).join('');
    expect(seen[0]!.body).not.toContain(hexSeed);
  });

  it('signs the ACL sync as the agent over method, target, host and ts', async () => {
    const identity = Identity.generate();
    const { fetch, seen } = scripted([{ status: 200, body: { version: 3, rules: [], revoked: [] } }]);
    const client = new RegistryClient({ baseUrl: 'http://127.0.0.1:8080', identity, fetch, now: () => 1_800_000_000_000 });
    expect(await client.aclSync(0, 0)).toEqual({ version: 3, rules: [], revoked: [] });
    const target = `/api/v1/acl/sync?agent_id=${identity.agentId}&since=0&wait_s=0`;
    expect(seen[0]!.url).toBe(`http://127.0.0.1:8080${target}`);
    const header = seen[0]!.headers.Authorization!;
    const match = /^MeshAgent agent_id=([A-Za-z0-9_-]{43}),ts=(\d+),sig=([A-Za-z0-9_-]{86})$/.exec(header);
    expect(match).not.toBeNull();
    expect(match![1]).toBe(identity.agentId);
    const message = `GET ${target}\n127.0.0.1:8080\n${match![2]}`;
    expect(verifySigned(identity.agentId, 'http', message, decodeBase64url(match![3]!, 64))).toBe(true);
  });

  it('pages through discovery and the ACL list, and posts grants', async () => {
    const card = (id: string) => ({ agent_id: id, group_id: 'g', name: id, capabilities: [{ name: 'echo' }], online: true });
    const rule: AclRule = { id: 'acl_1', group_id: 'g', source: 'a', target: 'b', allowed_capabilities: ['echo'] };
    const { fetch, seen } = scripted([
      { status: 200, body: { items: [card('a')], next_cursor: 'c1' } },
      { status: 200, body: { items: [card('b')] } },
      { status: 200, body: { items: [rule] } },
      { status: 201, body: rule },
    ]);
    const client = new RegistryClient({ baseUrl: 'http://r', token: 't', fetch });
    expect((await client.discoverAll({ online: true })).map((c) => c.agent_id)).toEqual(['a', 'b']);
    expect(seen[0]!.url).toBe('http://r/api/v1/agents?online=true&limit=200');
    expect(seen[1]!.url).toBe('http://r/api/v1/agents?online=true&limit=200&cursor=c1');
    expect(await client.listAllAcl()).toEqual([rule]);
    expect(await client.grant({ group_id: 'g', source: 'a', target: 'b', allowed_capabilities: ['echo'] })).toEqual(rule);
    expect(JSON.parse(seen[3]!.body!)).toEqual({ group_id: 'g', source: 'a', target: 'b', allowed_capabilities: ['echo'] });
  });
});

describe('ACL helpers', () => {
  it('mayManage: own cards, and any card of a group the user owns or administers', () => {
    expect(mayManage(me, { owner_id: 'u1', group_id: 'g-team' })).toBe(true);
    expect(mayManage(me, { owner_id: 'u2', group_id: 'g-team' })).toBe(false);
    expect(mayManage(me, { group_id: 'g-team' })).toBe(false);
    expect(mayManage(me, { owner_id: 'u2', group_id: 'g-personal' })).toBe(true);
    expect(personalGroup(me).id).toBe('g-personal');
  });

  it('ruleAllows: source or *, capability or *', () => {
    const rules: AclRule[] = [
      { id: '1', group_id: 'g', source: 'a', target: 'b', allowed_capabilities: ['echo'] },
      { id: '2', group_id: 'g', source: '*', target: 'c', allowed_capabilities: ['*'] },
    ];
    expect(ruleAllows(rules, 'a', 'b', 'echo')).toBe(true);
    expect(ruleAllows(rules, 'a', 'b', 'chat')).toBe(false);
    expect(ruleAllows(rules, 'a', 'b')).toBe(true);
    expect(ruleAllows(rules, 'x', 'b')).toBe(false);
    expect(ruleAllows(rules, 'x', 'c', 'anything')).toBe(true);
    expect(ruleAllows([], 'a', 'b')).toBe(false);
  });
});
