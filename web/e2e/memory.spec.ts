/**
 * Custom instructions and memory against the real server (serve_tiny.py): instructions saved
 * in the settings reach a new chat's stored system prompt; a remembered fact is used by the
 * next answer, which says so, and once deleted no new answer uses it.
 */
import AxeBuilder from '@axe-core/playwright';
import { expect, test, type Page } from '@playwright/test';
import { ChatPage, signUp } from './chat-page';

test.describe.configure({ mode: 'serial' });

async function openSettings(page: Page): Promise<void> {
  await page.getByRole('link', { name: 'Settings' }).click();
  await expect(page.getByRole('heading', { name: 'Settings', level: 1 })).toBeVisible();
}

async function newChat(page: Page): Promise<ChatPage> {
  await page.getByRole('link', { name: /Back to chat/ }).click();
  await page.getByRole('button', { name: '+ New chat' }).click();
  return new ChatPage(page);
}

test('custom instructions reach a new chat (its stored system prompt)', async ({ page }) => {
  await signUp(page, 'grace-memory@example.com');
  await openSettings(page);
  await page.getByLabel('What should Fireside know about you?').fill('I keep bees in Lyon.');
  await page.getByLabel('How should it answer?').fill('Answer in French.');
  await page.getByRole('button', { name: 'Save instructions' }).click();
  await expect(page.getByRole('status')).toContainText('Instructions saved');
  await page.reload();
  await expect(page.getByLabel('What should Fireside know about you?')).toHaveValue('I keep bees in Lyon.');

  const chat = await newChat(page);
  await chat.send('Bonjour');
  await chat.waitIdle();
  await page.getByRole('button', { name: 'Chat settings' }).click();
  const system = page.getByLabel('System prompt');
  await expect(system).toHaveValue(/I keep bees in Lyon\./);
  await expect(system).toHaveValue(/Answer in French\./);
  // The server stored it: the conversation as the API gives it holds the same prompt.
  const id = await page.evaluate(() => location.pathname.split('/').pop() ?? '');
  const stored = (await (await page.request.get(`/api/conversations/${id}`)).json()) as { system_prompt: string };
  expect(stored.system_prompt).toContain('About the user:\nI keep bees in Lyon.');
});

test('memory: add a fact, an answer uses it, delete it, the next chat does not', async ({ page }) => {
  await signUp(page, 'ada-memory@example.com');
  await openSettings(page);
  await expect(page.getByLabel(/Use memory/)).toBeChecked();
  await page.getByLabel('New fact').fill('My cat is called Miso.');
  await page.getByRole('button', { name: 'Remember' }).click();
  const facts = page.getByRole('list', { name: 'Memory facts' });
  await expect(facts.getByRole('listitem')).toHaveText([/My cat is called Miso\./]);

  let chat = await newChat(page);
  await chat.send('What is my cat called?');
  await chat.waitIdle();
  await expect(chat.lastAnswer().getByRole('note')).toHaveText('Memory used');
  await page.reload(); // stored with the answer, not only shown while it streamed
  await expect(chat.lastAnswer().getByRole('note')).toHaveText('Memory used');
  const axe = await new AxeBuilder({ page }).withTags(['wcag2a', 'wcag2aa']).analyze();
  expect(axe.violations.map((v) => v.id)).toEqual([]);

  await openSettings(page);
  await page.getByRole('button', { name: 'Delete fact My cat is called Miso.' }).click();
  await expect(facts.getByRole('listitem')).toHaveText(['Nothing remembered yet']);

  chat = await newChat(page);
  await chat.send('And now?');
  await chat.waitIdle();
  await expect(chat.lastAnswer()).toBeVisible();
  await expect(chat.lastAnswer().getByRole('note')).toHaveCount(0);
});

test('"Remember that …" saves a fact as a step of the answer, which Undo takes back', async ({ page }) => {
  await signUp(page, 'lin-memory@example.com');
  const chat = new ChatPage(page);
  await chat.send('Remember that my bike is green.');
  await chat.waitIdle();
  const step = chat.toolSteps().filter({ hasText: 'memory' });
  await expect(step).toContainText('my bike is green.');
  await expect(step).toContainText('Saved to memory');
  await expect(chat.lastAnswer().getByRole('note')).toHaveText('Memory used');

  await openSettings(page);
  const facts = page.getByRole('list', { name: 'Memory facts' });
  await expect(facts.getByRole('listitem')).toHaveText([/my bike is green\./]);
  await page.getByRole('link', { name: /Back to chat/ }).click();
  await chat.recentChats().filter({ hasText: 'Remember that my bike' }).click();
  await page.getByRole('button', { name: 'Undo' }).click();
  await expect(page.getByRole('status').filter({ hasText: 'Removed from memory' })).toBeVisible();
  const left = (await (await page.request.get('/api/memory')).json()) as { data: unknown[] };
  expect(left.data).toEqual([]);
});
