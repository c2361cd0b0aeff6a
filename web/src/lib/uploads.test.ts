import { describe, expect, it } from 'vitest';
import { ApiError } from './api/client';
import type { UploadFields, Uploader } from './api/files';
import type { FileInfo } from './api/types';
import { Uploads } from './uploads.svelte';

/** An uploader the test finishes by hand: the XHR to the server is the boundary. */
function manual() {
  const calls: { file: File; fields: UploadFields; progress: (f: number) => void; signal: AbortSignal; resolve: (f: FileInfo) => void; reject: (e: Error) => void }[] = [];
  const upload: Uploader = (file, fields, progress, signal) =>
    new Promise((resolve, reject) => {
      calls.push({ file, fields, progress, signal, resolve, reject });
      signal.addEventListener('abort', () => reject(new DOMException('Upload cancelled', 'AbortError')));
    });
  return { calls, upload };
}

const file = (name: string, size = 10) => new File(['x'.repeat(size)], name, { type: 'text/plain' });
const info = (id: string, name: string): FileInfo => ({ id, name, size: 10, content_type: 'text/plain', status: 'ready', text_chars: 10, created_at: '2026-01-01T00:00:00Z' });
const tick = () => new Promise((r) => setTimeout(r, 0));

describe('Uploads', () => {
  it('uploads each file at once, shows progress, and sends only stored ids', async () => {
    const { calls, upload } = manual();
    const deleted: string[] = [];
    const uploads = new Uploads(upload, async (id) => void deleted.push(id));
    const all = uploads.add([file('a.txt'), file('b.pdf', 3)], { conversation_id: 'c1' });
    expect(calls.map((c) => [c.file.name, c.fields])).toEqual([
      ['a.txt', { conversation_id: 'c1' }],
      ['b.pdf', { conversation_id: 'c1' }],
    ]);
    expect(uploads.items.map((u) => [u.name, u.size, u.state])).toEqual([
      ['a.txt', 10, 'uploading'],
      ['b.pdf', 3, 'uploading'],
    ]);
    expect(uploads.pending).toBe(true);
    calls[0]?.progress(0.5);
    expect(uploads.items[0]?.progress).toBe(0.5);
    calls[0]?.resolve(info('f-a', 'a.txt'));
    calls[1]?.reject(new ApiError(415, 'Unsupported file type .exe: text, source code, PDF and DOCX files are accepted'));
    await all;
    expect(uploads.pending).toBe(false);
    expect(uploads.items.map((u) => u.state)).toEqual(['done', 'error']);
    expect(uploads.items[1]?.error).toContain('Unsupported file type');
    expect(uploads.ids).toEqual(['f-a']);
    expect(deleted).toEqual([]);
  });

  it('removing a stored file deletes it; removing one under way cancels it', async () => {
    const { calls, upload } = manual();
    const deleted: string[] = [];
    const uploads = new Uploads(upload, async (id) => void deleted.push(id));
    const first = uploads.add([file('a.txt')]);
    calls[0]?.resolve(info('f-a', 'a.txt'));
    await first;
    await uploads.discard(uploads.items[0]!.key);
    expect(deleted).toEqual(['f-a']);
    expect(uploads.items).toEqual([]);

    const second = uploads.add([file('big.csv')]);
    await uploads.discard(uploads.items[0]!.key);
    expect(calls[1]?.signal.aborted).toBe(true);
    await second;
    // A cancelled upload leaves no error chip behind.
    expect(uploads.items).toEqual([]);
    expect(uploads.ids).toEqual([]);
  });

  it('clear() after a send empties the chips without deleting the sent files', async () => {
    const { calls, upload } = manual();
    const deleted: string[] = [];
    const uploads = new Uploads(upload, async (id) => void deleted.push(id));
    const done = uploads.add([file('a.txt')]);
    calls[0]?.resolve(info('f-a', 'a.txt'));
    await done;
    await tick();
    uploads.clear();
    expect(uploads.items).toEqual([]);
    expect(deleted).toEqual([]);
  });
});
