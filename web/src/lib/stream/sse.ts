/** SSE over fetch (EventSource cannot POST or set Last-Event-ID on its first request). */
import { createParser } from 'eventsource-parser';
import { fromSse, type StreamEvent } from './events';

/** The events of one SSE body, in order; ends when the body ends. */
export async function* readSse(body: ReadableStream<Uint8Array>): AsyncGenerator<StreamEvent> {
  const queue: StreamEvent[] = [];
  const parser = createParser({
    onEvent(e) {
      const event = fromSse(e.id, e.event, e.data);
      if (event) queue.push(event);
    },
  });
  const reader = body.getReader();
  const decoder = new TextDecoder();
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      parser.feed(decoder.decode(value, { stream: true }));
      while (queue.length) yield queue.shift() as StreamEvent;
    }
    while (queue.length) yield queue.shift() as StreamEvent;
  } finally {
    reader.releaseLock();
  }
}
