/**
 * Files in a chat against the real app (serve_scripted.py): real uploads, text extraction and
 * full-text search over the files, with the model scripted to search and then cite source 1 of
 * what it was shown. The page must show the citation that points at the right file and passage.
 */
import { expect, test } from '@playwright/test';
import { readFileSync } from 'node:fs';
import { ChatPage, signUp } from './chat-page';

const FIXTURES = new URL('./fixtures/', import.meta.url).pathname;
const fixture = (name: string) => `${FIXTURES}${name}`;

test.use({ baseURL: `http://127.0.0.1:${process.env['E2E_SCRIPTED_PORT']}` });

test('attach a PDF, a DOCX and a CSV; the answer cites the PDF’s page and passage; a .exe is refused in its chip', async ({ page }) => {
  await signUp(page, `files-${Date.now()}@example.com`);
  const chat = new ChatPage(page);
  const chips = chat.attachedFiles();

  // The server refuses a kind it does not read (415), and the chip says why.
  await chat.attach([{ name: 'setup.exe', mimeType: 'application/octet-stream', buffer: Buffer.from('MZ\x90\x00') }]);
  await expect(chips.first().getByRole('alert')).toContainText('are not read; upload');
  await chips.first().getByRole('button', { name: 'Remove setup.exe' }).click();
  await expect(chips).toHaveCount(0);

  await chat.attach([fixture('report.pdf'), fixture('minutes.docx'), fixture('cities.csv')]);
  await expect(chips).toHaveText([/report\.pdf/, /minutes\.docx/, /cities\.csv/]);
  await expect(chips.getByRole('progressbar')).toHaveCount(0);
  await expect(chips.getByRole('alert')).toHaveCount(0);

  await chat.send('When did the zebra migration peak in Kenya?');
  const answer = chat.lastAnswer();
  await expect(answer).toContainText('According to report.pdf, The zebra migration in Kenya peaked in August with 1.3 million animals');
  await chat.waitIdle();
  await expect(chips).toHaveCount(0);
  await expect(chat.toolSteps().locator('summary')).toHaveText([/search.*zebra migration/]);

  // The question lists its three files, each a link to its bytes.
  const attached = chat.userMessages().last().getByRole('list', { name: 'Attachments' }).getByRole('link');
  await expect(attached).toHaveText(['report.pdf', 'minutes.docx', 'cities.csv']);
  const pdfHref = await attached.first().getAttribute('href');
  expect(pdfHref).toMatch(/^\/api\/files\/[0-9a-f-]+\/content$/);

  for (const when of ['live', 'reloaded']) {
    if (when === 'reloaded') await page.reload();
    const marker = answer.locator('.markdown').getByRole('button', { name: 'Source 1: report.pdf' });
    await expect(marker, when).toHaveText('1');
    await expect(answer.locator('.sources')).toHaveText(/Sources:\s*1 report\.pdf/);
    await marker.click();
    const dialog = page.getByRole('dialog', { name: 'Source 1: report.pdf' });
    await expect(dialog).toContainText('Page 2');
    await expect(dialog.locator('blockquote')).toHaveText('The zebra migration in Kenya peaked in August with 1.3 million animals. Rain came late.');
    // "Open file" is the cited file itself: the attached PDF's bytes.
    await expect(dialog.getByRole('link', { name: 'Open file' })).toHaveAttribute('href', pdfHref ?? '');
    await dialog.getByRole('button', { name: 'Close' }).click();
    await expect(dialog).toBeHidden();
  }
  const content = await page.request.get(pdfHref ?? '');
  expect(content.status()).toBe(200);
  expect(content.headers()['content-type']).toBe('application/pdf');
  expect(Buffer.compare(await content.body(), readFileSync(fixture('report.pdf')))).toBe(0);
});

test('a project’s files: uploaded in its settings, searched by its chats, deleted', async ({ page }) => {
  await signUp(page, `project-files-${Date.now()}@example.com`);
  const chat = new ChatPage(page);
  await chat.createProject('Garden', 'Answer briefly.');
  await chat.projectAction('Garden', 'Edit project');
  const files = chat.sidebar().getByRole('region', { name: 'Files in Garden' });
  await expect(files).toContainText('No files yet');
  const chooser = page.waitForEvent('filechooser');
  await files.getByRole('button', { name: 'Add files' }).click();
  await (await chooser).setFiles([fixture('minutes.docx')]);
  await expect(files.getByRole('link', { name: 'minutes.docx' })).toBeVisible();
  await chat.sidebar().getByRole('button', { name: 'Cancel' }).click();

  await chat.project('Garden').getByRole('button', { name: '+ Chat in Garden' }).click();
  await chat.send('What is the budget for the rooftop garden?');
  await expect(chat.lastAnswer()).toContainText('According to minutes.docx, Garden committee');
  await expect(chat.lastAnswer().locator('.markdown').getByRole('button', { name: 'Source 1: minutes.docx' })).toBeVisible();

  await chat.projectAction('Garden', 'Edit project');
  page.once('dialog', (d) => void d.accept());
  await files.getByRole('button', { name: 'Delete file minutes.docx' }).click();
  await expect(files).toContainText('No files yet');
  // Gone from the server too: the list is read again from it.
  await chat.sidebar().getByRole('button', { name: 'Cancel' }).click();
  await chat.projectAction('Garden', 'Edit project');
  await expect(files).toContainText('No files yet');
});
