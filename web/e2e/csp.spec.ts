/**
 * Security finding 11: every screen of the real page works under the server's strict
 * Content-Security-Policy with zero violations — sign-up, chat (a streamed answer over the
 * socket), settings (a ChatGPT import), an imported answer with highlighted code and KaTeX
 * math, a share page opened logged out, admin, and the login page after logging out.
 * A control at the end proves the violation listener hears a real violation.
 */
import { expect, test, type BrowserContext, type Page } from '@playwright/test';
import { ChatPage, signUp } from './chat-page';

const MARKDOWN = [
  'Some **bold** text, a [link](https://example.com) and inline math $a^2 + b^2 = c^2$.',
  '',
  '```python',
  'def answer() -> int:',
  '    return 42',
  '```',
  '',
  '$$',
  '\\int_0^1 x^2 \\, dx = \\frac{1}{3}',
  '$$',
].join('\n');

/** Every CSP violation on the pages of `context`, by event and by console message. */
async function watchViolations(context: BrowserContext): Promise<string[]> {
  const seen: string[] = [];
  await context.exposeBinding('__cspViolation', (_source, what: string) => {
    seen.push(what);
  });
  await context.addInitScript(() => {
    document.addEventListener('securitypolicyviolation', (e) => {
      const report = (window as unknown as { __cspViolation: (s: string) => void }).__cspViolation;
      report(`${e.violatedDirective} blocked ${e.blockedURI || 'inline'} at ${e.sourceFile}:${e.lineNumber}`);
    });
  });
  context.on('console', (msg) => {
    if (msg.type() === 'error' && /Content Security Policy/i.test(msg.text())) seen.push(`console: ${msg.text()}`);
  });
  return seen;
}

async function importMarkdown(page: Page): Promise<void> {
  const node = (role: string, parent: string | null, children: string[], text: string | null) => ({
    parent,
    children,
    message: text === null ? null : { author: { role }, content: { content_type: 'text', parts: [text] }, create_time: 1_700_000_000 },
  });
  const exported = [
    {
      title: 'Markdown sample',
      create_time: 1_700_000_000,
      current_node: 'a',
      mapping: { root: node('system', null, ['u'], null), u: node('user', 'root', ['a'], 'show me'), a: node('assistant', 'u', [], MARKDOWN) },
    },
  ];
  await page.getByLabel(/Import ChatGPT/).setInputFiles({ name: 'conversations.json', mimeType: 'application/json', buffer: Buffer.from(JSON.stringify(exported)) });
  await expect(page.getByRole('status')).toContainText('Imported 1 conversations');
}

test('every page works under the strict CSP with no violation', async ({ page, context, browser }) => {
  const violations = await watchViolations(context);
  const chat = new ChatPage(page);

  const first = await page.goto('/signup');
  const policy = first?.headers()['content-security-policy'] ?? '';
  expect(policy).toContain("default-src 'self'");
  expect(policy).toContain("script-src 'self'");
  expect(policy).toContain("frame-ancestors 'none'");
  // The first account of the server is its admin: this one, when the spec runs alone, and
  // another spec's when they share the server.
  await signUp(page, 'csp@example.com');

  await test.step('chat: a streamed answer', async () => {
    await chat.send('hello there');
    await expect(chat.lastAnswer()).toHaveAttribute('data-status', 'streaming');
    await chat.composer().press('Escape');
    await expect(chat.lastAnswer()).toHaveAttribute('data-status', 'stopped');
  });

  await test.step('settings and an import', async () => {
    await page.getByRole('link', { name: 'Settings' }).click();
    await importMarkdown(page);
    await page.getByRole('link', { name: '← Back to chat' }).click();
  });

  await test.step('markdown with code and math', async () => {
    await chat.sidebar().getByRole('link', { name: 'Markdown sample' }).click();
    await expect(chat.lastAnswer().locator('.katex').first()).toBeVisible();
    await expect(chat.lastAnswer().locator('.katex-display')).toBeVisible();
    await expect(chat.lastAnswer().locator('[class*="hljs-"]').first()).toBeVisible();
  });

  await test.step('a share page, logged out', async () => {
    await page.getByRole('button', { name: 'Share' }).click();
    await page.getByRole('button', { name: 'Create link' }).click();
    const link = await page.getByLabel('Link').inputValue();
    const anonymous = await browser.newContext();
    const seenThere = await watchViolations(anonymous);
    const visitor = await anonymous.newPage();
    await visitor.goto(link);
    await expect(visitor.locator('.katex').first()).toBeVisible();
    await visitor.waitForLoadState('networkidle');
    await anonymous.close();
    expect(seenThere).toEqual([]);
    await page.keyboard.press('Escape');
  });

  await test.step('admin', async () => {
    const me = (await (await page.request.get('/api/auth/me')).json()) as { role: string };
    await page.goto('/admin');
    if (me.role === 'admin') {
      await expect(page.getByRole('region', { name: 'Users' }).getByRole('cell', { name: 'csp@example.com', exact: true })).toBeVisible();
    } else {
      await expect(page.getByRole('alert')).toHaveText('this needs an administrator');
    }
    await page.getByRole('link', { name: '← Back to chat' }).click();
  });

  await test.step('log out: the login page', async () => {
    await page.getByRole('button', { name: 'Log out' }).click();
    await expect(page.getByRole('button', { name: 'Log in' })).toBeVisible();
    await page.waitForLoadState('networkidle');
  });

  expect(violations).toEqual([]);

  // Control: an inline script is a violation, and it is heard.
  await page.evaluate(() => {
    const s = document.createElement('script');
    s.textContent = 'window.__ran = true';
    document.body.append(s);
  });
  await expect.poll(() => violations.length).toBeGreaterThan(0);
  expect(await page.evaluate(() => (window as unknown as { __ran?: boolean }).__ran)).toBeUndefined();
});
