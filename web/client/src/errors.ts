// The shared error model (protocol §4, §6; registry.md): every rejection in the client is a
// MeshError with a stable wire code and a message for people that names the problem.

/** The 13 end-to-end error codes of protocol §4, shared by SDK, CLI, MCP and HTTP APIs. */
export const ERROR_CODES = [
  'acl_denied',
  'unknown_capability',
  'timeout',
  'unreachable',
  'rate_limited',
  'revoked',
  'agent_error',
  'bad_request',
  'too_large',
  'cancelled',
  'no_session',
  'expired',
  'internal',
] as const;
export type ErrorCode = (typeof ERROR_CODES)[number];

/** Relay connection and `undeliverable` codes (protocol §6) that are not §4 codes. */
export const RELAY_ERROR_CODES = [
  'auth_failed',
  'auth_timeout',
  'unsupported_version',
  'slow_consumer',
  'buffer_full',
  'bad_envelope',
] as const;
export type RelayErrorCode = (typeof RELAY_ERROR_CODES)[number];

/** Registry HTTP codes (registry.md) and the RFC 8628 device-flow codes. */
export const HTTP_ERROR_CODES = [
  'unauthorized',
  'forbidden',
  'not_found',
  'conflict',
  'authorization_pending',
  'slow_down',
  'expired_token',
  'access_denied',
] as const;
export type HttpErrorCode = (typeof HTTP_ERROR_CODES)[number];

/**
 * Every code the project knows (the C++ core's `Errc`). An `error` body or relay `error` frame
 * must carry one of these (docs/protocol.md: peers cannot invent codes clients can't map).
 */
export type MeshErrorCode = ErrorCode | RelayErrorCode | HttpErrorCode;
export const ALL_ERROR_CODES: readonly MeshErrorCode[] = [
  ...ERROR_CODES,
  ...RELAY_ERROR_CODES,
  ...HTTP_ERROR_CODES,
];

const PROTOCOL_CODES: ReadonlySet<string> = new Set(ERROR_CODES);
const KNOWN_CODES: ReadonlySet<string> = new Set(ALL_ERROR_CODES);

/** True for the 13 codes of protocol §4. */
export function isErrorCode(text: unknown): text is ErrorCode {
  return typeof text === 'string' && PROTOCOL_CODES.has(text);
}

/** True for any code the project knows (§4, relay, registry, device flow). */
export function isKnownErrorCode(text: unknown): text is MeshErrorCode {
  return typeof text === 'string' && KNOWN_CODES.has(text);
}

export class MeshError extends Error {
  readonly code: MeshErrorCode;
  /** When the peer or relay said when to retry (`retry_after_ms`). */
  readonly retryAfterMs?: number;

  constructor(code: MeshErrorCode, message: string, options?: { retryAfterMs?: number; cause?: unknown }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'MeshError';
    this.code = code;
    if (options?.retryAfterMs !== undefined) this.retryAfterMs = options.retryAfterMs;
  }

  /** "bad_request: signature must be 64 bytes" (as the C++ core's Error::describe). */
  describe(): string {
    return `${this.code}: ${this.message}`;
  }
}

/** Shorthand for the most common rejection. */
export function badRequest(message: string): MeshError {
  return new MeshError('bad_request', message);
}

/** How much of a hostile string an error message may quote. */
const MAX_QUOTED_CHARS = 64;

/**
 * Hostile text (member names, numbers) quoted for an error message: JSON-escaped so control
 * characters cannot forge log lines, and cut after 64 characters without splitting a surrogate
 * pair, so a 1 MiB member name never becomes a 1 MiB log line.
 */
export function quoteForMessage(text: string): string {
  let cut = text;
  let truncated = false;
  if (text.length > MAX_QUOTED_CHARS) {
    let end = MAX_QUOTED_CHARS;
    const last = text.charCodeAt(end - 1);
    if (last >= 0xd800 && last <= 0xdbff) end -= 1;
    cut = text.slice(0, end);
    truncated = true;
  }
  // Lone surrogates (possible in hostile input) are escaped by JSON.stringify as \udxxx.
  const quoted = JSON.stringify(cut);
  return truncated ? `${quoted.slice(0, -1)}..."` : quoted;
}
