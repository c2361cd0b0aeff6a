/**
 * The page in real Chromium, served by a real `fireside serve`, with the /api routes answered
 * by FakeApi (issue 12's contract) so the model's output can be chosen: the XSS corpus, a
 * code answer for the screenshots, streams cut at a known event.
 */
import { expect, test, type Page } from '@playwright/test';
import { mkdirSync, readFileSync } from 'node:fs';
import { ChatPage } from './chat-page';
import { FakeApi } from './fake-api';

// The README's pictures are rewritten only when asked (UPDATE_SCREENSHOTS=1 make e2e): Chromium's
// software rasteriser now and then shades a pixel of an antialiased edge differently, and an
// ordinary run must leave the checkout clean. Otherwise the same shots go to test-results/.
const SHOTS = new URL(
  process.env['UPDATE_SCREENSHOTS'] ? '../../docs/screenshots/' : '../test-results/screenshots/',
  import.meta.url,
).pathname;
mkdirSync(SHOTS, { recursive: true });

const CODE_ANSWER = [
  'Here is a function that reverses words, with a quick check:',
  '',
  '```python',
  'def reverse_words(text: str) -> str:',
  '    """Return the words of `text` in reverse order."""',
  '    return " ".join(reversed(text.split()))',
  '',
  'assert reverse_words("hello big world") == "world big hello"',
  '```',
  '',
  '| Input | Output |',
  '|---|---|',
  '| `"a b"` | `"b a"` |',
  '| `""` | `""` |',
  '',
  'It runs in $O(n)$ time; in general $$\\sum_{i=1}^{n} i = \\frac{n(n+1)}{2}$$',
].join('\n');

test('send, stream, regenerate, edit into a branch, switch branches, search, feedback, share', async ({ page, browser }) => {
  const api = new FakeApi({ answer: (t, n) => `Answer ${n + 1} to **${t}**` });
  await api.install(page);
  const chat = new ChatPage(page);
  await page.goto('/');
  await chat.send('first question');
  await expect(chat.lastAnswer()).toContainText('Answer 1 to first question');
  await expect(chat.lastAnswer().locator('strong')).toHaveText('first question');
  await expect(page).toHaveURL(/\/c\//);
  await expect(chat.sidebar().getByRole('link', { name: 'first question' })).toBeVisible();

  await chat.lastAnswer().getByRole('button', { name: 'Regenerate' }).click();
  await expect(chat.lastAnswer()).toContainText('Answer 2 to first question');
  await expect(chat.branchPosition()).toContainText('2/2');
  await chat.branchPosition().getByRole('button', { name: 'Previous branch' }).click();
  await expect(chat.lastAnswer()).toContainText('Answer 1');
  await expect(chat.branchPosition()).toContainText('1/2');

  await chat.userMessages().first().getByRole('button', { name: 'Edit message' }).click();
  await page.getByLabel('Edit message').fill('edited question');
  await page.getByRole('button', { name: 'Save and send' }).click();
  await expect(chat.lastAnswer()).toContainText('Answer 3 to edited question');
  await expect(chat.branchPosition(chat.userMessages().first())).toContainText('2/2');
  await chat.branchPosition(chat.userMessages().first()).getByRole('button', { name: 'Previous branch' }).click();
  await expect(chat.userMessages().first()).toContainText('first question');
  await expect(chat.lastAnswer()).toContainText('Answer 2 to first question');

  await chat.lastAnswer().getByRole('button', { name: 'Bad answer' }).click();
  await page.getByLabel('Reason').selectOption('Incorrect');
  await page.getByLabel('Comment').fill('wrong number');
  await page.getByRole('button', { name: 'Send feedback' }).click();
  await expect(page.getByRole('dialog')).toBeHidden();
  expect(api.feedback).toEqual([expect.objectContaining({ rating: 'down', reason: 'Incorrect', comment: 'wrong number' })]);

  await page.getByLabel('Search conversations').fill('edited');
  const hit = page.getByRole('list', { name: 'Search results' }).getByRole('link').first();
  await expect(hit.locator('mark')).toHaveText('edited');
  await page.getByLabel('Search conversations').fill('');

  await page.getByRole('button', { name: 'Share' }).click();
  await page.getByRole('button', { name: 'Create link' }).click();
  const link = await page.getByLabel('Link').inputValue();
  expect(link).toMatch(/\/share\/tok/);
  // Logged out (a fresh context, no cookies): the shared snapshot still opens.
  const other = await browser.newContext();
  const visitor = await other.newPage();
  const anon = new FakeApi({ loggedIn: false });
  anon.shares = api.shares;
  await anon.install(visitor);
  await visitor.goto(link);
  await expect(visitor.getByRole('article', { name: 'Answer' })).toContainText('Answer 2 to first question');
  await other.close();
});

test('a cut stream resumes from Last-Event-ID, and a page opened mid-answer follows it to the end', async ({ page }) => {
  const api = new FakeApi({ answer: () => 'one two three four five six seven eight nine ten eleven twelve', cutAfter: 3 });
  await api.install(page);
  const chat = new ChatPage(page);
  await page.goto('/');
  await chat.send('count');
  // The POST body ended after 3 events; the page asked for the rest after event 3.
  await expect(chat.lastAnswer()).toContainText('one two three four five six seven eight nine ten eleven twelve');
  expect(api.streamRequests).toEqual(['3']);
  await expect(chat.lastAnswer().getByRole('button', { name: 'Regenerate' })).toBeVisible();

  // A conversation whose answer is still running when the page loads: it is followed to the end.
  const conv = api.addConversation('running', [{ id: 'ru', parent_id: null, role: 'user', content: 'go' }]);
  const running = { id: 'ra', parent_id: 'ru', role: 'assistant' as const, content: 'par', status: 'streaming', created_at: new Date().toISOString() };
  conv.messages.push(running);
  conv.leaf = 'ra';
  conv.events.push(`id: 1\nevent: message\ndata: ${JSON.stringify({ ...running, content: '' })}\n\n`);
  for (const [i, t] of ['par', 'tial ', 'answer'].entries()) conv.events.push(`id: ${i + 2}\nevent: delta\ndata: ${JSON.stringify({ message_id: 'ra', text: t })}\n\n`);
  conv.events.push(`id: 5\nevent: done\ndata: ${JSON.stringify({ message: { ...running, content: 'partial answer', status: 'complete' } })}\n\n`);
  // A fresh page load (as a reload is): the stored message says streaming, so the page asks for
  // the log; one load only, since that request finishes the fake's generation.
  await page.goto(`/c/${conv.id}`);
  await expect(chat.lastAnswer()).toHaveText(/partial answer/);
  await expect(chat.lastAnswer()).not.toContainText('parpartial');
  expect(api.streamRequests).toHaveLength(2);
});

test('tool calls are collapsible steps inside one answer, which is rated and regenerated as a whole', async ({ page }) => {
  const api = new FakeApi({
    answer: (_t, n) => `The result is **69104** (${n + 1}).`,
    tools: [
      { name: 'calculator', arguments: { expression: '1234 * 56' }, result: '69104' },
      { name: 'python', arguments: { code: 'print(1 / 0)' }, result: 'error: ZeroDivisionError: division by zero' },
    ],
  });
  await api.install(page);
  const chat = new ChatPage(page);
  await page.goto('/');
  await chat.send('what is 1234 * 56?');
  await chat.waitIdle();
  // One answer: the calling message, the tool messages and the text are not boxes of their own.
  await expect(chat.answers()).toHaveCount(1);
  await expect(page.getByText('Result of')).toHaveCount(0);
  const steps = chat.toolSteps();
  await expect(steps).toHaveCount(2);
  await expect(steps.first().locator('summary')).toHaveText(/calculator\s*1234 \* 56\s*→ 69104/);
  await expect(steps.nth(1).locator('summary')).toContainText('failed');
  await expect(steps.first().getByText('"expression": "1234 * 56"')).toBeHidden();
  await steps.first().getByText('calculator').click();
  await expect(steps.first().getByText('"expression": "1234 * 56"')).toBeVisible();
  await expect(steps.first().locator('pre').last()).toHaveText('69104');
  await expect(chat.lastAnswer().locator('strong')).toHaveText('69104');
  // Copy, regenerate and feedback once, for the whole answer.
  for (const name of ['Copy message', 'Regenerate', 'Good answer', 'Bad answer']) {
    await expect(chat.lastAnswer().getByRole('button', { name })).toHaveCount(1);
  }
  await expect(page.getByRole('button', { name: 'Regenerate' })).toHaveCount(1);

  // After a reload the steps are done (the tool messages answer the calls), not running.
  await page.reload();
  await expect(chat.lastAnswer()).toContainText('The result is 69104 (1).');
  await expect(steps).toHaveCount(2);
  await expect(steps.first().locator('summary')).toHaveText(/calculator\s*1234 \* 56\s*→ 69104/);
  await expect(steps.nth(1).locator('summary')).toContainText('failed');
  await expect(chat.lastAnswer()).not.toContainText('running');

  // Regenerate re-runs the turn from its first message (the one after the question).
  const conv = [...api.convs.values()][0];
  const firstAnswer = conv?.messages.find((m) => m.role === 'assistant');
  await chat.lastAnswer().getByRole('button', { name: 'Regenerate' }).click();
  await expect(chat.lastAnswer()).toContainText('The result is 69104 (2).');
  expect(api.regenerated).toEqual([firstAnswer?.id]);
  await expect(chat.branchPosition()).toContainText('2/2');
  await expect(steps).toHaveCount(2);
  await expect(steps.first().locator('summary')).toContainText('→ 69104');

  // Feedback rates the answer's last message, the one with the text.
  await chat.lastAnswer().getByRole('button', { name: 'Good answer' }).click();
  await page.getByRole('button', { name: 'Send feedback' }).click();
  const last = conv?.messages[conv.messages.length - 1];
  expect(last?.role).toBe('assistant');
  expect(api.feedback).toEqual([expect.objectContaining({ message_id: last?.id, rating: 'up' })]);

  // A share link shows the same one answer with its steps.
  await page.getByRole('button', { name: 'Share' }).click();
  await page.getByRole('button', { name: 'Create link' }).click();
  await page.goto(await page.getByLabel('Link').inputValue());
  const shared = page.getByRole('article', { name: 'Answer' });
  await expect(shared).toHaveCount(1);
  await expect(shared).toContainText('The result is 69104 (2).');
  await expect(chat.toolSteps(shared).locator('summary')).toHaveText([/calculator.*→ 69104/, /python.*failed/]);
});

test('a stream cut between tool results resumes into the same one answer', async ({ page }) => {
  const api = new FakeApi({
    answer: () => 'Done: 69104.',
    tools: [
      { name: 'calculator', arguments: { expression: '1234 * 56' }, result: '69104' },
      { name: 'python', arguments: { code: 'print(1 / 0)' }, result: 'error: ZeroDivisionError' },
    ],
    cutAfter: 5, // the question, the calling message, its two calls and the first result
  });
  await api.install(page);
  const chat = new ChatPage(page);
  await page.goto('/');
  await chat.send('compute');
  await expect(chat.lastAnswer()).toContainText('Done: 69104.');
  expect(api.streamRequests).toEqual(['5']);
  await expect(chat.answers()).toHaveCount(1);
  await expect(chat.toolSteps().locator('summary')).toHaveText([/calculator.*→ 69104/, /python.*failed/]);
});

/** axe's WCAG 2 AA checks on the page as it is, in light and dark. */
async function expectAxeClean(page: Page, where: string): Promise<void> {
  const { default: AxeBuilder } = await import('@axe-core/playwright');
  for (const scheme of ['light', 'dark'] as const) {
    await page.emulateMedia({ colorScheme: scheme });
    const result = await new AxeBuilder({ page }).withTags(['wcag2a', 'wcag2aa']).analyze();
    expect(result.violations.map((v) => `${where} (${scheme}): ${v.id} ${v.nodes.map((n) => n.target.join(' ')).slice(0, 3).join(', ')}`)).toEqual([]);
  }
  await page.emulateMedia({ colorScheme: 'light' });
}

test('files attach from the paperclip, a paste and a drop: chips with progress or the server’s refusal, sent as file_ids', async ({ page }) => {
  const api = new FakeApi({
    answer: () => 'Read them.',
    refuseUpload: (name) => (name.endsWith('.exe') ? { status: 415, message: 'Unsupported file type .exe: text, source code, CSV, JSON, HTML, PDF and DOCX files are accepted' } : null),
  });
  await api.install(page);
  const chat = new ChatPage(page);
  await page.goto('/');
  // Uploads are held until the test lets them through, so their progress shows.
  let release: () => void = () => undefined;
  const held = new Promise<void>((r) => (release = r));
  await page.route('**/api/files', async (route) => (await held, route.fallback()));
  const notes = Buffer.from('# Notes\nThe launch is on Tuesday.');
  await chat.attach([
    { name: 'notes.md', mimeType: 'text/markdown', buffer: notes },
    { name: 'tool.exe', mimeType: 'application/octet-stream', buffer: Buffer.from('MZ') },
  ]);
  const chips = chat.attachedFiles();
  await expect(chips).toHaveCount(2);
  await expect(chips.first()).toHaveText(new RegExp(`notes\\.md\\s+${notes.length} B`));
  await expect(chips.first().getByRole('progressbar', { name: 'Uploading notes.md' })).toBeVisible();
  // Nothing is sent before its files are stored.
  await chat.composer().fill('too early');
  await expect(page.getByRole('button', { name: 'Send message' })).toBeDisabled();
  release();
  await expect(chips.first().getByRole('progressbar')).toHaveCount(0);
  await expect(page.getByRole('button', { name: 'Send message' })).toBeEnabled();
  await expect(chips.nth(1).getByRole('alert')).toHaveText(/Unsupported file type \.exe/);
  await expectAxeClean(page, 'chips');
  await page.locator('.composer').screenshot({ path: `${SHOTS}attach-chips.png` });
  // A refused file is removed with its ×; a stored one goes with the message.
  await chips.nth(1).getByRole('button', { name: 'Remove tool.exe' }).click();
  await expect(chips).toHaveCount(1);

  // Pasted and dropped files upload the same way.
  await chat.composer().evaluate((el) => {
    const data = new DataTransfer();
    data.items.add(new File(['a,b\n1,2\n'], 'pasted.csv', { type: 'text/csv' }));
    el.dispatchEvent(new ClipboardEvent('paste', { clipboardData: data, bubbles: true, cancelable: true }));
  });
  const drop = await page.evaluateHandle(() => {
    const data = new DataTransfer();
    data.items.add(new File(['{"a": 1}'], 'dropped.json', { type: 'application/json' }));
    return data;
  });
  const region = page.getByRole('region', { name: 'Chat' });
  await region.dispatchEvent('dragenter', { dataTransfer: drop });
  await expect(page.getByText('Drop files to attach them')).toBeVisible();
  await region.dispatchEvent('drop', { dataTransfer: drop });
  await expect(page.getByText('Drop files to attach them')).toBeHidden();
  await expect(chips).toHaveCount(3);
  await expect(chips).toHaveText([/notes\.md/, /pasted\.csv/, /dropped\.json/]);

  await chat.send('What do these say?');
  await expect(chat.lastAnswer()).toContainText('Read them.');
  await expect(chips).toHaveCount(0);
  const ids = [...api.files.values()].map((f) => f.id);
  expect(api.sent).toEqual([{ content: 'What do these say?', file_ids: ids }]);
  // The question shows its files, each a link to its bytes; after a reload too.
  for (const when of ['live', 'reloaded']) {
    if (when === 'reloaded') await page.reload();
    const attached = chat.userMessages().last().getByRole('list', { name: 'Attachments' }).getByRole('link');
    await expect(attached, when).toHaveText(['notes.md', 'pasted.csv', 'dropped.json']);
    await expect(attached.first()).toHaveAttribute('href', `/api/files/${ids[0]}/content`);
  }
  const download = page.waitForEvent('download');
  await chat.userMessages().last().getByRole('link', { name: 'notes.md' }).click();
  expect((await download).suggestedFilename()).toBe('notes.md');

  // Removing a stored file before sending deletes it on the server.
  await chat.attach([{ name: 'draft.txt', mimeType: 'text/plain', buffer: Buffer.from('draft') }]);
  await expect(chips.first().getByRole('button', { name: 'Remove draft.txt' })).toBeVisible();
  await expect.poll(() => [...api.files.values()].map((f) => f.name)).toContain('draft.txt');
  // In an open chat a file uploads into it.
  const open = [...api.convs.values()][0];
  expect([...api.files.values()].find((f) => f.name === 'draft.txt')?.conversation_id).toBe(open?.id);
  expect([...api.files.values()].find((f) => f.name === 'notes.md')?.conversation_id).toBe(open?.id);
  await chips.first().getByRole('button', { name: 'Remove draft.txt' }).click();
  await expect.poll(() => [...api.files.values()].map((f) => f.name)).not.toContain('draft.txt');
});

const SOURCES = [
  { n: 1, file_id: 'file-r', file_name: 'report.pdf', passage: 3, page: 2, text: 'Revenue grew 12% in 2025. <script>alert(1)</script> **not bold**' },
  { n: 2, file_id: 'file-n', file_name: 'notes.md', passage: 0, page: null, text: 'The launch is on Tuesday.' },
];

test('an answer’s [n] markers are citations: a popover with the passage as text, and the sources listed under it', async ({ page }) => {
  const api = new FakeApi({
    answer: () => 'Revenue grew 12% [1]. The launch is on Tuesday [2]. An old marker [7] and `xs[1]` stay text.',
    tools: [
      { name: 'search', arguments: { query: 'revenue' }, result: '[1] report.pdf (page 2): Revenue grew 12% in 2025.', sources: SOURCES.slice(0, 1) },
      { name: 'search', arguments: { query: 'launch' }, result: '[2] notes.md: The launch is on Tuesday.', sources: SOURCES.slice(1) },
    ],
  });
  await api.install(page);
  const chat = new ChatPage(page);
  await page.goto('/');
  await chat.send('When is the launch and how did revenue do?');
  await chat.waitIdle();
  const answer = chat.lastAnswer();
  for (const when of ['live', 'reloaded']) {
    if (when === 'reloaded') await page.reload();
    await expect(answer.getByRole('button', { name: /^Source \d/ })).toHaveText(['1', '2', '1 report.pdf', '2 notes.md']);
  }
  await expect(answer).toContainText('An old marker [7] and');
  await expect(answer.locator('code')).toHaveText('xs[1]');
  await expect(answer.locator('.sources')).toHaveText(/Sources:\s*1 report\.pdf\s*2 notes\.md/);
  await answer.screenshot({ path: `${SHOTS}citations.png` });

  // Keyboard: focus the marker, Enter opens the passage; Escape closes it and focus returns.
  const marker = answer.locator('.markdown').getByRole('button', { name: 'Source 1: report.pdf' });
  await marker.focus();
  await page.keyboard.press('Enter');
  const dialog = page.getByRole('dialog', { name: 'Source 1: report.pdf' });
  await expect(dialog).toBeVisible();
  await expect(dialog).toContainText('Page 2');
  // The passage is the file's text, shown as text: no markup from it runs or renders.
  await expect(dialog.locator('blockquote')).toHaveText('Revenue grew 12% in 2025. <script>alert(1)</script> **not bold**');
  await expect(dialog.locator('script, strong')).toHaveCount(0);
  await expect(dialog.getByRole('link', { name: 'Open file' })).toHaveAttribute('href', '/api/files/file-r/content');
  await expectAxeClean(page, 'citation');
  await page.screenshot({ path: `${SHOTS}citation.png` });
  await page.keyboard.press('Escape');
  await expect(dialog).toBeHidden();
  await expect(marker).toBeFocused();

  // The list under the answer opens the same passages.
  await answer.getByRole('button', { name: 'Source 2: notes.md' }).last().click();
  await expect(page.getByRole('dialog', { name: 'Source 2: notes.md' }).locator('blockquote')).toHaveText('The launch is on Tuesday.');
  await expect(page.getByRole('dialog')).not.toContainText('Page');
  await page.getByRole('dialog').getByRole('button', { name: 'Close' }).click();
  await expect(page.getByRole('dialog')).toBeHidden();
});

test('a short conversation stays in place; a long one follows the stream only from the bottom', async ({ page }) => {
  const api = new FakeApi({ answer: (t) => (t === 'long' ? Array.from({ length: 60 }, (_, i) => `Paragraph ${i + 1}.`).join('\n\n') : 'A short answer.') });
  // A sidebar taller than the window must not stretch the chat column below it.
  for (let i = 1; i <= 40; i++) api.addConversation(`Older chat ${i}`, []);
  const short = api.addConversation('short', [
    { id: 's1', parent_id: null, role: 'user', content: 'A short question' },
    { id: 's2', parent_id: 's1', role: 'assistant', content: 'A short answer.' },
  ]);
  api.addConversation('other short', [
    { id: 'o1', parent_id: null, role: 'user', content: 'Another question' },
    { id: 'o2', parent_id: 'o1', role: 'assistant', content: 'Another answer.' },
  ]);
  await api.install(page);
  const chat = new ChatPage(page);
  await page.goto(`/c/${short.id}`);
  await expect(chat.lastAnswer()).toContainText('A short answer.');
  await expect(chat.userMessages().first()).toBeInViewport();
  await expect(chat.composer()).toBeInViewport();
  expect(await chat.scrollTop()).toBe(0);
  // Finishing a short answer leaves the question in sight too.
  await chat.send('another short one');
  await chat.waitIdle();
  await expect(chat.answers()).toHaveCount(2);
  await expect(chat.userMessages().first()).toBeInViewport();
  expect(await page.evaluate(() => window.scrollY)).toBe(0);
  expect(await chat.scrollTop()).toBe(0);
  await expect(chat.jumpToLatest()).toBeHidden();

  // A long answer: the view follows it to its end while the reader is at the bottom.
  await chat.send('long');
  await expect(chat.lastAnswer()).toContainText('Paragraph 60.');
  await expect(chat.lastAnswer().getByText('Paragraph 60.')).toBeInViewport();
  await expect(chat.jumpToLatest()).toBeHidden();
  // Scrolled up, the reader stays where they are and is offered the way back.
  await chat.messages().evaluate((el) => el.scrollTo({ top: 0 }));
  await expect(chat.jumpToLatest()).toBeVisible();
  await expect(chat.userMessages().first()).toBeInViewport();
  await chat.jumpToLatest().click();
  await expect(chat.lastAnswer().getByText('Paragraph 60.')).toBeInViewport();
  await expect(chat.jumpToLatest()).toBeHidden();

  // From the long one, another short conversation opens with its question in sight.
  await chat.sidebar().getByRole('link', { name: 'other short' }).click();
  await expect(chat.lastAnswer()).toContainText('Another answer.');
  await expect(chat.userMessages().first()).toBeInViewport();
  expect(await chat.scrollTop()).toBe(0);
});

test('on a phone the composer placeholder fits its box', async ({ page }) => {
  await page.setViewportSize({ width: 375, height: 667 });
  const api = new FakeApi();
  await api.install(page);
  const chat = new ChatPage(page);
  await page.goto('/');
  const box = chat.composer();
  await expect(box).toBeVisible();
  const fit = await box.evaluate((el) => {
    const ta = el as HTMLTextAreaElement;
    const style = getComputedStyle(ta);
    const ctx = document.createElement('canvas').getContext('2d') as CanvasRenderingContext2D;
    ctx.font = `${style.fontStyle} ${style.fontWeight} ${style.fontSize} ${style.fontFamily}`;
    const room = ta.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
    return { text: ta.placeholder, width: ctx.measureText(ta.placeholder).width, room };
  });
  expect(fit.text).toBe('Message Fireside');
  expect(fit.width).toBeLessThanOrEqual(fit.room);
});

test('the sidebar: pinned on top, newest first, the next page loads on scroll', async ({ page }) => {
  const api = new FakeApi();
  api.addConversation('Pinned long ago', [], { pinned: true });
  for (let i = 1; i <= 70; i++) api.addConversation(`Chat number ${i}`, []);
  await api.install(page);
  const chat = new ChatPage(page);
  await page.goto('/');
  const links = chat.sidebar().getByRole('link', { name: /^Chat number/ });
  await expect(links.first()).toHaveText('Chat number 70');
  await expect(links).toHaveCount(30);
  // The oldest conversation is pinned, and still on top once its page has loaded.
  await expect(chat.sidebar().getByRole('link', { name: 'Pinned long ago' })).toHaveCount(0);
  for (const count of [60, 70]) {
    await links.last().scrollIntoViewIfNeeded();
    await expect(links).toHaveCount(count);
  }
  await expect(links.last()).toHaveText('Chat number 1');
  const pinned = chat.sidebar().getByRole('link', { name: 'Pinned long ago' });
  await expect(pinned).toBeVisible();
  const [pinnedBox, firstBox] = [await pinned.boundingBox(), await links.first().boundingBox()];
  expect(pinnedBox!.y).toBeLessThan(firstBox!.y);
});

test('every page passes axe’s WCAG 2 AA checks (labels, contrast, roles) in light and dark', async ({ page }) => {
  const { default: AxeBuilder } = await import('@axe-core/playwright');
  const api = new FakeApi({
    answer: () => CODE_ANSWER,
    tools: [
      { name: 'calculator', arguments: { expression: '1234 * 56' }, result: '69104' },
      { name: 'python', arguments: { code: 'print(1 / 0)' }, result: 'error: ZeroDivisionError' },
    ],
  });
  await api.install(page);
  const chat = new ChatPage(page);
  await page.goto('/');
  await chat.send('Show me some code');
  await expect(chat.lastAnswer().locator('.hljs-keyword').first()).toBeVisible();
  // Tool steps, one of them open, are checked too.
  await chat.toolSteps().first().getByText('calculator').click();
  const check = async (where: string) => {
    const result = await new AxeBuilder({ page }).withTags(['wcag2a', 'wcag2aa']).analyze();
    expect(result.violations.map((v) => `${where}: ${v.id} ${v.nodes.map((n) => n.target.join(' ')).slice(0, 3).join(', ')}`)).toEqual([]);
  };
  for (const scheme of ['light', 'dark'] as const) {
    await page.emulateMedia({ colorScheme: scheme });
    await check(`chat (${scheme})`);
  }
  for (const path of ['/settings', '/admin', '/login']) {
    if (path === '/login') api.loggedIn = false;
    await page.goto(path);
    await expect(page.getByRole('heading', { level: 1 })).toBeVisible();
    await check(path);
  }
});

test('the single sign-on link shows only when the server has it configured', async ({ page }) => {
  const on = new FakeApi({ loggedIn: false, oidc: { name: 'Acme ID', login_url: '/api/auth/oidc/login' } });
  await on.install(page);
  for (const path of ['/login', '/signup']) {
    await page.goto(path);
    await expect(page.getByRole('link', { name: 'Sign in with Acme ID' })).toHaveAttribute('href', '/api/auth/oidc/login');
  }
  await page.unrouteAll({ behavior: 'wait' });
  const off = new FakeApi({ loggedIn: false });
  await off.install(page);
  for (const path of ['/login', '/signup']) {
    const answered = page.waitForResponse((r) => r.url().endsWith('/api/auth/providers'));
    await page.goto(path);
    await answered;
    await expect(page.getByRole('heading', { level: 1 })).toBeVisible();
    await expect(page.getByRole('link', { name: /Sign in with/ })).toHaveCount(0);
  }
});

test('errors show clearly with a retry', async ({ page }) => {
  const api = new FakeApi();
  await api.install(page);
  let fail = true;
  await page.route('**/api/conversations/*/messages', async (route) => {
    if (fail) {
      fail = false;
      return route.fulfill({ status: 429, contentType: 'application/json', headers: { 'Retry-After': '1' }, body: JSON.stringify({ error: { message: 'rate limit reached, retry in 1 s' } }) });
    }
    return route.fallback();
  });
  const chat = new ChatPage(page);
  await page.goto('/');
  await chat.send('hello');
  await expect(page.getByRole('alert')).toContainText('rate limit reached');
  // The message never reached the server; Retry sends it again.
  await page.getByRole('button', { name: 'Retry' }).click();
  await expect(chat.lastAnswer()).toContainText('You said: hello');
});

test('screenshots: light, dark, a code answer, a phone', async ({ page }) => {
  const api = new FakeApi({ answer: () => CODE_ANSWER });
  api.addConversation('Pinned: project notes', [], { pinned: true });
  api.addConversation('Plan a trip to Lisbon', []);
  api.addConversation('Explain KV caches', []);
  await api.install(page);
  await page.setViewportSize({ width: 1280, height: 820 });
  const chat = new ChatPage(page);
  await page.emulateMedia({ colorScheme: 'light' });
  await page.goto('/');
  await chat.send('Write a Python function that reverses the words of a sentence.');
  await expect(chat.lastAnswer().locator('.hljs-keyword').first()).toBeVisible();
  await expect(chat.lastAnswer().locator('.katex').first()).toBeVisible();
  await expect(chat.lastAnswer().getByRole('button', { name: 'Copy code' })).toBeVisible();
  await page.screenshot({ path: `${SHOTS}chat-light.png` });
  await chat.lastAnswer().screenshot({ path: `${SHOTS}code-answer.png` });
  await page.emulateMedia({ colorScheme: 'dark' });
  await page.screenshot({ path: `${SHOTS}chat-dark.png` });
  await page.setViewportSize({ width: 375, height: 740 });
  // No drawer animation, so the pictures show where things end up.
  await page.emulateMedia({ colorScheme: 'light', reducedMotion: 'reduce' });
  await expect(page.getByRole('button', { name: 'Open sidebar' })).toBeVisible();
  await expect(chat.sidebar()).toBeHidden();
  await page.screenshot({ path: `${SHOTS}phone.png` });
  // At 375 px nothing scrolls sideways.
  expect(await page.evaluate(() => document.documentElement.scrollWidth)).toBeLessThanOrEqual(375);
  await page.getByRole('button', { name: 'Open sidebar' }).click();
  await expect(chat.sidebar().getByRole('link', { name: 'Plan a trip to Lisbon' })).toBeInViewport({ ratio: 1 });
  await expect(page.getByRole('button', { name: 'Close sidebar' })).toHaveCSS('background-color', 'rgba(0, 0, 0, 0.4)');
  await page.screenshot({ path: `${SHOTS}phone-sidebar.png` });
});

test('screenshots for the README: a cited answer in a project, a code block run in the sandbox', async ({ page }) => {
  const report = { n: 1, file_id: 'file-r', file_name: 'report.pdf', passage: 3, page: 2, text: 'Revenue grew 12% in 2025, led by the new subscription plans.' };
  const notes = { n: 2, file_id: 'file-n', file_name: 'notes.md', passage: 0, page: null, text: 'The launch moved to Tuesday 14 April.' };
  const api = new FakeApi({
    projects: [{ id: 'p-1', name: 'Quarterly report', instructions: 'Answer from the attached files.' }],
    answer: () => 'Revenue grew **12%** in 2025, led by the new subscription plans [1]. The launch moved to Tuesday 14 April [2].',
    tools: [{ name: 'search', arguments: { query: 'revenue launch' }, result: '[1] report.pdf (page 2): Revenue grew 12%…\n[2] notes.md: The launch moved…', sources: [report, notes] }],
  });
  api.addConversation('Plan a trip to Lisbon', []);
  api.addConversation('Launch checklist', [], { project_id: 'p-1' });
  await api.install(page);
  await page.setViewportSize({ width: 1280, height: 720 });
  await page.emulateMedia({ colorScheme: 'light', reducedMotion: 'reduce' });
  const chat = new ChatPage(page);
  await page.goto('/');
  await chat.attach([{ name: 'report.pdf', mimeType: 'application/pdf', buffer: Buffer.from('%PDF-1.4 stand-in') }]);
  await chat.send('How did revenue do, and when is the launch?');
  await chat.waitIdle();
  await expect(chat.lastAnswer().locator('.sources')).toHaveText(/Sources:\s*1 report\.pdf\s*2 notes\.md/);
  await expect(chat.sidebar().getByRole('region', { name: 'Project Quarterly report' })).toContainText('Launch checklist');
  await page.screenshot({ path: `${SHOTS}cited-answer.png` });

  const png = readFileSync(new URL('./fixtures/chart.png', import.meta.url)).toString('base64');
  const runApi = new FakeApi({
    answer: () => ['Here is the chart:', '', '```python', 'import matplotlib.pyplot as plt', '', 'quarters = ["Q1", "Q2", "Q3", "Q4"]', 'revenue = [3.1, 3.6, 4.0, 4.5]', 'plt.bar(quarters, revenue)', 'plt.title("Revenue by quarter (M€)")', 'plt.savefig("chart.png")', 'print(f"mean {sum(revenue) / 4:.2f}")', '```'].join('\n'),
    run: { stdout: 'mean 3.80\n', stderr: '', exit_status: 0, files: [{ name: 'chart.png', content_type: 'image/png', size: 5907, data_base64: png }] },
  });
  const runPage = await page.context().newPage();
  await runApi.install(runPage);
  await runPage.setViewportSize({ width: 1280, height: 900 });
  await runPage.emulateMedia({ colorScheme: 'light', reducedMotion: 'reduce' });
  const runChat = new ChatPage(runPage);
  await runPage.goto('/');
  await runChat.send('Plot revenue by quarter.');
  await runChat.waitIdle();
  const block = runChat.lastAnswer().locator('.code-block');
  await block.getByRole('button', { name: 'Run', exact: true }).click();
  const output = block.getByRole('region', { name: 'Run output' });
  await expect(output.getByRole('img', { name: 'chart.png' })).toBeVisible();
  await expect(output).toContainText('mean 3.80');
  await runChat.lastAnswer().screenshot({ path: `${SHOTS}run-block.png` });
});

test('screenshot for the README: a finished "improve the model" job, compared with the served model', async ({ page }) => {
  // Figures of the shape the job records (fireside/eval/compare.py): win rate on held-out
  // feedback pairs and bits per byte on held-out answers, for the served model and the new one.
  const at = (minute: number) => new Date(Date.UTC(2026, 11, 6, 9, minute)).toISOString();
  const base = { id: 'v-0', name: 'fireside-tiny', parent_id: null, kind: 'base', path: 'fireside-tiny', method: null, data: {}, metrics: { win_rate: 0.42, bits_per_byte: 1.912 }, created_at: at(0), served: false };
  const v1 = { id: 'v-1', name: 'fireside-tiny@v1', parent_id: 'v-0', kind: 'lora', path: 'improve/j-1', method: 'dpo', data: { dpo_pairs: 212 }, metrics: { win_rate: 0.71, bits_per_byte: 1.934 }, created_at: at(12), served: true };
  const job = { id: 'j-1', status: 'done', options: { method: 'dpo', lora_rank: 16, steps: 200 }, progress: { step: 200, total: 200 }, comparison: { served: base.metrics, candidate: v1.metrics }, error: null, version_id: 'v-1', created_by: 'u-1', created_at: at(2), updated_at: at(12) };
  const api = new FakeApi({ improve: { summary: { dpo_pairs: 212, sft_conversations: 96, questions: 148, running_job: null, served_version: 'fireside-tiny@v1' }, jobs: [job], versions: [v1, base] } });
  await api.install(page);
  await page.setViewportSize({ width: 1280, height: 900 });
  await page.emulateMedia({ colorScheme: 'light', reducedMotion: 'reduce' });
  await page.goto('/admin');
  const section = page.getByRole('region', { name: 'Improve the model' });
  await expect(section.getByRole('button', { name: 'Serve fireside-tiny' })).toBeVisible();
  await expect(section).toContainText('42.0% → 71.0%');
  await section.screenshot({ path: `${SHOTS}improve.png`, timeout: 15_000 });
});
