/**
 * Projects against the real chat app (serve_tiny.py): a project made from the sidebar, a chat
 * started in it (created with its project_id, so the server puts the project's instructions
 * into every prompt: tests/test_app_projects.py reads the prompt itself), another chat moved in
 * and out, rename, collapse, and a delete that moves its chats out.
 */
import { expect, test } from '@playwright/test';
import { ChatPage, signUp } from './chat-page';

test('project create, move and inherit', async ({ page }) => {
  const chat = new ChatPage(page);
  await signUp(page, 'projects-grace@example.com');
  await chat.createProject('Pirate talk', 'Always answer like a pirate.');
  const listed = (await (await page.request.get('/api/projects')).json()) as { data: { id: string; name: string; instructions: string }[] };
  expect(listed.data.map((p) => [p.name, p.instructions])).toEqual([['Pirate talk', 'Always answer like a pirate.']]);
  const projectId = listed.data[0]!.id;

  // A chat started in the project is created in it and shows the instructions it inherits.
  await chat.project('Pirate talk').getByRole('button', { name: '+ Chat in Pirate talk' }).click();
  await expect(chat.projectNote()).toContainText('Pirate talk');
  await expect(chat.projectNote()).toContainText('Always answer like a pirate.');
  const created = page.waitForRequest((r) => r.method() === 'POST' && r.url().endsWith('/api/conversations'));
  await chat.send('ahoy there');
  expect((await created).postDataJSON()).toMatchObject({ project_id: projectId });
  await expect(chat.lastAnswer()).toHaveAttribute('data-status', 'streaming');
  await chat.composer().press('Escape');
  await chat.waitIdle();
  await expect(chat.projectChats('Pirate talk')).toHaveText(['ahoy there']);
  await expect(chat.recentChats()).toHaveCount(0);
  await expect(page).toHaveURL(/\/c\/[0-9a-f-]{36}$/);
  const inside = page.url().split('/c/')[1]!;
  const stored = (await (await page.request.get(`/api/conversations/${inside}`)).json()) as { project_id: string | null };
  expect(stored.project_id).toBe(projectId);

  // A plain new chat starts in no project; moved in, it is listed under the project; out again, not.
  await chat.sidebar().getByRole('button', { name: '+ New chat', exact: true }).click();
  await expect(chat.projectNote()).toHaveCount(0);
  await chat.send('plain question');
  await chat.composer().press('Escape');
  await chat.waitIdle();
  await expect(chat.recentChats()).toHaveText(['plain question']);
  await chat.moveChat('plain question', 'Pirate talk');
  await expect(chat.projectChats('Pirate talk')).toHaveCount(2);
  await expect(chat.recentChats()).toHaveCount(0);
  // The page with a project and its chats passes axe's WCAG 2 AA checks, light and dark.
  const { default: AxeBuilder } = await import('@axe-core/playwright');
  for (const scheme of ['light', 'dark'] as const) {
    await page.emulateMedia({ colorScheme: scheme });
    const result = await new AxeBuilder({ page }).withTags(['wcag2a', 'wcag2aa']).analyze();
    expect(result.violations.map((v) => `${scheme}: ${v.id} ${v.nodes.map((n) => n.target.join(' ')).slice(0, 3).join(', ')}`)).toEqual([]);
  }
  await expect(chat.projectNote()).toContainText('Pirate talk'); // the open chat is in it now
  await chat.moveChat('plain question', 'No project');
  await expect(chat.recentChats()).toHaveText(['plain question']);
  await expect(chat.projectChats('Pirate talk')).toHaveText(['ahoy there']);

  // Rename; collapse and expand; it all holds over a reload.
  await chat.projectAction('Pirate talk', 'Edit project');
  await chat.sidebar().getByLabel('Project name').fill('Sea shanties');
  await chat.sidebar().getByRole('button', { name: 'Save project' }).click();
  await expect(chat.project('Sea shanties')).toBeVisible();
  await page.reload();
  const toggle = chat.project('Sea shanties').getByRole('button', { name: 'Sea shanties', exact: true });
  await expect(chat.projectChats('Sea shanties')).toHaveText(['ahoy there']);
  await toggle.click();
  await expect(toggle).toHaveAttribute('aria-expanded', 'false');
  await expect(chat.projectChats('Sea shanties')).toHaveCount(0);
  await toggle.click();
  await expect(chat.projectChats('Sea shanties')).toHaveText(['ahoy there']);

  // Deleted without its chats: the chat stays, in no project.
  page.once('dialog', (d) => void d.accept());
  await chat.projectAction('Sea shanties', 'Delete project');
  await expect(chat.project('Sea shanties')).toHaveCount(0);
  await expect(chat.recentChats()).toHaveCount(2);
  await page.reload();
  await expect(chat.recentChats()).toHaveCount(2);
  expect(((await (await page.request.get('/api/projects')).json()) as { data: unknown[] }).data).toEqual([]);
});
