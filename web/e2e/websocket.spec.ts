/**
 * How answers reach the page, against the real server: over one WebSocket (WS /api/ws) that
 * every chat shares, resumed after a reload, closed with 4401 on a logout elsewhere (the login
 * page shows); over SSE, exactly as before, where the socket is switched off
 * (localStorage 'fireside.transport' = 'sse') or refused.
 */
import { expect, test, type Page } from '@playwright/test';
import { ChatPage, signUp } from './chat-page';

interface Frame {
  id?: string | null;
  event?: string;
  conversation_id?: string;
  type?: string;
  last_event_id?: string | null;
}

/** Every socket the page opens to /api/ws, with its frames each way. */
function watchSockets(page: Page) {
  const sockets: { received: Frame[]; sent: Frame[] }[] = [];
  page.on('websocket', (ws) => {
    if (!new URL(ws.url()).pathname.endsWith('/api/ws')) return;
    const socket = { received: [] as Frame[], sent: [] as Frame[] };
    sockets.push(socket);
    ws.on('framereceived', (f) => socket.received.push(JSON.parse(String(f.payload)) as Frame));
    ws.on('framesent', (f) => socket.sent.push(JSON.parse(String(f.payload)) as Frame));
  });
  return sockets;
}

/** "METHOD path" of every request the page makes for an event stream, and of stops. */
function watchStreams(page: Page): string[] {
  const seen: string[] = [];
  page.on('request', (r) => {
    const path = new URL(r.url()).pathname;
    if ((r.headers()['accept'] ?? '').includes('text/event-stream') || path.endsWith('/stop')) seen.push(`${r.method()} ${path}`);
  });
  return seen;
}

const email = (name: string) => `${name}-${Date.now()}@example.com`;

async function growing(chat: ChatPage): Promise<void> {
  const answer = chat.lastAnswer();
  await expect(answer).toHaveAttribute('data-status', 'streaming');
  const early = (await answer.innerText()).length;
  await expect.poll(async () => (await answer.innerText()).length).toBeGreaterThan(early);
}

test.describe.configure({ mode: 'serial' });

test('answers stream over one WebSocket: two chats, away and back, a reload mid-answer, a stop, a logout elsewhere', async ({ page }) => {
  const sockets = watchSockets(page);
  const streams = watchStreams(page);
  const chat = new ChatPage(page);
  const events = (cid: string, socket = 0) => (sockets[socket]?.received ?? []).filter((f) => f.id && f.conversation_id === cid);
  const sent = (type: string, cid: string, socket = 0) => (sockets[socket]?.sent ?? []).filter((f) => f.type === type && f.conversation_id === cid);
  await signUp(page, email('sockets'));

  await chat.send('Tell me a long story');
  const a = await chat.chatId();
  await growing(chat);
  expect(events(a).some((f) => f.event === 'delta')).toBe(true);

  // A second chat while the first may still be written: the same socket carries it.
  await page.getByRole('button', { name: '+ New chat' }).click();
  await expect(page).toHaveURL(/\/$/);
  await chat.send('And a second one');
  await expect(page).not.toHaveURL(`/c/${a}`);
  const b = await chat.chatId();
  await growing(chat);
  expect(events(b).some((f) => f.event === 'delta')).toBe(true);
  expect(sent('unsubscribe', a)).toHaveLength(1); // left behind, no longer sent to the page

  // Back to the first: its answer, whole, whether it finished meanwhile or is followed again
  // (on the same socket, from the running answer's start).
  const loaded = page.waitForResponse((r) => r.url().endsWith(`/api/conversations/${a}`) && r.request().method() === 'GET');
  await chat.openChat(a);
  const messages = ((await (await loaded).json()) as { messages: { status: string }[] }).messages;
  const resumed = messages.at(-1)?.status === 'streaming';
  await expect(chat.lastAnswer()).toHaveAttribute('data-status', 'complete', { timeout: 60_000 });
  // Its first subscribe came after the POST's first event; on the way back, from the start.
  const from = sent('subscribe', a).map((f) => f.last_event_id);
  expect(from).toEqual(resumed ? [expect.any(String), null] : [expect.any(String)]);
  expect(sent('unsubscribe', b)).toHaveLength(1);
  expect(sockets).toHaveLength(1);

  // A reload mid-answer: the new page's socket subscribes from the running answer's start,
  // and Escape stops it over that socket.
  await chat.send('A third, reloaded halfway');
  await growing(chat);
  await page.reload();
  await expect(chat.lastAnswer()).toHaveAttribute('data-status', 'streaming');
  await expect.poll(() => sockets.length).toBe(2);
  await expect.poll(() => sent('subscribe', a, 1)).toEqual([{ type: 'subscribe', conversation_id: a, last_event_id: null }]);
  await growing(chat);
  await chat.composer().press('Escape');
  await expect(chat.lastAnswer()).toHaveAttribute('data-status', 'stopped');
  expect(sent('stop', a, 1)).toHaveLength(1);
  expect(events(a, 1).at(-1)?.event).toBe('done');

  // Each answer was started by its POST, and nothing else went over HTTP: no resume, no stop.
  expect(streams).toEqual([`POST /api/conversations/${a}/messages`, `POST /api/conversations/${b}/messages`, `POST /api/conversations/${a}/messages`]);

  // Logged out elsewhere (another tab): the server closes the socket with 4401 within its
  // 5 s re-check, and the page shows the login page.
  expect((await page.request.post('/api/auth/logout')).status()).toBe(200);
  await expect(page).toHaveURL(/\/login$/, { timeout: 15_000 });
});

async function streamsOverSse(page: Page, streams: string[]): Promise<void> {
  const chat = new ChatPage(page);
  await chat.send('Tell me a long story');
  const id = await chat.chatId();
  await growing(chat);
  await page.reload();
  await growing(chat);
  await chat.composer().press('Escape');
  await expect(chat.lastAnswer()).toHaveAttribute('data-status', 'stopped');
  expect(streams).toContain(`POST /api/conversations/${id}/messages`);
  expect(streams).toContain(`GET /api/conversations/${id}/stream`);
  expect(streams).toContain(`POST /api/conversations/${id}/stop`);
}

test('over SSE where the WebSocket is switched off', async ({ page }) => {
  await page.addInitScript(() => localStorage.setItem('fireside.transport', 'sse'));
  const sockets = watchSockets(page);
  const streams = watchStreams(page);
  await signUp(page, email('sse'));
  await streamsOverSse(page, streams);
  expect(sockets).toHaveLength(0);
});

test('over SSE by itself where the WebSocket is refused', async ({ page }) => {
  // A proxy that lets the upgrade through and drops it at once, every time.
  await page.routeWebSocket('**/api/ws', (ws) => ws.close());
  const sockets = watchSockets(page);
  const streams = watchStreams(page);
  await signUp(page, email('refused'));
  await streamsOverSse(page, streams);
  expect(sockets.flatMap((s) => s.received)).toEqual([]);
});
