/** Presets: saved system prompts (the user's own and those an administrator shared). */
import { api, enc } from './api/client';
import type { Page, Preset, PresetCreate } from './api/types';

class PresetList {
  items = $state<Preset[]>([]);
  loaded = $state(false);

  async load(): Promise<void> {
    const all: Preset[] = [];
    let cursor: string | null = null;
    do {
      const q: string = cursor ? `&cursor=${enc(cursor)}` : '';
      const page: Page<Preset> = await api.get<Page<Preset>>(`/api/presets?limit=100${q}`);
      all.push(...page.data);
      cursor = page.next_cursor;
    } while (cursor);
    this.items = all;
    this.loaded = true;
  }

  async create(preset: PresetCreate): Promise<Preset> {
    const made = await api.post<Preset>('/api/presets', preset);
    this.items = [...this.items, made];
    return made;
  }

  async remove(id: string): Promise<void> {
    await api.delete(`/api/presets/${enc(id)}`);
    this.items = this.items.filter((p) => p.id !== id);
  }
}

export const presets = new PresetList();
