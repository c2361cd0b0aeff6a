import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { EventCursor, type StreamEvent } from './events';
import { StreamHttpError } from './follow';
import { followLive } from './live';
import { SocketHub, SocketUnavailable } from './socket';

/** The browser's WebSocket as the hub uses it; the test plays the server's side. */
class FakeWebSocket extends EventTarget {
  static made: FakeWebSocket[] = [];
  static refuse = false; // the constructor throws, as where WebSocket is refused outright
  sent: Record<string, unknown>[] = [];
  closedWith: number | undefined;
  constructor(readonly url: string) {
    super();
    if (FakeWebSocket.refuse) throw new DOMException('blocked', 'SecurityError');
    FakeWebSocket.made.push(this);
  }
  send(text: string): void {
    this.sent.push(JSON.parse(text) as Record<string, unknown>);
  }
  close(code = 1005): void {
    this.closedWith = code;
  }
  accept(): void {
    this.dispatchEvent(new Event('open'));
  }
  frame(conversationId: string, id: number | null, event: string, data: unknown = {}): void {
    const text = JSON.stringify({ id: id === null ? null : String(id), event, data, conversation_id: conversationId });
    this.dispatchEvent(new MessageEvent('message', { data: text }));
  }
  delta(conversationId: string, id: number, text: string): void {
    this.frame(conversationId, id, 'delta', { message_id: `m-${conversationId}`, text });
  }
  done(conversationId: string, id: number): void {
    this.frame(conversationId, id, 'done', { message: { id: `m-${conversationId}`, status: 'complete' } });
  }
  drop(code = 1006): void {
    this.dispatchEvent(Object.assign(new Event('close'), { code }));
  }
}

const last = () => FakeWebSocket.made[FakeWebSocket.made.length - 1] as FakeWebSocket;
const settle = () => vi.advanceTimersByTimeAsync(0);

function makeHub(extra: Partial<ConstructorParameters<typeof SocketHub>[0]> = {}): SocketHub {
  return new SocketHub({ url: 'ws://page/api/ws', WebSocket: FakeWebSocket as unknown as typeof WebSocket, ...extra });
}

/** What one follower applied: ids and the text of its deltas. */
function recorder() {
  const ids: string[] = [];
  let text = '';
  return {
    ids,
    text: () => text,
    onEvent: (e: StreamEvent) => {
      ids.push(e.id);
      if (e.event === 'delta') text += e.data.text;
    },
  };
}

const enc = new TextEncoder();
function sse(id: number, event: string, data: unknown): string {
  return `id: ${id}\nevent: ${event}\ndata: ${JSON.stringify(data)}\n\n`;
}
function sseResponse(text: string, onCancel?: () => void): Response {
  const body = new ReadableStream<Uint8Array>({
    start(controller) {
      controller.enqueue(enc.encode(text));
    },
    cancel: onCancel,
  });
  return new Response(body, { headers: { 'content-type': 'text/event-stream' } });
}
const asst = { id: 'a1', parent_id: 'u1', role: 'assistant', content: '', status: 'streaming', created_at: '2026-01-01T00:00:01Z' };

beforeEach(() => {
  vi.useFakeTimers();
  FakeWebSocket.made = [];
  FakeWebSocket.refuse = false;
});
afterEach(() => {
  vi.useRealTimers();
});

describe('SocketHub: one socket, many conversations', () => {
  it('follows two conversations over one socket, routing frames by conversation', async () => {
    const hub = makeHub();
    const a = recorder();
    const b = recorder();
    const endA = hub.follow('A', new EventCursor(), a.onEvent);
    const endB = hub.follow('B', new EventCursor('4'), b.onEvent);
    expect(FakeWebSocket.made).toHaveLength(1);
    const socket = last();
    socket.accept();
    expect(socket.sent).toEqual([
      { type: 'subscribe', conversation_id: 'A', last_event_id: null },
      { type: 'subscribe', conversation_id: 'B', last_event_id: '4' },
    ]);
    // Both logs number their events 5, 6...: only the conversation tells them apart.
    socket.delta('A', 5, 'a5');
    socket.delta('B', 5, 'b5');
    socket.delta('A', 6, 'a6');
    socket.delta('B', 6, 'b6');
    socket.delta('C', 7, 'not followed');
    socket.done('A', 7);
    expect(await endA).toBe('done');
    expect(a.ids).toEqual(['5', '6', '7']);
    expect(a.text()).toBe('a5a6');
    // A stop goes over the socket while B is followed there, and its done ends B.
    expect(hub.stop('B')).toBe(true);
    expect(socket.sent.at(-1)).toEqual({ type: 'stop', conversation_id: 'B' });
    socket.done('B', 7);
    expect(await endB).toBe('done');
    expect(b.text()).toBe('b5b6');
    expect(hub.stop('B')).toBe(false); // no longer followed: the caller stops over HTTP
    // A third chat later reuses the same socket.
    const endC = hub.follow('C', new EventCursor(), () => {});
    expect(FakeWebSocket.made).toHaveLength(1);
    expect(socket.sent.at(-1)).toEqual({ type: 'subscribe', conversation_id: 'C', last_event_id: null });
    socket.done('C', 1);
    expect(await endC).toBe('done');
  });

  it('unsubscribes a chat the page leaves, and closes the socket once unused for a while', async () => {
    const hub = makeHub({ idleMs: 1000 });
    const leave = new AbortController();
    const end = hub.follow('A', new EventCursor(), () => {}, leave.signal);
    const socket = last();
    socket.accept();
    leave.abort();
    expect(await end).toBe('aborted');
    expect(socket.sent.at(-1)).toEqual({ type: 'unsubscribe', conversation_id: 'A' });
    await vi.advanceTimersByTimeAsync(999);
    expect(socket.closedWith).toBeUndefined();
    await vi.advanceTimersByTimeAsync(1);
    expect(socket.closedWith).toBe(1000);
    // The next follow opens a new one.
    void hub.follow('A', new EventCursor(), () => {});
    expect(FakeWebSocket.made).toHaveLength(2);
  });
});

describe('SocketHub: reconnecting', () => {
  it('resumes every subscription from its last applied event, applying none twice', async () => {
    const hub = makeHub();
    const a = recorder();
    const b = recorder();
    const endA = hub.follow('A', new EventCursor(), a.onEvent);
    const endB = hub.follow('B', new EventCursor(), b.onEvent);
    const first = last();
    first.accept();
    first.delta('A', 1, 'He');
    first.delta('A', 2, 'll');
    first.delta('B', 1, 'Wor');
    first.drop(1006); // the network
    await vi.advanceTimersByTimeAsync(250);
    expect(FakeWebSocket.made).toHaveLength(2);
    const second = last();
    second.accept();
    expect(second.sent).toEqual([
      { type: 'subscribe', conversation_id: 'A', last_event_id: '2' },
      { type: 'subscribe', conversation_id: 'B', last_event_id: '1' },
    ]);
    // A replay that overlaps what was applied (as a log read racing the close may).
    second.delta('A', 2, 'll');
    second.delta('A', 3, 'o');
    second.done('A', 4);
    second.delta('B', 1, 'Wor');
    second.delta('B', 2, 'ld');
    second.done('B', 3);
    expect([await endA, await endB]).toEqual(['done', 'done']);
    expect([a.ids, a.text()]).toEqual([['1', '2', '3', '4'], 'Hello']);
    expect([b.ids, b.text()]).toEqual([['1', '2', '3'], 'World']);
  });

  it('subscribes again when a subscription ends before its answer, then gives up as lost', async () => {
    const hub = makeHub({ maxRetries: 2 });
    const end = hub.follow('A', new EventCursor('7'), () => {});
    const socket = last();
    socket.accept();
    for (const wait of [250, 500]) {
      socket.frame('A', null, 'end');
      await vi.advanceTimersByTimeAsync(wait);
      expect(socket.sent.at(-1)).toEqual({ type: 'subscribe', conversation_id: 'A', last_event_id: '7' });
    }
    socket.frame('A', null, 'end');
    expect(await end).toBe('lost');
    expect(socket.sent).toHaveLength(3);
  });

  it('passes on a refused subscription as the HTTP error SSE would give', async () => {
    const hub = makeHub();
    const end = hub.follow('A', new EventCursor(), () => {});
    last().accept();
    last().frame('A', null, 'error', { error: 'no such conversation', status: 404, conversation_id: 'A' });
    await expect(end).rejects.toEqual(new StreamHttpError(404, 'no such conversation'));
  });

  it('ends every follower with a 401 when the session ends (4401), and says so', async () => {
    const loggedOut = vi.fn();
    const hub = makeHub({ onLoggedOut: loggedOut });
    const ends = [hub.follow('A', new EventCursor(), () => {}), hub.follow('B', new EventCursor(), () => {})];
    last().accept();
    last().frame('A', null, 'error', { error: 'the session has ended; log in again', status: 401 });
    last().drop(4401);
    for (const end of ends) await expect(end).rejects.toMatchObject({ status: 401 });
    expect(loggedOut).toHaveBeenCalledOnce();
    expect(hub.usable).toBe(true); // logged in again, the page may open a new socket
    await settle();
    expect(FakeWebSocket.made).toHaveLength(1);
  });
});

describe('SocketHub: falling back to SSE', () => {
  it('gives up when the first socket fails before it opens, and the POST reply is followed over SSE as before', async () => {
    const hub = makeHub();
    const requests: (string | null)[] = [];
    const fakeFetch = (async (_url: string, init?: RequestInit) => {
      requests.push(new Headers(init?.headers).get('Last-Event-ID'));
      return sseResponse('');
    }) as typeof fetch;
    const got = recorder();
    const post = sseResponse(sse(1, 'message', asst) + sse(2, 'delta', { message_id: 'a1', text: 'Hi' }) + sse(3, 'done', { message: { ...asst, status: 'complete' } }));
    const following = followLive(post, { conversationId: 'A', cursor: new EventCursor(), onEvent: got.onEvent, fetch: fakeFetch }, hub);
    last().drop(1006); // a proxy refusing the upgrade: error, then close, before open
    expect(await following).toBe('done');
    expect([got.ids, got.text()]).toEqual([['1', '2', '3'], 'Hi']);
    expect(requests).toEqual([]); // the POST's own stream carried it all
    expect(hub.usable).toBe(false);
    await expect(hub.follow('B', new EventCursor(), () => {})).rejects.toBeInstanceOf(SocketUnavailable);
    expect(await hub.connect()).toBe(false);
    expect(FakeWebSocket.made).toHaveLength(1);
  });

  it('gives up on a first socket that never opens, and follows the POST reply over SSE', async () => {
    const hub = makeHub({ openTimeoutMs: 5000 });
    const got = recorder();
    const post = sseResponse(sse(1, 'message', asst) + sse(2, 'done', { message: { ...asst, status: 'complete' } }));
    const following = followLive(post, { conversationId: 'A', cursor: new EventCursor(), onEvent: got.onEvent }, hub);
    await vi.advanceTimersByTimeAsync(4999);
    expect(got.ids).toEqual([]);
    await vi.advanceTimersByTimeAsync(1);
    expect(await following).toBe('done');
    expect(got.ids).toEqual(['1', '2']);
    expect(last().closedWith).toBeDefined();
    expect(hub.usable).toBe(false);
  });

  it('gives up where the WebSocket constructor throws', async () => {
    FakeWebSocket.refuse = true;
    const hub = makeHub();
    await expect(hub.follow('A', new EventCursor(), () => {})).rejects.toBeInstanceOf(SocketUnavailable);
    expect(hub.usable).toBe(false);
  });

  it('gives up after failing again and again, and SSE resumes from the last applied event', async () => {
    const hub = makeHub({ maxFailures: 3 });
    const requests: (string | null)[] = [];
    const fakeFetch = (async (_url: string, init?: RequestInit) => {
      requests.push(new Headers(init?.headers).get('Last-Event-ID'));
      return sseResponse(sse(2, 'delta', { message_id: 'a1', text: 'lo' }) + sse(3, 'delta', { message_id: 'a1', text: '!' }) + sse(4, 'done', { message: { ...asst, status: 'complete' } }));
    }) as typeof fetch;
    const got = recorder();
    const following = followLive(null, { conversationId: 'A', cursor: new EventCursor(), onEvent: got.onEvent, fetch: fakeFetch }, hub);
    last().accept();
    await settle();
    last().delta('A', 1, 'Hel');
    last().delta('A', 2, 'lo');
    // Opened again and again, each time closed before anything arrives.
    last().drop(1006);
    for (const wait of [250, 250, 500]) {
      await vi.advanceTimersByTimeAsync(wait);
      last().accept();
      last().drop(1006);
    }
    expect(await following).toBe('done');
    expect(FakeWebSocket.made).toHaveLength(4);
    expect(requests).toEqual(['2']);
    expect([got.ids, got.text()]).toEqual([['1', '2', '3', '4'], 'Hello!']);
  });

  it('gives up on a close with an error code (not 4401)', async () => {
    const hub = makeHub();
    const end = hub.follow('A', new EventCursor(), () => {});
    last().accept();
    last().drop(1011);
    await expect(end).rejects.toBeInstanceOf(SocketUnavailable);
  });
});

describe('followLive over the socket', () => {
  it("applies the POST reply's first event, lets its body go and follows the rest on the socket", async () => {
    const hub = makeHub();
    let cancelled = false;
    const post = sseResponse(sse(1, 'message', { ...asst, role: 'user', id: 'u1' }) + sse(2, 'message', asst), () => (cancelled = true));
    const got = recorder();
    const connected = hub.connect();
    last().accept();
    expect(await connected).toBe(true);
    const following = followLive(post, { conversationId: 'A', cursor: new EventCursor(), onEvent: got.onEvent }, hub);
    await settle();
    expect(cancelled).toBe(true);
    expect(last().sent).toEqual([{ type: 'subscribe', conversation_id: 'A', last_event_id: '1' }]);
    last().frame('A', 2, 'message', asst);
    last().delta('A', 3, 'Hi');
    last().done('A', 4);
    expect(await following).toBe('done');
    expect(got.ids).toEqual(['1', '2', '3', '4']);
  });
});
