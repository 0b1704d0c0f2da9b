// How bodies, agent IDs and times are shown.
import type { JsonValue } from '../../client/src/ijson.js';

/** JSON on one line when short, indented when long. */
function jsonText(body: JsonValue): string {
  const compact = JSON.stringify(body);
  return compact.length <= 100 ? compact : JSON.stringify(body, null, 2);
}

/**
 * A body as the conversation shows it, computed once when the message arrives (not per render): a
 * lone `message` (or `reply`/`text`) string as text, anything else as JSON.
 */
export interface ShownBody {
  text: string;
  /** Rendered monospace (JSON) rather than as text. */
  json: boolean;
}

export function showBody(body: JsonValue | undefined): ShownBody {
  if (body === undefined) return { text: '', json: false };
  if (typeof body === 'string') return { text: body, json: false };
  if (typeof body === 'object' && body !== null && !Array.isArray(body)) {
    const keys = Object.keys(body);
    if (keys.length === 1) {
      const value = body[keys[0]!];
      if ((keys[0] === 'message' || keys[0] === 'reply' || keys[0] === 'text') && typeof value === 'string') return { text: value, json: false };
    }
  }
  return { text: jsonText(body), json: true };
}

export function shortId(id: string): string {
  return id.length > 12 ? `${id.slice(0, 8)}…${id.slice(-4)}` : id;
}

export function timeOf(ms: number): string {
  return new Date(ms).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' });
}

/**
 * The composer's text as a request body: `{"message": text}`, or the text parsed as JSON when
 * `asJson` (an error message when it is not JSON).
 */
export function composeBody(text: string, asJson: boolean): { body: JsonValue } | { error: string } {
  if (!asJson) return { body: { message: text } };
  try {
    return { body: JSON.parse(text) as JsonValue };
  } catch (e) {
    return { error: `not JSON: ${e instanceof Error ? e.message : String(e)}` };
  }
}
