/** The sidebar's list: pages of conversations, newest first, pinned ones shown on top. */
import { api, enc } from './api/client';
import type { Conversation, Page } from './api/types';

class ConversationList {
  items = $state<Conversation[]>([]);
  cursor = $state<string | null>(null);
  done = $state(false);
  loading = $state(false);
  error = $state<string | null>(null);

  /** Archived conversations, loaded when the reader opens that list. */
  archived = $state<Conversation[] | null>(null);

  pinned = $derived(this.items.filter((c) => c.pinned && !c.archived));
  /** Chats in no project that `isProject` knows of; a project's are listed under it (`inProject`). */
  recent(isProject: (id: string) => boolean): Conversation[] {
    return this.items.filter((c) => !c.pinned && !c.archived && !(c.project_id && isProject(c.project_id)));
  }

  inProject(projectId: string): Conversation[] {
    return this.items.filter((c) => c.project_id === projectId && !c.pinned && !c.archived);
  }

  /** After a project is deleted: its chats are gone, or in no project. Returns the gone ids. */
  leaveProject(projectId: string, deleted: boolean): string[] {
    const gone = deleted ? this.items.filter((c) => c.project_id === projectId).map((c) => c.id) : [];
    const out = (list: Conversation[]) =>
      deleted ? list.filter((c) => c.project_id !== projectId) : list.map((c) => (c.project_id === projectId ? { ...c, project_id: null } : c));
    this.items = out(this.items);
    if (this.archived) this.archived = out(this.archived);
    return gone;
  }

  async more(): Promise<void> {
    if (this.loading || this.done) return;
    this.loading = true;
    this.error = null;
    try {
      const q = this.cursor ? `&cursor=${enc(this.cursor)}` : '';
      const page = await api.get<Page<Conversation>>(`/api/conversations?limit=30${q}`);
      const known = new Set(this.items.map((c) => c.id));
      this.items = [...this.items, ...page.data.filter((c) => !known.has(c.id))];
      this.cursor = page.next_cursor;
      this.done = !page.next_cursor;
    } catch (e) {
      this.error = (e as Error).message;
    } finally {
      this.loading = false;
    }
  }

  async loadArchived(): Promise<void> {
    try {
      this.archived = (await api.get<Page<Conversation>>('/api/conversations?archived=true&limit=100')).data;
    } catch (e) {
      this.error = (e as Error).message;
    }
  }

  reset(): void {
    this.archived = null;
    this.items = [];
    this.cursor = null;
    this.done = false;
  }

  /** A new or changed conversation moves to the top (it is the newest). */
  upsert(c: Conversation): void {
    this.items = [c, ...this.items.filter((x) => x.id !== c.id)];
  }

  /** New values for a listed conversation, in place. */
  refresh(c: Conversation): void {
    this.items = this.items.map((x) => (x.id === c.id ? { ...c, messages: undefined } : x));
  }

  async update(id: string, change: Partial<Conversation>): Promise<Conversation> {
    const updated = await api.patch<Conversation>(`/api/conversations/${enc(id)}`, change);
    const plain = { ...updated, messages: undefined };
    // A temporary chat is never listed, even after its settings change.
    if (!updated.temporary) this.items = this.items.some((c) => c.id === id) ? this.items.map((c) => (c.id === id ? plain : c)) : [plain, ...this.items];
    if (this.archived) {
      const rest = this.archived.filter((c) => c.id !== id);
      this.archived = updated.archived ? [plain, ...rest] : rest;
    }
    return updated;
  }

  async remove(id: string): Promise<void> {
    await api.delete(`/api/conversations/${enc(id)}`);
    this.items = this.items.filter((c) => c.id !== id);
    if (this.archived) this.archived = this.archived.filter((c) => c.id !== id);
  }
}

export const conversations = new ConversationList();
