/**
 * Follow one generation to its end, surviving cut connections: events of the first response
 * (the POST that started it) are applied, and when the body ends before `done` or `error`,
 * GET /api/conversations/{id}/stream resumes after the last event applied (Last-Event-ID).
 * The cursor drops anything already seen, so every event is applied exactly once.
 */
import { EventCursor, isTerminal, type StreamEvent } from './events';
import { readSse } from './sse';

export class StreamHttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

export interface FollowOptions {
  conversationId: string;
  cursor: EventCursor;
  onEvent: (event: StreamEvent) => void;
  signal?: AbortSignal;
  fetch?: typeof fetch;
  /** Reconnections without progress before giving up. */
  maxRetries?: number;
  sleep?: (ms: number) => Promise<void>;
}

export type FollowEnd = 'done' | 'error' | 'aborted' | 'lost';

const wait = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export async function errorMessage(response: Response): Promise<string> {
  try {
    const body = (await response.json()) as { error?: { message?: string } | string; detail?: unknown };
    if (typeof body.error === 'string') return body.error;
    if (body.error?.message) return body.error.message;
    if (typeof body.detail === 'string') return body.detail;
  } catch {
    /* not JSON */
  }
  return `${response.status} ${response.statusText}`.trim();
}

export function openStream(conversationId: string, lastEventId: string | undefined, f: typeof fetch, signal?: AbortSignal): Promise<Response> {
  const headers: Record<string, string> = { Accept: 'text/event-stream' };
  if (lastEventId !== undefined) headers['Last-Event-ID'] = lastEventId;
  return f(`/api/conversations/${encodeURIComponent(conversationId)}/stream`, { headers, signal, credentials: 'same-origin' });
}

export async function follow(first: Response | null, opts: FollowOptions): Promise<FollowEnd> {
  const f = opts.fetch ?? fetch.bind(globalThis);
  const sleep = opts.sleep ?? wait;
  const maxRetries = opts.maxRetries ?? 5;
  let response = first;
  let failures = 0;
  for (;;) {
    if (opts.signal?.aborted) return 'aborted';
    try {
      response ??= await openStream(opts.conversationId, opts.cursor.last, f, opts.signal);
      if (!response.ok) {
        // 4xx will not change by retrying: the caller shows it.
        if (response.status < 500) throw new StreamHttpError(response.status, await errorMessage(response));
        throw new Error(await errorMessage(response));
      }
      if (!response.body) throw new Error('empty stream');
      for await (const event of readSse(response.body)) {
        if (!opts.cursor.accept(event)) continue;
        failures = 0;
        opts.onEvent(event);
        if (isTerminal(event)) return event.event === 'done' ? 'done' : 'error';
      }
    } catch (e) {
      if (e instanceof StreamHttpError) throw e;
      if (opts.signal?.aborted) return 'aborted';
    }
    response = null;
    failures += 1;
    if (failures > maxRetries) return 'lost';
    await sleep(Math.min(4000, 250 * 2 ** (failures - 1)));
  }
}
