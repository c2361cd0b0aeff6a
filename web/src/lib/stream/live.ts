/**
 * How the page follows a generation: over the page's one WebSocket (socket.ts) where it can,
 * else over SSE (follow.ts) exactly as before.
 *
 * Operators behind a proxy that does not pass WebSocket, and tests, choose SSE for a browser:
 *   localStorage['fireside.transport'] = 'sse'
 * (read when the page first follows an answer; a reload applies a change). Without it the
 * page tries the socket and falls back to SSE by itself when it cannot be used.
 */
import { readSse } from './sse';
import { isTerminal } from './events';
import { follow, type FollowEnd, type FollowOptions } from './follow';
import { SocketHub, SocketUnavailable, wsUrl } from './socket';

export const TRANSPORT_KEY = 'fireside.transport';

export type Transport = 'ws' | 'sse';

export function chosenTransport(storage: Pick<Storage, 'getItem'> | undefined): Transport {
  try {
    return storage?.getItem(TRANSPORT_KEY) === 'sse' ? 'sse' : 'ws';
  } catch {
    return 'ws'; // storage refused (privacy settings): the default
  }
}

let shared: SocketHub | null | undefined;

/** The page's one socket, made on first use; null where SSE is chosen or WebSocket missing. */
export function pageHub(onLoggedOut: () => void): SocketHub | null {
  if (shared === undefined) {
    const sse = chosenTransport(globalThis.localStorage) === 'sse' || typeof WebSocket === 'undefined';
    shared = sse ? null : new SocketHub({ url: wsUrl(location), onLoggedOut });
  }
  return shared;
}

/**
 * Follows a generation started by `first` (the POST's event stream; null to follow the one
 * running). Over the socket, the POST's first event is applied (it places the cursor in the
 * log, however soon the answer ends) and its body let go; the rest comes over the socket.
 * When the socket is given up, even midway, SSE goes on from the same cursor.
 */
export async function followLive(first: Response | null, opts: FollowOptions, hub: SocketHub | null): Promise<FollowEnd> {
  if (hub && (await hub.connect())) {
    try {
      if (first?.body) {
        const body = first.body;
        first = null;
        const end = await takeFirst(body, opts);
        if (end) return end;
      }
      return await hub.follow(opts.conversationId, opts.cursor, opts.onEvent, opts.signal);
    } catch (e) {
      if (!(e instanceof SocketUnavailable)) throw e;
    }
  }
  return follow(first, opts);
}

/** Applies the stream's first event and cancels the rest; the end when that event ends it. */
async function takeFirst(body: ReadableStream<Uint8Array>, opts: FollowOptions): Promise<FollowEnd | undefined> {
  try {
    for await (const event of readSse(body)) {
      if (!opts.cursor.accept(event)) continue;
      opts.onEvent(event);
      if (isTerminal(event)) return event.event === 'done' ? 'done' : 'error';
      break;
    }
  } catch {
    // A cut body: the socket replays from the cursor (from the running answer's start at worst).
  } finally {
    void body.cancel().catch(() => undefined);
  }
  return opts.signal?.aborted ? 'aborted' : undefined;
}
