/**
 * The whole path against the real chat app: `fireside serve` with a tiny random model whose
 * answers always run to FIRESIDE_APP_MAX_TOKENS (serve_tiny.py), SQLite in a temporary data
 * directory. Parts whose routes this server does not have yet are skipped, naming the route.
 */
import { expect, test, type Page } from '@playwright/test';
import { ChatPage, signUp } from './chat-page';
import { CORPUS, watchForExecution } from './xss-corpus';

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
  // This server has no OpenID Connect configured: the login page offers no single sign-on.
  const providers = page.waitForResponse((r) => r.url().endsWith('/api/auth/providers'));
  await page.goto('/login');
  expect(await (await providers).json()).toEqual({ password: true, oidc: null });
  await expect(page.getByRole('link', { name: /Sign in with/ })).toHaveCount(0);
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
  // After a reload only the branch on show is loaded; the server's sibling_ids keep ‹ 2/2 ›
  // and switching fetches the other answer.
  const second = await chat.lastAnswer().getAttribute('data-message-id');
  await page.reload();
  await expect(chat.branchPosition()).toContainText('2/2');
  await chat.branchPosition().getByRole('button', { name: 'Previous branch' }).click();
  await expect(chat.branchPosition()).toContainText('1/2');
  await expect(chat.answers()).toHaveCount(1);
  await expect(chat.lastAnswer()).not.toHaveAttribute('data-message-id', second ?? '');
  await chat.branchPosition().getByRole('button', { name: 'Next branch' }).click();
  await expect(chat.branchPosition()).toContainText('2/2');
  await expect(chat.lastAnswer()).toHaveAttribute('data-message-id', second ?? '');
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
  needs('/api/search');
  needs('/api/messages/{message_id}/feedback');
  needs('/api/conversations/{conversation_id}/share');
  const chat = new ChatPage(page);
  await signUp(page, 'grace@example.com');
  await chat.send('zebra crossing question');
  await streamingAnswer(chat);
  await chat.composer().press('Escape');
  await expect(chat.lastAnswer()).toHaveAttribute('data-status', 'stopped');

  await test.step('search', async () => {
    await page.getByLabel('Search conversations').fill('zebra');
    await expect(page.getByRole('list', { name: 'Search results' }).locator('mark').first()).toHaveText(/zebra/i);
    await page.getByLabel('Search conversations').fill('');
  });

  await test.step('feedback', async () => {
    const sent = page.waitForResponse((r) => r.url().endsWith('/feedback'));
    await chat.lastAnswer().getByRole('button', { name: 'Good answer' }).click();
    await page.getByLabel('Reason').selectOption('Correct');
    await page.getByLabel('Comment').fill('nice');
    await page.getByRole('button', { name: 'Send feedback' }).click();
    expect((await sent).status()).toBe(200);
    await expect(chat.lastAnswer().getByRole('button', { name: 'Good answer' })).toHaveAttribute('aria-pressed', 'true');
  });

  await test.step('share', async () => {
    await page.getByRole('button', { name: 'Share' }).click();
    await page.getByRole('button', { name: 'Create link' }).click();
    const link = await page.getByLabel('Link').inputValue();
    const anonymous = await browser.newContext();
    const visitor = await anonymous.newPage();
    await visitor.goto(link);
    await expect(visitor.getByRole('article', { name: 'User message' })).toContainText('zebra crossing question');

    // The link is listed in the settings after its dialog closed, and revoked there.
    await page.getByRole('button', { name: 'Close' }).click();
    await page.getByRole('link', { name: 'Settings' }).click();
    await page.getByRole('button', { name: /^Revoke link to / }).click();
    await expect(page.getByText('No shared links')).toBeVisible();
    await visitor.reload();
    await expect(visitor.getByRole('article', { name: 'User message' })).toHaveCount(0);
    await anonymous.close();
  });
});

test('the sidebar: rename, pin, archive, delete; Ctrl+Shift+O opens a new chat', async ({ page }) => {
  needs('/api/conversations');
  const chat = new ChatPage(page);
  await signUp(page, 'katherine@example.com');
  for (const question of ['first topic', 'second topic']) {
    await page.keyboard.press('Control+Shift+O');
    await expect(page).toHaveURL(/\/$/);
    await expect(chat.composer()).toBeFocused();
    await chat.send(question);
    await streamingAnswer(chat);
    await chat.composer().press('Escape');
    await expect(chat.lastAnswer()).toHaveAttribute('data-status', 'stopped');
  }
  const sidebar = chat.sidebar();
  const item = (name: string | RegExp) => sidebar.getByRole('listitem').filter({ has: page.getByRole('link', { name }) });
  const act = async (name: string | RegExp, action: string) => {
    await item(name).getByLabel(/^Actions for/).click();
    await item(name).getByRole('button', { name: action }).click();
  };
  const listed = sidebar.getByRole('list', { name: /^(Pinned|Recent) conversations$/ }).getByRole('link');
  await expect(listed).toHaveCount(2);

  await act(/first topic/, 'Rename');
  await sidebar.getByLabel('New title').fill('Renamed topic');
  await sidebar.getByLabel('New title').press('Enter');
  await expect(sidebar.getByRole('link', { name: 'Renamed topic' })).toBeVisible();

  await act('Renamed topic', 'Pin');
  await expect(sidebar.getByRole('heading', { name: 'Pinned' })).toBeVisible();
  await page.reload();
  const pinnedBox = await sidebar.getByRole('link', { name: 'Renamed topic' }).boundingBox();
  const otherBox = await sidebar.getByRole('link', { name: /second topic/ }).boundingBox();
  expect(pinnedBox!.y).toBeLessThan(otherBox!.y);

  await act(/second topic/, 'Archive');
  await expect(sidebar.getByRole('link', { name: /second topic/ })).toHaveCount(0);
  await page.reload();
  await expect(sidebar.getByRole('link', { name: /second topic/ })).toHaveCount(0);
  // Archived chats stay reachable, and come back.
  await sidebar.getByText('Archived', { exact: true }).click();
  const archived = sidebar.getByRole('list', { name: 'Archived conversations' });
  await expect(archived.getByRole('link', { name: /second topic/ })).toBeVisible();
  await act(/second topic/, 'Unarchive');
  await expect(archived.getByRole('link')).toHaveCount(0);
  await expect(sidebar.getByRole('list', { name: 'Recent conversations' }).getByRole('link', { name: /second topic/ })).toBeVisible();
  await act(/second topic/, 'Archive');

  page.once('dialog', (d) => void d.accept());
  await act('Renamed topic', 'Delete');
  await expect(listed).toHaveCount(0);
  const left = (await (await page.request.get('/api/conversations')).json()) as { data: unknown[] };
  expect(left.data).toHaveLength(0);
});

test('settings: training consent, a personal API key shown once, export', async ({ page }) => {
  needs('/api/keys');
  await signUp(page, 'hedy@example.com');
  await page.getByRole('link', { name: 'Settings' }).click();
  const consent = page.getByLabel(/Allow my conversations/);
  await expect(consent).not.toBeChecked();
  const saved = page.waitForResponse((r) => r.url().endsWith('/api/settings') && r.request().method() === 'PATCH');
  await consent.check();
  expect((await saved).status()).toBe(200);
  await page.reload();
  await expect(page.getByLabel(/Allow my conversations/)).toBeChecked();

  await page.getByLabel('Key name').fill('laptop');
  await page.getByRole('button', { name: 'Create key' }).click();
  const key = await page.getByLabel('New key').inputValue();
  expect(key.length).toBeGreaterThan(20);
  // The key works as a Bearer token on the API.
  const me = await page.request.get('/api/auth/me', { headers: { Authorization: `Bearer ${key}`, Cookie: '' } });
  expect(me.status()).toBe(200);
  await page.getByRole('button', { name: 'Revoke key laptop' }).click();
  await expect(page.getByRole('cell', { name: /laptop/ })).toHaveCount(0);

  const download = page.waitForEvent('download');
  await page.getByRole('link', { name: /Export all my data/ }).click();
  const exported = JSON.parse(await (await (await download).createReadStream()).toArray().then((b) => Buffer.concat(b).toString())) as { user: { email: string } };
  expect(exported.user.email).toBe('hedy@example.com');
});

test('admin: users, usage and the feedback exports with the train command', async ({ page }) => {
  needs('/api/admin/users');
  await page.goto('/login');
  await page.getByLabel('Email').fill('ada@example.com');
  await page.getByLabel('Password').fill('correct horse battery');
  await page.getByRole('button', { name: 'Log in' }).click();
  await page.getByRole('link', { name: 'Admin' }).click();
  await expect(page.getByRole('region', { name: 'Users' }).getByRole('cell', { name: 'grace@example.com', exact: true })).toBeVisible();
  await expect(page.getByRole('link', { name: 'Download DPO pairs' })).toHaveAttribute('href', '/api/admin/feedback/export?format=dpo');
  await expect(page.locator('pre.command')).toContainText('fireside train dpo');
  // Improving the model: the feedback there is, the start form, and the served base version.
  const improve = page.getByRole('region', { name: 'Improve the model' });
  await expect(improve.getByText(/Consented feedback: \d+ preference pairs/)).toBeVisible();
  await expect(improve.getByRole('button', { name: 'Start training' })).toBeVisible();
  await expect(improve.getByRole('cell', { name: 'base (served)' })).toBeVisible();
  // A connection with a key: saved, and after a reload the key is stored but never shown.
  await page.getByRole('button', { name: 'Add connection' }).click();
  await page.getByLabel('Name', { exact: true }).fill('other');
  await page.getByLabel('Base URL').fill('http://127.0.0.1:9/v1');
  await page.getByLabel(/^API key/).fill('sk-test');
  const put = page.waitForResponse((r) => r.url().endsWith('/api/admin/connections') && r.request().method() === 'PUT');
  await page.getByRole('button', { name: 'Save connections' }).click();
  expect((await put).status()).toBe(200);
  await page.reload();
  await expect(page.getByLabel('Base URL')).toHaveValue('http://127.0.0.1:9/v1');
  await expect(page.getByLabel(/^API key/)).toHaveValue('');
  await expect(page.getByText(/one is stored, encrypted/)).toBeVisible();
  // Token usage per user and model: Ada's answers were counted.
  await expect(page.getByRole('region', { name: 'Usage' }).getByRole('cell', { name: 'ada@example.com', exact: true })).toBeVisible();
  // A non-admin sees no admin link, and the API refuses them.
  await page.getByRole('link', { name: '← Back to chat' }).click();
  await page.getByRole('button', { name: 'Log out' }).click();
  await page.getByLabel('Email').fill('grace@example.com');
  await page.getByLabel('Password').fill('correct horse battery');
  await page.getByRole('button', { name: 'Log in' }).click();
  await expect(page.getByRole('link', { name: 'Settings' })).toBeVisible();
  await expect(page.getByRole('link', { name: 'Admin' })).toHaveCount(0);
  expect((await page.request.get('/api/admin/users')).status()).toBe(403);
});

test('the XSS corpus typed by a user, stored by the real server, never executes', async ({ page }) => {
  needs('/api/auth/signup');
  const fired = await watchForExecution(page);
  const chat = new ChatPage(page);
  await signUp(page, 'mallory@example.com');
  await chat.composer().fill(CORPUS);
  await chat.composer().press('Enter');
  await streamingAnswer(chat);
  await chat.composer().press('Escape');
  await expect(chat.lastAnswer()).toHaveAttribute('data-status', 'stopped');
  await page.reload();
  await expect(chat.userMessages().last()).toContainText('<script>__xss("script")</script>');
  for (const el of await page.locator('.messages a, .messages [title]').all()) await el.hover({ force: true }).catch(() => {});
  expect(fired).toEqual([]);
});

test('model output from the real server: a ChatGPT export carrying the XSS corpus, imported and opened, never executes', async ({ page }) => {
  needs('/api/import');
  const fired = await watchForExecution(page);
  const chat = new ChatPage(page);
  await signUp(page, 'eve@example.com');
  const node = (role: string, parent: string | null, children: string[], text: string | null) => ({
    parent,
    children,
    message: text === null ? null : { author: { role }, content: { content_type: 'text', parts: [text] }, create_time: 1_700_000_000 },
  });
  const exported = [
    {
      title: 'Imported corpus',
      create_time: 1_700_000_000,
      current_node: 'a',
      mapping: { root: node('system', null, ['u'], null), u: node('user', 'root', ['a'], CORPUS), a: node('assistant', 'u', [], CORPUS) },
    },
  ];
  await page.getByRole('link', { name: 'Settings' }).click();
  await page.getByLabel(/Import ChatGPT/).setInputFiles({ name: 'conversations.json', mimeType: 'application/json', buffer: Buffer.from(JSON.stringify(exported)) });
  await expect(page.getByRole('status')).toContainText('Imported 1 conversations');
  await page.getByRole('link', { name: '← Back to chat' }).click();
  await chat.sidebar().getByRole('link', { name: 'Imported corpus' }).click();
  await expect(chat.lastAnswer().locator('.katex').first()).toBeVisible();
  await expect(chat.lastAnswer().locator('.hljs-tag, .hljs-name').first()).toBeVisible();
  for (const el of await page.locator('.messages a, .messages [title], .messages details').all()) {
    await el.hover({ force: true }).catch(() => {});
    await el.click({ force: true, modifiers: ['Alt'] }).catch(() => {});
  }
  await page.waitForLoadState('networkidle');
  expect(fired).toEqual([]);
  await expect(chat.lastAnswer()).toContainText('<script>__xss("script")</script>');
});
