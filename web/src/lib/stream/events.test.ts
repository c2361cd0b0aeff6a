import { describe, expect, it } from 'vitest';
import { compareIds, EventCursor, fromFrame, fromSse } from './events';
import { follow } from './follow';
import { readSse } from './sse';

const enc = new TextEncoder();

/** A Response whose body arrives in the given chunks (split anywhere, as a network would). */
function sseResponse(chunks: string[]): Response {
  const body = new ReadableStream<Uint8Array>({
    start(controller) {
      for (const c of chunks) controller.enqueue(enc.encode(c));
      controller.close();
    },
  });
  return new Response(body, { headers: { 'content-type': 'text/event-stream' } });
}

function sse(id: number, event: string, data: unknown): string {
  return `id: ${id}\nevent: ${event}\ndata: ${JSON.stringify(data)}\n\n`;
}

const user = { id: 'u1', parent_id: null, role: 'user', content: 'hi', status: 'complete', created_at: '2026-01-01T00:00:00Z' };
const asst = { id: 'a1', parent_id: 'u1', role: 'assistant', content: '', status: 'streaming', created_at: '2026-01-01T00:00:01Z' };

describe('SSE parsing', () => {
  it('parses events split across chunks and drops unknown names and bad JSON', async () => {
    const text = sse(1, 'message', user) + sse(2, 'delta', { message_id: 'a1', text: 'Hel' }) + 'id: 3\nevent: ping\ndata: {}\n\n' + 'id: 4\nevent: delta\ndata: {oops\n\n' + sse(5, 'error', { error: { message: 'boom', code: 'x' } });
    const chunks = text.match(/[\s\S]{1,7}/g) ?? [];
    const events = [];
    for await (const e of readSse(sseResponse(chunks).body!)) events.push(e);
    expect(events.map((e) => [e.id, e.event])).toEqual([['1', 'message'], ['2', 'delta'], ['5', 'error']]);
    expect(events[2]?.data).toEqual({ message: 'boom', code: 'x' });
  });

  it('requires an id on every event', () => {
    expect(fromSse(undefined, 'delta', '{"message_id":"a","text":"x"}')).toBeNull();
    expect(fromSse('7', 'delta', '{"message_id":"a","text":"x"}')?.id).toBe('7');
  });
});

describe('event ids', () => {
  it('order integers and Redis stream ids numerically', () => {
    expect(compareIds('9', '10')).toBe(-1);
    expect(compareIds('1700000000000-2', '1700000000000-10')).toBe(-1);
    expect(compareIds('1700000000001-0', '1700000000000-10')).toBe(1);
    expect(compareIds('5', '5')).toBe(0);
  });

  it('a cursor accepts each id once, in order', () => {
    const c = new EventCursor('2');
    const ev = (id: string) => ({ id, event: 'delta' as const, data: { message_id: 'a', text: '' } });
    expect([ev('1'), ev('2'), ev('3'), ev('3'), ev('4')].map((e) => c.accept(e))).toEqual([false, false, true, false, true]);
    expect(c.last).toBe('4');
  });
});

describe('follow: resume with Last-Event-ID', () => {
  it('resumes a cut stream after the last event, applying every event exactly once', async () => {
    const all = [
      sse(1, 'message', user),
      sse(2, 'message', asst),
      sse(3, 'delta', { message_id: 'a1', text: 'Hel' }),
      sse(4, 'delta', { message_id: 'a1', text: 'lo' }),
      sse(5, 'delta', { message_id: 'a1', text: '!' }),
      sse(6, 'done', { message: { ...asst, content: 'Hello!', status: 'complete' } }),
    ];
    const requests: (string | null)[] = [];
    // The resume route replays from the given id, and (as a proxy might) re-sends one seen event.
    const fakeFetch = (async (_url: string, init?: RequestInit) => {
      const last = new Headers(init?.headers).get('Last-Event-ID');
      requests.push(last);
      return sseResponse(all.slice(Number(last) - 1));
    }) as typeof fetch;
    const seen: string[] = [];
    let text = '';
    const end = await follow(sseResponse(all.slice(0, 3)), {
      conversationId: 'c1',
      cursor: new EventCursor(),
      fetch: fakeFetch,
      sleep: async () => {},
      onEvent: (e) => {
        seen.push(e.id);
        if (e.event === 'delta') text += e.data.text;
      },
    });
    expect(end).toBe('done');
    expect(requests).toEqual(['3']);
    expect(seen).toEqual(['1', '2', '3', '4', '5', '6']);
    expect(text).toBe('Hello!');
  });

  it('gives up after repeated failures without progress, and surfaces a 4xx at once', async () => {
    let calls = 0;
    const failing = (async () => {
      calls++;
      throw new TypeError('network down');
    }) as typeof fetch;
    const end = await follow(null, { conversationId: 'c', cursor: new EventCursor('1'), fetch: failing, sleep: async () => {}, onEvent: () => {}, maxRetries: 3 });
    expect(end).toBe('lost');
    expect(calls).toBe(4);
    const notFound = (async () => new Response(JSON.stringify({ error: { message: 'no such conversation' } }), { status: 404 })) as typeof fetch;
    await expect(follow(null, { conversationId: 'c', cursor: new EventCursor(), fetch: notFound, onEvent: () => {} })).rejects.toThrow('no such conversation');
  });
});

describe('WebSocket frames', () => {
  it('parses event frames, subscription news and nothing malformed', () => {
    expect(fromFrame('{"id": 3, "event": "delta", "data": {"message_id": "a", "text": "x"}, "conversation_id": "c1"}')).toEqual({
      conversationId: 'c1',
      kind: 'event',
      event: { id: '3', event: 'delta', data: { message_id: 'a', text: 'x' } },
    });
    expect(fromFrame('{"id": null, "event": "end", "data": {}, "conversation_id": "c1"}')).toEqual({ conversationId: 'c1', kind: 'end' });
    expect(fromFrame('{"id": null, "event": "error", "data": {"error": "no such conversation", "status": 404}, "conversation_id": "c2"}')).toEqual({
      conversationId: 'c2',
      kind: 'refused',
      status: 404,
      message: 'no such conversation',
    });
    expect(fromFrame('not json')).toBeNull();
    expect(fromFrame('{"event": "delta", "data": {}, "conversation_id": "c1"}')).toBeNull();
    // A problem with the socket itself (a bad frame) names no conversation: no follower's.
    expect(fromFrame('{"id": null, "event": "error", "data": {"error": "bad frame"}, "conversation_id": null}')).toBeNull();
  });
});
