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
