/**
 * The stream protocol (issue 12): one typed union for what SSE and WebSocket deliver, and the
 * parsers that turn raw SSE events and WS frames into it. Unknown event names are dropped, so
 * a newer server does not break an older page.
 */
import type { Message, Source } from '../api/types';

export interface ToolCallData {
  message_id?: string;
  id?: string;
  tool_call_id?: string;
  name: string;
  arguments?: unknown;
}
export interface ToolResultData {
  message_id?: string;
  parent_id?: string | null;
  id?: string;
  tool_call_id?: string;
  name?: string;
  content?: string;
  result?: unknown;
  error?: boolean;
  /** A `search` step's passages, numbered for the answer's citations. */
  sources?: Source[] | null;
}
export interface ErrorData {
  message: string;
  code?: string;
}

export type StreamEvent =
  | { id: string; event: 'message'; data: Message }
  | { id: string; event: 'delta'; data: { message_id: string; text: string } }
  | { id: string; event: 'tool_call'; data: ToolCallData }
  | { id: string; event: 'tool_result'; data: ToolResultData }
  | { id: string; event: 'done'; data: { message: Message } }
  | { id: string; event: 'error'; data: ErrorData };

const NAMES = new Set(['message', 'delta', 'tool_call', 'tool_result', 'done', 'error']);

function errorData(data: unknown): ErrorData {
  // The server may send {message} or OpenAI's envelope {error: {message, code}}.
  if (data && typeof data === 'object') {
    const d = data as { message?: unknown; error?: { message?: unknown; code?: unknown } | string; code?: unknown };
    if (typeof d.message === 'string') return { message: d.message, code: typeof d.code === 'string' ? d.code : undefined };
    if (typeof d.error === 'string') return { message: d.error };
    if (d.error && typeof d.error.message === 'string') {
      return { message: d.error.message, code: typeof d.error.code === 'string' ? d.error.code : undefined };
    }
  }
  return { message: typeof data === 'string' && data ? data : 'The answer failed.' };
}

/** Build an event from its parts; null for names this page does not know or bad JSON. */
export function toEvent(id: string | undefined, name: string | undefined, data: unknown): StreamEvent | null {
  if (!name || !NAMES.has(name) || id === undefined || id === '') return null;
  if (name === 'error') return { id, event: 'error', data: errorData(data) };
  if (!data || typeof data !== 'object') return null;
  return { id, event: name, data } as StreamEvent;
}

/** One SSE event (its `id:`, `event:` and `data:` fields). */
export function fromSse(id: string | undefined, name: string | undefined, data: string): StreamEvent | null {
  let parsed: unknown;
  try {
    parsed = JSON.parse(data);
  } catch {
    if (name === 'error') return toEvent(id, name, data);
    return null;
  }
  return toEvent(id, name, parsed);
}

/**
 * One WebSocket frame of WS /api/ws, `{"id", "event", "data", "conversation_id"}`: an event of
 * the named conversation, or (id null) news of that conversation's subscription: `end` (it
 * ended, as an SSE body ends) or `error` (refused, with the HTTP status a request would get).
 */
export type Frame =
  | { conversationId: string; kind: 'event'; event: StreamEvent }
  | { conversationId: string; kind: 'end' }
  | { conversationId: string; kind: 'refused'; status: number; message: string };

export function fromFrame(text: string): Frame | null {
  let frame: unknown;
  try {
    frame = JSON.parse(text);
  } catch {
    return null;
  }
  if (!frame || typeof frame !== 'object') return null;
  const f = frame as { id?: unknown; event?: unknown; data?: unknown; conversation_id?: unknown };
  if (typeof f.conversation_id !== 'string') return null;
  const conversationId = f.conversation_id;
  if (f.id === null) {
    if (f.event === 'end') return { conversationId, kind: 'end' };
    if (f.event !== 'error') return null;
    const data = (f.data ?? {}) as { status?: unknown };
    return { conversationId, kind: 'refused', status: typeof data.status === 'number' ? data.status : 400, message: errorData(f.data).message };
  }
  const id = typeof f.id === 'number' ? String(f.id) : typeof f.id === 'string' ? f.id : undefined;
  const event = toEvent(id, typeof f.event === 'string' ? f.event : undefined, f.data);
  return event && { conversationId, kind: 'event', event };
}

/**
 * Event ids increase: integers in-process, "<ms>-<seq>" from Redis Streams. Compare part by
 * part as numbers; -1, 0, 1 like a sort comparator.
 */
export function compareIds(a: string, b: string): number {
  const pa = a.split('-').map(Number);
  const pb = b.split('-').map(Number);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const x = pa[i] ?? 0;
    const y = pb[i] ?? 0;
    if (Number.isNaN(x) || Number.isNaN(y)) return a < b ? -1 : a > b ? 1 : 0;
    if (x !== y) return x < y ? -1 : 1;
  }
  return 0;
}

/** Remembers the last event applied, so a resumed stream applies each event exactly once. */
export class EventCursor {
  last: string | undefined;
  constructor(last?: string) {
    this.last = last;
  }
  /** True when the event is new (and records it). */
  accept(event: StreamEvent): boolean {
    if (this.last !== undefined && compareIds(event.id, this.last) <= 0) return false;
    this.last = event.id;
    return true;
  }
}

export function isTerminal(event: StreamEvent): boolean {
  return event.event === 'done' || event.event === 'error';
}
