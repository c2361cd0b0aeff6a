/**
 * Issue 20, against the real server: "Run" on a Python block of an answer runs it in the
 * sandbox and shows its output and the image it wrote; "Edit" then Run runs the edited code.
 * "Preview" on an HTML block frames it from its own route, sandboxed: its script runs but
 * gets neither the API (fetch fails) nor the session cookie.
 */
import { expect, test, type Page } from '@playwright/test';
import { ChatPage, signUp } from './chat-page';

// An 8x8 red PNG made with the standard library alone.
const PYTHON = [
  'import struct, zlib',
  'def chunk(kind, data):',
  "    return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data))",
  "raw = b''.join(b'\\x00' + b'\\xff\\x00\\x00' * 8 for _ in range(8))",
  "png = b'\\x89PNG\\r\\n\\x1a\\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', 8, 8, 8, 2, 0, 0, 0))",
  "png += chunk(b'IDAT', zlib.compress(raw)) + chunk(b'IEND', b'')",
  "open('red.png', 'wb').write(png)",
  "print('wrote', len(png), 'bytes')",
].join('\n');

const HTML = [
  '<p id="result">waiting</p>',
  '<script>',
  "  const out = document.getElementById('result');",
  '  let cookie;',
  "  try { cookie = JSON.stringify(document.cookie); } catch (e) { cookie = 'blocked (' + e.name + ')'; }",
  "  fetch('/api/auth/me').then((r) => 'fetched ' + r.status, () => 'failed')",
  "    .then((got) => { out.textContent = 'script ran; cookie: ' + cookie + '; fetch: ' + got; });",
  '</script>',
].join('\n');

const ANSWER = ['A plot:', '', '```python', PYTHON, '```', '', 'A page:', '', '```html', HTML, '```'].join('\n');

async function importAnswer(page: Page): Promise<void> {
  const node = (role: string, parent: string | null, children: string[], text: string | null) => ({
    parent,
    children,
    message: text === null ? null : { author: { role }, content: { content_type: 'text', parts: [text] }, create_time: 1_700_000_000 },
  });
  const exported = [
    {
      title: 'Runnable answer',
      create_time: 1_700_000_000,
      current_node: 'a',
      mapping: { root: node('system', null, ['u'], null), u: node('user', 'root', ['a'], 'show me'), a: node('assistant', 'u', [], ANSWER) },
    },
  ];
  await page.getByRole('link', { name: 'Settings' }).click();
  await page.getByLabel(/Import ChatGPT/).setInputFiles({ name: 'conversations.json', mimeType: 'application/json', buffer: Buffer.from(JSON.stringify(exported)) });
  await expect(page.getByRole('status')).toContainText('Imported 1 conversations');
  await page.getByRole('link', { name: '← Back to chat' }).click();
  await new ChatPage(page).sidebar().getByRole('link', { name: 'Runnable answer' }).click();
}

test.beforeEach(async ({ page }) => {
  await signUp(page, `run-${Date.now()}@example.com`);
  await importAnswer(page);
});

test('Run on a Python block shows its output and the image it wrote', async ({ page }) => {
  const block = new ChatPage(page).lastAnswer().locator('.code-block').filter({ hasText: 'import struct' });
  await block.getByRole('button', { name: 'Run', exact: true }).click();
  const output = block.getByRole('region', { name: 'Run output' });
  await expect(output).toContainText(/wrote \d+ bytes/);
  await expect(output).toContainText('Exit status: 0');
  const image = output.getByRole('img', { name: 'red.png' });
  await expect(image).toBeVisible();
  expect(await image.evaluate((img: HTMLImageElement) => img.naturalWidth)).toBe(8);

  // Edit, then run the edited code; the button now says Re-run.
  await block.getByRole('button', { name: 'Edit' }).click();
  await block.getByLabel('Code to run').fill("import sys\nprint('edited')\nsys.exit(2)");
  await block.getByRole('button', { name: 'Re-run' }).click();
  await expect(output).toContainText('edited');
  await expect(output).toContainText('Exit status: 2');
  await expect(output.getByRole('img')).toHaveCount(0);
});

test('Preview of an HTML block: its script runs but gets neither the API nor the cookie', async ({ page }) => {
  const block = new ChatPage(page).lastAnswer().locator('.code-block').filter({ hasText: 'getElementById' });
  await block.getByRole('button', { name: 'Preview' }).click();
  const frame = block.getByRole('region', { name: 'HTML preview' }).locator('iframe');
  await expect(frame).toHaveAttribute('sandbox', 'allow-scripts');
  const result = page.frameLocator('iframe[title="HTML preview"]').locator('#result');
  await expect(result).toContainText('script ran');
  await expect(result).toContainText('fetch: failed');
  await expect(result).toContainText(/cookie: (""|blocked)/);
  await expect(result).not.toContainText('fireside_session');
  // The page itself still holds its session: the preview was refused it, not logged out.
  expect((await page.context().cookies()).some((c) => c.name === 'fireside_session')).toBe(true);
});
