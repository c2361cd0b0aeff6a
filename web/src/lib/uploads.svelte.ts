/**
 * Files being attached: each one uploads the moment it is picked, dropped or pasted, and is a
 * chip with its progress, the server's refusal (too big, unsupported type), or its id once
 * stored. The composer sends the stored ones' ids; removing a stored one deletes it.
 */
import { deleteFile, uploadFile, type Uploader, type UploadFields } from './api/files';
import type { FileInfo } from './api/types';

export type UploadState = 'uploading' | 'done' | 'error';

export interface Upload {
  key: number;
  name: string;
  size: number;
  state: UploadState;
  /** 0..1 while uploading. */
  progress: number;
  error: string | null;
  file: FileInfo | null;
}

export class Uploads {
  items = $state<Upload[]>([]);
  private next = 0;
  private readonly controllers = new Map<number, AbortController>();

  constructor(
    private readonly upload: Uploader = uploadFile,
    private readonly remove: (id: string) => Promise<void> = deleteFile,
  ) {}

  /** Ids of the files stored so far, in the order they were added. */
  get ids(): string[] {
    return this.items.flatMap((u) => (u.state === 'done' && u.file ? [u.file.id] : []));
  }

  get pending(): boolean {
    return this.items.some((u) => u.state === 'uploading');
  }

  /** Starts every file's upload; resolves when all have ended (stored or refused). */
  add(files: Iterable<File>, fields: UploadFields = {}): Promise<void> {
    return Promise.all([...files].map((f) => this.start(f, fields))).then(() => undefined);
  }

  private async start(file: File, fields: UploadFields): Promise<void> {
    const key = this.next++;
    this.items = [...this.items, { key, name: file.name, size: file.size, state: 'uploading', progress: 0, error: null, file: null }];
    const abort = new AbortController();
    this.controllers.set(key, abort);
    try {
      const stored = await this.upload(file, fields, (progress) => this.patch(key, { progress }), abort.signal);
      this.patch(key, { state: 'done', progress: 1, file: stored });
    } catch (e) {
      if (!abort.signal.aborted) this.patch(key, { state: 'error', error: (e as Error).message });
    } finally {
      this.controllers.delete(key);
    }
  }

  private patch(key: number, change: Partial<Upload>): void {
    this.items = this.items.map((u) => (u.key === key ? { ...u, ...change } : u));
  }

  /** The chip's ×: cancels an upload under way, deletes a stored file not yet sent. */
  async discard(key: number): Promise<void> {
    const item = this.items.find((u) => u.key === key);
    this.items = this.items.filter((u) => u.key !== key);
    this.controllers.get(key)?.abort();
    // A failed delete leaves an unsent file behind, which the file list still shows: not worth
    // an error in the composer.
    if (item?.file) await this.remove(item.file.id).catch(() => undefined);
  }

  /** After a send: the chips go; the sent files stay on the server with their message. */
  clear(): void {
    for (const c of this.controllers.values()) c.abort();
    this.controllers.clear();
    this.items = [];
  }
}
