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
