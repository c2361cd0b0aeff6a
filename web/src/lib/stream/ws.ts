/**
 * The same events over WS /api/ws: subscribe with the last event id, stop a generation.
 * Frames are `{"id", "event", "data"}`; the cursor makes a resubscription exactly-once too.
 */
import { EventCursor, fromFrame, type StreamEvent } from './events';

export interface Subscription {
  stop(): void;
  close(): void;
}

export function wsUrl(location: Pick<Location, 'protocol' | 'host'>): string {
  return `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/api/ws`;
}

export function subscribe(
  socket: WebSocket,
  conversationId: string,
  cursor: EventCursor,
  onEvent: (event: StreamEvent) => void,
): Subscription {
  const send = (msg: object) => socket.send(JSON.stringify(msg));
  const open = () => send({ type: 'subscribe', conversation_id: conversationId, last_event_id: cursor.last ?? null });
  if (socket.readyState === 1) open();
  else socket.addEventListener('open', open, { once: true });
  const onMessage = (e: MessageEvent) => {
    if (typeof e.data !== 'string') return;
    const event = fromFrame(e.data);
    if (!event) return;
    const conv = (event.data as { conversation_id?: string }).conversation_id;
    if (conv !== undefined && conv !== conversationId) return;
    if (cursor.accept(event)) onEvent(event);
  };
  socket.addEventListener('message', onMessage);
  return {
    stop: () => send({ type: 'stop', conversation_id: conversationId }),
    close: () => socket.removeEventListener('message', onMessage),
  };
}
