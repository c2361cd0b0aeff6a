/**
 * The whole path against the real chat app: `fireside serve` with a tiny random model whose
 * answers always run to FIRESIDE_APP_MAX_TOKENS (serve_tiny.py), SQLite in a temporary data
 * directory. Parts whose routes this server does not have yet are skipped, naming the route.
 */
import { expect, test, type Page } from '@playwright/test';
import { ChatPage, signUp } from './chat-page';

let routes = new Set<string>();

test.beforeAll(async ({ request }) => {
  const doc = (await (await request.get('/openapi.json')).json()) as { paths: Record<string, unknown> };
  routes = new Set(Object.keys(doc.paths));
});

function needs(route: string): void {
  test.skip(!routes.has(route), `this server has no ${route} route yet (issue 12, branch app)`);
}

async function streamingAnswer(chat: ChatPage) {
  const answer = chat.lastAnswer();
  await expect(answer).toHaveAttribute('data-status', 'streaming');
  return answer;
}

async function answerLength(page: Page): Promise<number> {
  return (await page.getByRole('article', { name: 'Answer' }).last().innerText()).length;
}

test.describe.configure({ mode: 'serial' });

test('sign up, stream, stop, regenerate, edit into a branch and switch, reload mid-answer, log out', async ({ page }) => {
  needs('/api/auth/signup');
  const chat = new ChatPage(page);
  await signUp(page, 'ada@example.com');

  // Send: the answer streams in (it grows while its status is "streaming"), then Esc stops it.
  await chat.send('Tell me a long story');
  const first = await streamingAnswer(chat);
  const early = await answerLength(page);
  await expect.poll(() => answerLength(page)).toBeGreaterThan(early);
  await chat.composer().press('Escape');
  await expect(first).toHaveAttribute('data-status', 'stopped');
  await expect(first.getByRole('status')).toHaveText('Stopped');
  await expect(page).toHaveURL(/\/c\/[0-9a-f-]{36}$/);

  // Regenerate: a second answer beside the first, ‹ 2/2 ›, and back to 1/2.
  await first.getByRole('button', { name: 'Regenerate' }).click();
  await streamingAnswer(chat);
  await page.getByRole('button', { name: 'Stop answer' }).click();
  await expect(chat.lastAnswer()).toHaveAttribute('data-status', 'stopped');
  await expect(chat.branchPosition()).toContainText('2/2');
  await chat.branchPosition().getByRole('button', { name: 'Previous branch' }).click();
  await expect(chat.branchPosition()).toContainText('1/2');

  // Edit the question: a new branch of the conversation, answered at once.
  await chat.userMessages().first().getByRole('button', { name: 'Edit message' }).click();
  await page.getByLabel('Edit message').fill('A short poem instead');
  await page.getByRole('button', { name: 'Save and send' }).click();
  await streamingAnswer(chat);
  await chat.composer().press('Escape');
  await expect(chat.lastAnswer()).toHaveAttribute('data-status', 'stopped');
  const question = chat.userMessages().first();
  await expect(question).toContainText('A short poem instead');
  await expect(chat.branchPosition(question)).toContainText('2/2');
  const kept = page.waitForResponse((r) => r.request().method() === 'PATCH' && r.url().includes('/api/conversations/'));
  await chat.branchPosition(question).getByRole('button', { name: 'Previous branch' }).click();
  await expect(question).toContainText('Tell me a long story');
  expect((await kept).status()).toBe(200);
  // The server keeps the branch on show: after a reload it is still the first question.
  await page.reload();
  await expect(chat.userMessages().first()).toContainText('Tell me a long story');

  // Reload while an answer is being written: the page follows it again to the end.
  await chat.send('Another long one');
  await streamingAnswer(chat);
  await page.reload();
  const resumed = chat.lastAnswer();
  await expect(resumed).toHaveAttribute('data-status', /streaming|complete/);
  await expect(resumed).toHaveAttribute('data-status', 'complete', { timeout: 60_000 });
  const id = page.url().split('/c/')[1] ?? '';
  const stored = (await (await page.request.get(`/api/conversations/${id}`)).json()) as { messages: { role: string; content: string; status: string }[] };
  const last = stored.messages[stored.messages.length - 1];
  expect(last?.status).toBe('complete');
  expect(last?.content.length).toBeGreaterThan(0);

  // Log out: the session is gone on the server too.
  await page.getByRole('button', { name: 'Log out' }).click();
  await expect(page).toHaveURL(/\/login$/);
  expect((await page.request.get('/api/auth/me')).status()).toBe(401);
});

test('search, feedback, and a share link opened logged out', async ({ page, browser }) => {
  needs('/api/auth/signup');
  const chat = new ChatPage(page);
  await signUp(page, 'grace@example.com');
  await chat.send('zebra crossing question');
  await streamingAnswer(chat);
  await chat.composer().press('Escape');
  await expect(chat.lastAnswer()).toHaveAttribute('data-status', 'stopped');

  await test.step('search', async () => {
    if (!routes.has('/api/search')) return test.info().annotations.push({ type: 'skip', description: 'no /api/search route yet' });
    await page.getByLabel('Search conversations').fill('zebra');
    await expect(page.getByRole('list', { name: 'Search results' }).locator('mark').first()).toHaveText(/zebra/i);
    await page.getByLabel('Search conversations').fill('');
  });

  await test.step('feedback', async () => {
    if (!routes.has('/api/messages/{message_id}/feedback')) return test.info().annotations.push({ type: 'skip', description: 'no feedback route yet' });
    const sent = page.waitForResponse((r) => r.url().endsWith('/feedback'));
    await chat.lastAnswer().getByRole('button', { name: 'Good answer' }).click();
    await page.getByLabel('Reason').selectOption('Correct');
    await page.getByLabel('Comment').fill('nice');
    await page.getByRole('button', { name: 'Send feedback' }).click();
    expect((await sent).status()).toBe(200);
    await expect(chat.lastAnswer().getByRole('button', { name: 'Good answer' })).toHaveAttribute('aria-pressed', 'true');
  });

  await test.step('share', async () => {
    if (!routes.has('/api/conversations/{conversation_id}/share')) return test.info().annotations.push({ type: 'skip', description: 'no share route yet' });
    await page.getByRole('button', { name: 'Share' }).click();
    await page.getByRole('button', { name: 'Create link' }).click();
    const link = await page.getByLabel('Link').inputValue();
    const anonymous = await browser.newContext();
    const visitor = await anonymous.newPage();
    await visitor.goto(link);
    await expect(visitor.getByRole('article', { name: 'User message' })).toContainText('zebra crossing question');
    await anonymous.close();
  });
});
