/**
 * Nothing in user input or model output executes. Every payload calls window.__xss (a
 * Playwright binding) or opens a dialog; either fails the test. A control call proves the
 * hook itself works.
 */
import { expect, test } from '@playwright/test';
import { ChatPage } from './chat-page';
import { FakeApi } from './fake-api';
import { CORPUS, watchForExecution } from './xss-corpus';



test('the XSS corpus in user input and model output never executes', async ({ page }) => {
  const fired = await watchForExecution(page);
  // The hook works: a call from the page is seen.
  await page.goto('/');
  await page.evaluate(() => (window as unknown as { __xss: (s: string) => void }).__xss('control'));
  expect(fired).toEqual(['control']);
  fired.length = 0;

  const api = new FakeApi({ answer: () => CORPUS });
  const stored = api.addConversation('stored corpus', [
    { id: 'x1', parent_id: null, role: 'user', content: CORPUS },
    { id: 'x2', parent_id: 'x1', role: 'assistant', content: CORPUS },
  ]);
  await api.install(page);
  const chat = new ChatPage(page);

  // Streamed: the corpus as the user's message and as the model's answer.
  await page.goto('/');
  await chat.composer().fill(CORPUS);
  await chat.composer().press('Enter');
  await expect(chat.lastAnswer().locator('.katex').first()).toBeVisible();
  await expect(chat.lastAnswer().locator('.hljs-tag, .hljs-name').first()).toBeVisible();
  // Stored: opened from the sidebar, and shared.
  await page.goto(`/c/${stored.id}`);
  await expect(chat.lastAnswer().locator('.katex').first()).toBeVisible();
  await page.getByRole('button', { name: 'Share' }).click();
  await page.getByRole('button', { name: 'Create link' }).click();
  const link = await page.getByLabel('Link').inputValue();
  await page.goto(link);
  await expect(page.getByRole('article', { name: 'Answer' })).toBeVisible();
  await page.goto(`/c/${stored.id}`);
  await expect(chat.lastAnswer().locator('.katex').first()).toBeVisible();

  // Provoke what needs a user: hover and click every link and element in the messages.
  for (const el of await page.locator('.messages a, .messages [title], .messages details').all()) {
    await el.hover({ force: true }).catch(() => {});
    await el.click({ force: true, modifiers: ['Alt'] }).catch(() => {});
  }
  await page.waitForLoadState('networkidle');
  expect(fired).toEqual([]);
  // And the DOM holds no live vector: no scripts, handlers or unsafe URLs inside messages.
  const bad = await page.evaluate(() =>
    [...document.querySelectorAll('.messages *')].flatMap((el) => [
      ...(['SCRIPT', 'IFRAME', 'IMG', 'FORM', 'STYLE', 'OBJECT', 'EMBED'].includes(el.tagName) ? [el.tagName] : []),
      ...el.getAttributeNames().filter((a) => a.startsWith('on')),
      ...['href', 'src', 'action', 'xlink:href'].flatMap((a) => {
        const v = el.getAttribute(a);
        return v && !/^(https?:|mailto:)/i.test(v) ? [`${a}=${v}`] : [];
      }),
    ]),
  );
  expect(bad).toEqual([]);
  // The text of the corpus is still shown, as text.
  await expect(chat.userMessages().last()).toContainText('<script>__xss("script")</script>');
});

test('file names and cited passages carrying the corpus never execute: shown as text in chips, links and the citation popover', async ({ page }) => {
  const fired = await watchForExecution(page);
  const payloads = CORPUS.split('\n').filter((p) => p.trim()).slice(0, 8);
  const sources = payloads.map((p, i) => ({ n: i + 1, file_id: `f${i}`, file_name: `${p}.pdf`, passage: 0, page: 1, text: `${p} passage ${p}` }));
  const api = new FakeApi({
    answer: () => payloads.map((_, i) => `Claim ${i + 1} [${i + 1}].`).join(' '),
    tools: [{ name: 'search', arguments: { query: 'x' }, result: 'found', sources }],
  });
  await api.install(page);
  const chat = new ChatPage(page);
  await page.goto('/');
  // The chip of each file named with a payload, as uploaded.
  await chat.attach(payloads.slice(0, 3).map((p, i) => ({ name: `${i}${p.replace(/[/\\]/g, '_')}.txt`, mimeType: 'text/plain', buffer: Buffer.from(p) })));
  await expect(chat.attachedFiles()).toHaveCount(3);
  await chat.send('cite');
  await chat.waitIdle();
  const markers = chat.lastAnswer().locator('.markdown button[data-cite]');
  await expect(markers).toHaveCount(payloads.length);
  for (const [i, marker] of (await markers.all()).entries()) {
    await marker.click();
    const dialog = page.getByRole('dialog');
    await expect(dialog.locator('blockquote')).toHaveText(`${payloads[i]} passage ${payloads[i]}`);
    await dialog.getByRole('button', { name: 'Close' }).click();
  }
  await page.waitForLoadState('networkidle');
  expect(fired).toEqual([]);
  const bad = await page.evaluate(() =>
    // The page's own icons are the only SVG allowed.
    [...document.querySelectorAll('.messages *, .composer *, dialog *')].filter((el) => !el.closest('.icon-svg')).flatMap((el) => [
      ...(['SCRIPT', 'IFRAME', 'IMG', 'FORM', 'STYLE', 'OBJECT', 'EMBED', 'SVG', 'MATH'].includes(el.tagName.toUpperCase()) ? [el.tagName] : []),
      ...el.getAttributeNames().filter((a) => a.startsWith('on')),
    ]),
  );
  expect(bad).toEqual([]);
  await expect(chat.userMessages().last().getByRole('link')).toHaveCount(3);
});
