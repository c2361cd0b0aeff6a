/**
 * The sidebar's projects: named groups of conversations whose instructions every chat in
 * them inherits (the server puts them into the prompt). A new chat started from a project
 * is created in it (`startIn`).
 */
import { api, enc } from './api/client';
import type { Page, Project, ProjectCreate, ProjectUpdate } from './api/types';
import { conversations } from './conversations.svelte';

class ProjectList {
  items = $state<Project[]>([]);
  loaded = $state(false);
  error = $state<string | null>(null);
  /** The project the next new chat starts in (null: none). */
  startIn = $state<string | null>(null);

  byId(id: string | null | undefined): Project | undefined {
    return id ? this.items.find((p) => p.id === id) : undefined;
  }

  async load(): Promise<void> {
    try {
      this.items = (await api.get<Page<Project>>('/api/projects?limit=100')).data;
      this.loaded = true;
      this.error = null;
    } catch (e) {
      this.error = (e as Error).message;
    }
  }

  async create(body: ProjectCreate): Promise<Project> {
    const made = await api.post<Project>('/api/projects', body);
    this.items = [made, ...this.items];
    return made;
  }

  async update(id: string, change: ProjectUpdate): Promise<Project> {
    const updated = await api.patch<Project>(`/api/projects/${enc(id)}`, change);
    this.items = this.items.map((p) => (p.id === id ? updated : p));
    return updated;
  }

  /** Deletes the project; its chats with it, or moved out of it. Returns the deleted chats' ids. */
  async remove(id: string, withChats: boolean): Promise<string[]> {
    await api.delete(`/api/projects/${enc(id)}?delete_conversations=${withChats}`);
    this.items = this.items.filter((p) => p.id !== id);
    if (this.startIn === id) this.startIn = null;
    return conversations.leaveProject(id, withChats);
  }

  reset(): void {
    this.items = [];
    this.loaded = false;
    this.startIn = null;
  }
}

export const projects = new ProjectList();
