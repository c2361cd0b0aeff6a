/**
 * One WebSocket (WS /api/ws) for every conversation the page follows: a subscription per
 * conversation, made from its cursor's last applied event. When the socket drops it is opened
 * again (with backoff) and every subscription made again from its cursor, so no event is lost
 * and the cursor applies none twice. An answer is stopped over the same socket.
 *
 * The socket gives way to SSE: when it cannot be opened at all (a proxy without WebSocket: the
 * first one fails, or hangs, before it opens), is closed with an error, or fails `maxFailures` times in a
 * row without delivering anything, the hub gives up for the page's life and every follower
 * rejects with SocketUnavailable, so its caller goes on over SSE from the same cursor. A close
 * with 4401 means the session ended: followers reject with a 401, as the SSE routes answer.
 */
import { fromFrame, isTerminal, type EventCursor, type StreamEvent } from './events';
import { StreamHttpError, type FollowEnd } from './follow';

/** The socket cannot be used (now or for the page's life): follow over SSE instead. */
export class SocketUnavailable extends Error {
  constructor() {
    super('WebSocket unavailable');
  }
}

export interface HubOptions {
  url: string;
  /** The WebSocket constructor (tests pass a fake one). */
  WebSocket?: typeof WebSocket;
  /** Closes in a row, none of them after an event arrived, before the socket is given up. */
  maxFailures?: number;
  /** Subscriptions in a row that end before their answer does (as SSE's maxRetries). */
  maxRetries?: number;
  /** How long an unused socket stays open: switching back to a chat reuses it. */
  idleMs?: number;
  /** How long a socket may take to open before it counts as failed (a proxy that hangs it). */
  openTimeoutMs?: number;
  /** The socket was closed with 4401 (the session ended), whether or not anything followed. */
  onLoggedOut?: () => void;
}

const LOGGED_OUT = 4401;
// Closes after which the same socket may well open again: normal, going away (a restart),
// abnormal (the network), service restart, try again later. Any other close is an error the
// socket would repeat, and SSE answers it properly (a status, a message).
const TRANSIENT = new Set([1000, 1001, 1005, 1006, 1012, 1013]);

const backoff = (n: number) => Math.min(4000, 250 * 2 ** Math.max(0, n - 1));

class Follower {
  retries = 0; // subscriptions ended early in a row
  timer: ReturnType<typeof setTimeout> | undefined;
  constructor(
    readonly conversationId: string,
    readonly cursor: EventCursor,
    readonly onEvent: (event: StreamEvent) => void,
    readonly settle: (end: FollowEnd | Error) => void,
  ) {}
}

export class SocketHub {
  private socket: WebSocket | null = null;
  private isOpen = false;
  private everOpened = false;
  private broken = false;
  private failures = 0;
  private delivered = false; // an event arrived since the socket last opened
  private reconnect: ReturnType<typeof setTimeout> | undefined;
  private idle: ReturnType<typeof setTimeout> | undefined;
  private readonly followers = new Map<string, Follower>();
  private waiting: ((open: boolean) => void)[] = [];
  private readonly WS: typeof WebSocket;

  constructor(private readonly options: HubOptions) {
    this.WS = options.WebSocket ?? globalThis.WebSocket;
  }

  /** False once the hub has given up: follow over SSE. */
  get usable(): boolean {
    return !this.broken;
  }

  /** Opens the socket if it is not open: true once it is, false when it cannot be used. */
  connect(): Promise<boolean> {
    if (this.broken) return Promise.resolve(false);
    if (this.isOpen) return Promise.resolve(true);
    const opened = new Promise<boolean>((resolve) => this.waiting.push(resolve));
    if (!this.socket && this.reconnect === undefined) this.open();
    return opened;
  }

  /**
   * Follows one conversation until its answer's `done` or `error` (or 'lost', 'aborted', as
   * follow.ts does). Rejects with SocketUnavailable when the hub gives up, with a
   * StreamHttpError when the server refuses the subscription (404, 400) or the session ended.
   */
  follow(conversationId: string, cursor: EventCursor, onEvent: (event: StreamEvent) => void, signal?: AbortSignal): Promise<FollowEnd> {
    if (this.broken) return Promise.reject(new SocketUnavailable());
    if (signal?.aborted) return Promise.resolve('aborted');
    return new Promise<FollowEnd>((resolve, reject) => {
      // The page follows a conversation once: a newer follower replaces the older.
      this.followers.get(conversationId)?.settle('aborted');
      const onAbort = () => {
        this.send({ type: 'unsubscribe', conversation_id: conversationId });
        follower.settle('aborted');
      };
      const follower = new Follower(conversationId, cursor, onEvent, (end) => {
        clearTimeout(follower.timer);
        signal?.removeEventListener('abort', onAbort);
        if (this.followers.get(conversationId) === follower) this.followers.delete(conversationId);
        if (!this.followers.size) this.idleLater();
        if (end instanceof Error) reject(end);
        else resolve(end);
      });
      signal?.addEventListener('abort', onAbort, { once: true });
      this.followers.set(conversationId, follower);
      clearTimeout(this.idle);
      if (this.isOpen) this.subscribe(follower);
      else if (!this.socket && this.reconnect === undefined) this.open();
    });
  }

  /** Stops the answer over the socket; false when this conversation is not followed on it. */
  stop(conversationId: string): boolean {
    if (!this.isOpen || !this.followers.has(conversationId)) return false;
    this.send({ type: 'stop', conversation_id: conversationId });
    return true;
  }

  private open(): void {
    let socket: WebSocket;
    try {
      socket = new this.WS(this.options.url);
    } catch {
      this.giveUp(); // a bad URL, or a page where WebSocket is refused outright
      return;
    }
    this.socket = socket;
    const hung = setTimeout(() => {
      if (socket !== this.socket || this.isOpen) return;
      socket.close();
      this.onClose(1006);
    }, this.options.openTimeoutMs ?? 5000);
    socket.addEventListener('open', () => {
      clearTimeout(hung);
      if (socket !== this.socket) return;
      this.isOpen = this.everOpened = true;
      this.delivered = false;
      for (const f of this.followers.values()) this.subscribe(f);
      this.settleWaiting(true);
      if (!this.followers.size) this.idleLater();
    });
    socket.addEventListener('message', (e: MessageEvent) => {
      if (socket === this.socket && typeof e.data === 'string') this.onFrame(e.data);
    });
    socket.addEventListener('close', (e: CloseEvent) => {
      clearTimeout(hung);
      if (socket === this.socket) this.onClose(e.code);
    });
  }

  private onFrame(text: string): void {
    const frame = fromFrame(text);
    const follower = frame && this.followers.get(frame.conversationId);
    if (!frame || !follower) return;
    if (frame.kind === 'end') {
      // The server's subscription ended before the answer did (nothing runs, or it was cut):
      // subscribe again from the cursor, as SSE opens the resume route again.
      follower.retries += 1;
      if (follower.retries > (this.options.maxRetries ?? 5)) follower.settle('lost');
      else follower.timer = setTimeout(() => this.subscribe(follower), backoff(follower.retries));
    } else if (frame.kind === 'refused') {
      // A revoked session's close (4401) follows its refusal, and ends every follower at once.
      if (frame.status !== 401) follower.settle(new StreamHttpError(frame.status, frame.message));
    } else if (follower.cursor.accept(frame.event)) {
      follower.retries = this.failures = 0;
      this.delivered = true;
      follower.onEvent(frame.event);
      if (isTerminal(frame.event)) follower.settle(frame.event.event === 'done' ? 'done' : 'error');
    }
  }

  private onClose(code: number): void {
    this.socket = null;
    this.isOpen = false;
    if (code === LOGGED_OUT) {
      this.settleWaiting(false);
      this.endAll(new StreamHttpError(401, 'The session has ended; log in again.'));
      this.options.onLoggedOut?.();
      return;
    }
    if (!this.everOpened || !TRANSIENT.has(code)) return this.giveUp();
    if (!this.delivered) this.failures += 1;
    if (this.failures >= (this.options.maxFailures ?? 3)) return this.giveUp();
    if (!this.followers.size && !this.waiting.length) return; // the next follow opens one
    this.reconnect = setTimeout(() => {
      this.reconnect = undefined;
      this.open();
    }, backoff(this.failures));
  }

  private subscribe(f: Follower): void {
    if (this.followers.get(f.conversationId) !== f) return;
    this.send({ type: 'subscribe', conversation_id: f.conversationId, last_event_id: f.cursor.last ?? null });
  }

  private send(command: object): void {
    if (this.isOpen) this.socket?.send(JSON.stringify(command));
  }

  private giveUp(): void {
    this.broken = true;
    clearTimeout(this.reconnect);
    clearTimeout(this.idle);
    const socket = this.socket;
    this.socket = null;
    this.isOpen = false;
    socket?.close();
    this.settleWaiting(false);
    this.endAll(new SocketUnavailable());
  }

  private endAll(error: Error): void {
    for (const f of [...this.followers.values()]) f.settle(error);
  }

  private settleWaiting(open: boolean): void {
    const waiting = this.waiting;
    this.waiting = [];
    for (const resolve of waiting) resolve(open);
  }

  /** An unused socket is closed after a while (the server re-checks its session every 5 s). */
  private idleLater(): void {
    clearTimeout(this.idle);
    this.idle = setTimeout(() => {
      if (this.followers.size || !this.socket) return;
      const socket = this.socket;
      this.socket = null;
      this.isOpen = false;
      socket.close(1000);
    }, this.options.idleMs ?? 60_000);
  }
}

export function wsUrl(location: Pick<Location, 'protocol' | 'host'>): string {
  return `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/api/ws`;
}
