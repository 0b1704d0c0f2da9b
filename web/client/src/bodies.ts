// §4 bodies, the plaintext of a payload, and the §5 message-1 request JSON. Parsers reject unknown
// members, missing members, nulls, wrong types and non-integer integer fields with
// MeshError(bad_request) naming the member (answered `bad_request` on the request's session);
// builders refuse values a peer would reject, so we never send what we would not accept.
import { MeshError, badRequest, isKnownErrorCode, quoteForMessage, type MeshErrorCode } from './errors.js';
import type { JsonObject, JsonValue } from './ijson.js';
import { FieldReader, requireObject } from './fields.js';
import type { MsgType } from './envelope.js';

export const MAX_CAPABILITY_NAME = 54;
const CAPABILITY_NAME = /^[A-Za-z0-9_-]{1,54}$/;

/** Capability names match [A-Za-z0-9_-]{1,54} (§4). */
export function isCapabilityName(name: unknown): boolean {
  return typeof name === 'string' && CAPABILITY_NAME.test(name);
}

export interface RequestBody {
  capability: string;
  body: JsonValue;
  /** When the caller stops waiting (ms, positive); the responder stops work then. */
  timeout_ms?: number;
}
export interface ResponseBody {
  body: JsonValue;
}
export interface ErrorBody {
  code: MeshErrorCode;
  message: string;
  retry_after_ms?: number;
}
export interface StreamChunkBody {
  seq: number;
  body: JsonValue;
}
export interface StreamEndBody {
  /** The number of chunks sent. */
  seq: number;
}
export type CancelBody = Record<string, never>;

/** §5 message 1's Noise payload: the request itself, its ID being the step-1 envelope's. */
export interface HandshakeRequest extends RequestBody {
  msg_type: 'request' | 'stream_request';
}

function context(type: string): string {
  return `${type} body`;
}

function readRequest(fields: FieldReader, ctx: string): RequestBody {
  const capability = fields.requiredString('capability');
  if (!isCapabilityName(capability)) {
    throw badRequest(`${ctx}: capability ${quoteForMessage(capability)} must match [A-Za-z0-9_-]{1,54}`);
  }
  const body = fields.requiredAny('body');
  const timeout = fields.optionalInteger('timeout_ms');
  const out: RequestBody = { capability, body };
  if (timeout !== undefined) {
    if (timeout <= 0) throw badRequest(`${ctx}: timeout_ms must be positive`);
    out.timeout_ms = timeout;
  }
  return out;
}

/** `request` / `stream_request`: {"capability", "body", "timeout_ms"?}. */
export function parseRequestBody(payload: JsonValue, type: 'request' | 'stream_request' = 'request'): RequestBody {
  const ctx = context(type);
  const fields = new FieldReader(requireObject(payload, ctx), ctx);
  fields.rejectUnknown(['capability', 'body', 'timeout_ms']);
  return readRequest(fields, ctx);
}

/** `response`: {"body"}. */
export function parseResponseBody(payload: JsonValue): ResponseBody {
  const ctx = context('response');
  const fields = new FieldReader(requireObject(payload, ctx), ctx);
  fields.rejectUnknown(['body']);
  return { body: fields.requiredAny('body') };
}

/** `error`: {"code", "message", "retry_after_ms"?}; the code must be one we know (docs/protocol.md). */
export function parseErrorBody(payload: JsonValue): ErrorBody {
  const ctx = context('error');
  const fields = new FieldReader(requireObject(payload, ctx), ctx);
  fields.rejectUnknown(['code', 'message', 'retry_after_ms']);
  const code = fields.requiredString('code');
  if (!isKnownErrorCode(code)) throw badRequest(`${ctx}: unknown error code ${quoteForMessage(code)}`);
  const message = fields.requiredString('message');
  const retry = fields.optionalInteger('retry_after_ms');
  const out: ErrorBody = { code, message };
  if (retry !== undefined) {
    if (retry < 0) throw badRequest(`${ctx}: retry_after_ms must not be negative`);
    out.retry_after_ms = retry;
  }
  return out;
}

/** `stream_chunk`: {"seq", "body"}, seq ≥ 0. */
export function parseChunkBody(payload: JsonValue): StreamChunkBody {
  const ctx = context('stream_chunk');
  const fields = new FieldReader(requireObject(payload, ctx), ctx);
  fields.rejectUnknown(['seq', 'body']);
  const seq = fields.requiredInteger('seq');
  if (seq < 0) throw badRequest(`${ctx}: seq must not be negative`);
  return { seq, body: fields.requiredAny('body') };
}

/** `stream_end`: {"seq"} = the number of chunks sent. */
export function parseEndBody(payload: JsonValue): StreamEndBody {
  const ctx = context('stream_end');
  const fields = new FieldReader(requireObject(payload, ctx), ctx);
  fields.rejectUnknown(['seq']);
  const seq = fields.requiredInteger('seq');
  if (seq < 0) throw badRequest(`${ctx}: seq must not be negative`);
  return { seq };
}

/** `cancel`: {}. */
export function parseCancelBody(payload: JsonValue): CancelBody {
  const ctx = context('cancel');
  new FieldReader(requireObject(payload, ctx), ctx).rejectUnknown([]);
  return {};
}

export type Body =
  | { msg_type: 'request' | 'stream_request'; body: RequestBody }
  | { msg_type: 'response'; body: ResponseBody }
  | { msg_type: 'error'; body: ErrorBody }
  | { msg_type: 'stream_chunk'; body: StreamChunkBody }
  | { msg_type: 'stream_end'; body: StreamEndBody }
  | { msg_type: 'cancel'; body: CancelBody };

/** The §4 body for `type`; handshakes have none (bad_request). */
export function parseBody(type: MsgType, payload: JsonValue): Body {
  switch (type) {
    case 'request':
    case 'stream_request':
      return { msg_type: type, body: parseRequestBody(payload, type) };
    case 'response':
      return { msg_type: type, body: parseResponseBody(payload) };
    case 'error':
      return { msg_type: type, body: parseErrorBody(payload) };
    case 'stream_chunk':
      return { msg_type: type, body: parseChunkBody(payload) };
    case 'stream_end':
      return { msg_type: type, body: parseEndBody(payload) };
    case 'cancel':
      return { msg_type: type, body: parseCancelBody(payload) };
    default:
      throw badRequest('handshake envelopes carry no §4 body');
  }
}

/** Message 1's JSON (§5): {"msg_type": "request"|"stream_request", "capability", "body", "timeout_ms"?}. */
export function parseHandshakeRequest(payload: JsonValue): HandshakeRequest {
  const ctx = 'message 1 request';
  const fields = new FieldReader(requireObject(payload, ctx), ctx);
  fields.rejectUnknown(['msg_type', 'capability', 'body', 'timeout_ms']);
  const type = fields.requiredString('msg_type');
  if (type !== 'request' && type !== 'stream_request') {
    throw badRequest(`${ctx}: msg_type must be "request" or "stream_request"`);
  }
  return { msg_type: type, ...readRequest(fields, ctx) };
}

// ---- builders ----

function misuse(message: string): MeshError {
  return new MeshError('bad_request', message);
}

function checkCount(name: string, value: number, minimum: number): void {
  if (!Number.isSafeInteger(value) || value < minimum) {
    throw misuse(`${name} must be an integer ≥ ${minimum}, got ${String(value)}`);
  }
}

export function requestBody(capability: string, body: JsonValue, timeoutMs?: number): JsonObject {
  if (!isCapabilityName(capability)) {
    throw misuse(`capability ${quoteForMessage(String(capability))} must match [A-Za-z0-9_-]{1,54}`);
  }
  const out: JsonObject = { capability, body };
  if (timeoutMs !== undefined) {
    checkCount('timeout_ms', timeoutMs, 1);
    out.timeout_ms = timeoutMs;
  }
  return out;
}

export function handshakeRequest(
  msgType: 'request' | 'stream_request',
  capability: string,
  body: JsonValue,
  timeoutMs?: number,
): JsonObject {
  return { msg_type: msgType, ...requestBody(capability, body, timeoutMs) };
}

export function responseBody(body: JsonValue): JsonObject {
  return { body };
}

export function errorBody(code: MeshErrorCode, message: string, retryAfterMs?: number): JsonObject {
  if (!isKnownErrorCode(code)) throw misuse(`unknown error code ${quoteForMessage(String(code))}`);
  const out: JsonObject = { code, message };
  if (retryAfterMs !== undefined) {
    checkCount('retry_after_ms', retryAfterMs, 0);
    out.retry_after_ms = retryAfterMs;
  }
  return out;
}

export function chunkBody(seq: number, body: JsonValue): JsonObject {
  checkCount('seq', seq, 0);
  return { seq, body };
}

export function endBody(seq: number): JsonObject {
  checkCount('seq', seq, 0);
  return { seq };
}

export function cancelBody(): JsonObject {
  return {};
}

/** The MeshError an `error` body reports to the caller. */
export function errorFromBody(body: ErrorBody): MeshError {
  return new MeshError(
    body.code,
    body.message,
    body.retry_after_ms !== undefined ? { retryAfterMs: body.retry_after_ms } : undefined,
  );
}
