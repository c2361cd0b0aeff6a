/**
 * Temporary chats and presets against the real server: a temporary chat leaves no trace once
 * the page leaves it, and a preset made in settings becomes a new chat's system prompt.
 */
import { expect, test, type Page } from '@playwright/test';
import { ChatPage, signUp } from './chat-page';

test.describe.configure({ mode: 'serial' });

function conversationId(page: Page): string {
  const id = /\/c\/([0-9a-f-]{36})$/.exec(page.url())?.[1];
  if (!id) throw new Error(`not a conversation's page: ${page.url()}`);
  return id;
}

async function startChat(page: Page, chat: ChatPage, text: string): Promise<string> {
  await chat.send(text);
  await expect(page).toHaveURL(/\/c\/[0-9a-f-]{36}$/);
  await chat.waitIdle();
  return conversationId(page);
}

async function statusOf(page: Page, id: string): Promise<number> {
  return (await page.request.get(`/api/conversations/${id}`)).status();
}

test('a temporary chat leaves no trace in the database after closing', async ({ page }) => {
  const chat = new ChatPage(page);
  await signUp(page, `temp-${Date.now()}@example.com`);
  const word = `quokka${Date.now()}`;
  await page.getByLabel('Temporary chat').check();
  await expect(page.getByText("This chat won't appear in your history")).toBeVisible();
  const id = await startChat(page, chat, `remember ${word}`);
  await expect(page.getByRole('note')).toHaveText('Temporary');

  // While open: its owner reads it, yet no list, search or export shows it.
  expect(await statusOf(page, id)).toBe(200);
  await expect(chat.sidebar().getByRole('list', { name: 'Recent conversations' }).getByRole('listitem')).toHaveCount(0);
  const listed = (await (await page.request.get('/api/conversations')).json()) as { data: { id: string }[] };
  expect(listed.data.map((c) => c.id)).not.toContain(id);
  const hits = (await (await page.request.get(`/api/search?q=${word}`)).json()) as { data: { conversation_id: string }[] };
  expect(hits.data.map((h) => h.conversation_id)).not.toContain(id);
  const exported = (await (await page.request.get('/api/export')).json()) as { conversations: { id: string }[] };
  expect(exported.conversations.map((c) => c.id)).not.toContain(id);

  // Leaving it for a new chat deletes it.
  await page.getByRole('button', { name: '+ New chat' }).click();
  await expect.poll(() => statusOf(page, id)).toBe(404);

  // Closing the page deletes one too (pagehide, a keepalive DELETE).
  const again = await startChat(page, chat, 'one more');
  expect(await statusOf(page, again)).toBe(200);
  await page.goto('about:blank');
  await expect.poll(() => statusOf(page, again)).toBe(404);
});

test('a preset made in settings becomes a new chat system prompt', async ({ page }) => {
  const chat = new ChatPage(page);
  await signUp(page, `preset-${Date.now()}@example.com`);
  await page.goto('/settings');
  const prompt = 'You are a pirate. Answer like one.';
  await page.getByLabel('Preset name').fill('Pirate');
  await page.getByLabel('Preset system prompt').fill(prompt);
  await page.getByRole('button', { name: 'Save preset' }).click();
  await expect(page.getByRole('cell', { name: 'Pirate', exact: true })).toBeVisible();

  await page.goto('/');
  await page.getByLabel('Preset', { exact: true }).selectOption({ label: 'Pirate' });
  const id = await startChat(page, chat, 'Ahoy?');
  const conv = (await (await page.request.get(`/api/conversations/${id}`)).json()) as { system_prompt: string; temporary: boolean };
  expect(conv.system_prompt).toBe(prompt);
  expect(conv.temporary).toBe(false);
  await page.getByRole('button', { name: 'Chat settings' }).click();
  await expect(page.getByLabel('System prompt', { exact: true })).toHaveValue(prompt);
});
