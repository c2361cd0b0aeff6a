/** Page object: every selector the end-to-end tests use, by role and accessible name. */
import { expect, type Page } from '@playwright/test';

export class ChatPage {
  constructor(readonly page: Page) {}

  composer = () => this.page.getByLabel('Message', { exact: true });
  answers = () => this.page.getByRole('article', { name: 'Answer' });
  userMessages = () => this.page.getByRole('article', { name: 'Your message' });
  lastAnswer = () => this.answers().last();
  messages = () => this.page.getByRole('log', { name: 'Messages' });
  toolSteps = (answer = this.lastAnswer()) => answer.getByRole('list', { name: 'Tool calls' }).getByRole('listitem');
  jumpToLatest = () => this.page.getByRole('button', { name: 'Jump to latest' });
  sidebar = () => this.page.getByRole('navigation', { name: 'Conversations' });
  project = (name: string) => this.sidebar().getByRole('region', { name: `Project ${name}` });
  projectChats = (name: string) => this.sidebar().getByRole('list', { name: `Chats in ${name}` }).getByRole('link');
  recentChats = () => this.sidebar().getByRole('list', { name: 'Recent conversations' }).getByRole('link');
  projectNote = () => this.page.getByRole('note', { name: 'Project' });
  /** The composer's chips: files uploading, stored, or refused. */
  attachedFiles = () => this.page.getByRole('list', { name: 'Attached files' }).getByRole('listitem');

  /** Picks files with the composer's paperclip. */
  async attach(files: { name: string; mimeType: string; buffer: Buffer }[] | string[]): Promise<void> {
    const chooser = this.page.waitForEvent('filechooser');
    await this.page.getByRole('button', { name: 'Attach files' }).click();
    await (await chooser).setFiles(files);
  }

  /** A sidebar item (a chat) by its link's name. */
  chatItem(name: string | RegExp) {
    return this.sidebar().getByRole('listitem').filter({ has: this.page.getByRole('link', { name }) });
  }

  async createProject(name: string, instructions: string): Promise<void> {
    await this.sidebar().getByRole('button', { name: 'New project' }).click();
    await this.sidebar().getByLabel('Project name').fill(name);
    await this.sidebar().getByLabel('Project instructions').fill(instructions);
    await this.sidebar().getByRole('button', { name: 'Create project' }).click();
    await expect(this.project(name)).toBeVisible();
  }

  async projectAction(name: string, action: string): Promise<void> {
    await this.project(name).getByLabel(`Actions for project ${name}`).click();
    await this.project(name).getByRole('button', { name: action, exact: true }).click();
  }

  /** Moves a chat into a project by the project's name ('No project': out of any). */
  async moveChat(chat: string | RegExp, project: string): Promise<void> {
    await this.chatItem(chat).getByLabel(/^Actions for/).click();
    await this.chatItem(chat).getByLabel('Move to project').selectOption({ label: project });
  }

  /** Opens a chat from the sidebar by its id. */
  async openChat(id: string): Promise<void> {
    await this.sidebar().locator(`a[href="/c/${id}"]`).click();
    await expect(this.page).toHaveURL(`/c/${id}`);
  }

  /** The open chat's id, once the page has one. */
  async chatId(): Promise<string> {
    await expect(this.page).toHaveURL(/\/c\/[0-9a-f-]{36}$/);
    return this.page.url().split('/c/')[1] ?? '';
  }

  async send(text: string): Promise<void> {
    await this.composer().fill(text);
    await this.composer().press('Enter');
  }

  async waitIdle(): Promise<void> {
    await expect(this.page.getByRole('button', { name: 'Send message' })).toBeVisible();
  }

  /** How far the message list is scrolled. */
  scrollTop(): Promise<number> {
    return this.messages().evaluate((el) => el.scrollTop);
  }

  branchPosition(message = this.lastAnswer()) {
    return message.getByRole('group', { name: 'Branches' });
  }
}

export async function signUp(page: Page, email: string, password = 'correct horse battery'): Promise<void> {
  await page.goto('/signup');
  await page.getByLabel('Name').fill(email.split('@')[0] ?? 'user');
  await page.getByLabel('Email').fill(email);
  await page.getByLabel('Password').fill(password);
  await page.getByRole('button', { name: 'Sign up' }).click();
  await expect(page.getByRole('button', { name: '+ New chat' })).toBeVisible();
}
