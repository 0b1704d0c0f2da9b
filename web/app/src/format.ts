// How bodies, agent IDs and times are shown.
import type { JsonValue } from '../../client/src/ijson.js';

/** A body as people read it: a lone `message` (or `reply`/`text`) string as text, anything else as JSON. */
export function bodyText(body: JsonValue | undefined): string {
  if (body === undefined) return '';
  if (typeof body === 'string') return body;
  if (typeof body === 'object' && body !== null && !Array.isArray(body)) {
    const keys = Object.keys(body);
    for (const key of ['message', 'reply', 'text']) {
      const value = body[key];
      if (keys.length === 1 && typeof value === 'string') return value;
    }
  }
  return jsonText(body);
}

/** JSON on one line when short, indented when long. */
function jsonText(body: JsonValue): string {
  const compact = JSON.stringify(body);
  return compact.length <= 100 ? compact : JSON.stringify(body, null, 2);
}

/** Whether bodyText shows JSON (rendered monospace). */
export function isJsonShown(body: JsonValue | undefined): boolean {
  if (body === undefined || typeof body === 'string') return false;
  return bodyText(body) === jsonText(body);
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
