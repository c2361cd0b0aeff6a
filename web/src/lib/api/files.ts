/**
 * Files: upload with progress (XMLHttpRequest: fetch reports no upload progress), list,
 * delete, and the URL of a file's bytes. Errors are the server's envelope as ApiError.
 */
import { api, ApiError, enc } from './client';
import type { FileInfo, Page } from './types';

/** What the file picker offers; the server decides (415 names what it takes). */
export const ACCEPTED_FILES = [
  '.txt', '.md', '.markdown', '.rst', '.csv', '.tsv', '.json', '.jsonl', '.html', '.htm', '.pdf', '.docx',
  '.py', '.js', '.mjs', '.ts', '.tsx', '.jsx', '.svelte', '.java', '.kt', '.c', '.h', '.cc', '.cpp',
  '.hpp', '.cs', '.go', '.rs', '.rb', '.php', '.swift', '.scala', '.sh', '.sql', '.yaml', '.yml',
  '.toml', '.ini', '.cfg', '.xml', '.css', '.scss', '.vue', '.lua', '.r', '.pl', '.hs', '.dart', '.tex', '.log',
].join(',');

export interface UploadFields {
  conversation_id?: string;
  project_id?: string;
}

export type Uploader = (file: File, fields: UploadFields, onProgress: (fraction: number) => void, signal: AbortSignal) => Promise<FileInfo>;

/** The message in the server's error envelope ({"error": {"message"}}), else the status line. */
function xhrError(xhr: XMLHttpRequest): ApiError {
  let message = `${xhr.status} ${xhr.statusText}`.trim();
  try {
    const body = JSON.parse(xhr.responseText) as { error?: { message?: string } | string; detail?: unknown };
    if (typeof body.error === 'string') message = body.error;
    else if (body.error?.message) message = body.error.message;
    else if (typeof body.detail === 'string') message = body.detail;
  } catch {
    /* not JSON: keep the status line */
  }
  return new ApiError(xhr.status, message);
}

/** POST /api/files (multipart `file`, optional `conversation_id` / `project_id`). */
export const uploadFile: Uploader = (file, fields, onProgress, signal) =>
  new Promise((resolve, reject) => {
    const form = new FormData();
    form.append('file', file, file.name);
    for (const [key, value] of Object.entries(fields)) if (value) form.append(key, value);
    const xhr = new XMLHttpRequest();
    xhr.open('POST', '/api/files');
    xhr.setRequestHeader('Accept', 'application/json');
    xhr.withCredentials = true;
    xhr.upload.onprogress = (e) => e.lengthComputable && onProgress(e.loaded / e.total);
    xhr.onload = () => {
      if (xhr.status < 200 || xhr.status >= 300) return reject(xhrError(xhr));
      try {
        resolve(JSON.parse(xhr.responseText) as FileInfo);
      } catch {
        reject(new ApiError(xhr.status, 'The server answered the upload with something that is not JSON.'));
      }
    };
    xhr.onerror = () => reject(new ApiError(0, 'Cannot reach the server. Check your connection and retry.'));
    xhr.onabort = () => reject(new DOMException('Upload cancelled', 'AbortError'));
    signal.addEventListener('abort', () => xhr.abort(), { once: true });
    xhr.send(form);
  });

export function listFiles(filter: UploadFields): Promise<Page<FileInfo>> {
  const query = new URLSearchParams({ limit: '100' });
  for (const [key, value] of Object.entries(filter)) if (value) query.set(key, value);
  return api.get<Page<FileInfo>>(`/api/files?${query}`);
}

export function deleteFile(id: string): Promise<void> {
  return api.delete(`/api/files/${enc(id)}`);
}

/** The file's bytes (a download, or shown inline for safe types such as PDF and text). */
export function fileUrl(id: string): string {
  return `/api/files/${enc(id)}/content`;
}

export function formatSize(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(bytes < 10 * 1024 ? 1 : 0)} KB`;
  return `${(bytes / (1024 * 1024)).toFixed(1)} MB`;
}
