/** JSON over fetch with the server's error envelope turned into one error type. */
import { errorMessage } from '../stream/follow';

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

type Body = object | undefined;

async function call<T>(method: string, path: string, body?: Body, init: RequestInit = {}): Promise<T> {
  const headers: Record<string, string> = { Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let response: Response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: 'same-origin',
      ...init,
    });
  } catch {
    throw new ApiError(0, 'Cannot reach the server. Check your connection and retry.');
  }
  if (!response.ok) throw new ApiError(response.status, await errorMessage(response));
  if (response.status === 204) return undefined as T;
  const type = response.headers.get('content-type') ?? '';
  return (type.includes('json') ? await response.json() : await response.text()) as T;
}

export const api = {
  get: <T>(path: string) => call<T>('GET', path),
  post: <T>(path: string, body?: Body) => call<T>('POST', path, body ?? {}),
  patch: <T>(path: string, body: Body) => call<T>('PATCH', path, body),
  put: <T>(path: string, body: Body) => call<T>('PUT', path, body),
  delete: <T = void>(path: string) => call<T>('DELETE', path),
};

/** A POST whose answer is an event stream (send, regenerate, edit); errors as ApiError. */
export async function postStream(path: string, body: object, method = 'POST', signal?: AbortSignal): Promise<Response> {
  let response: Response;
  try {
    response = await fetch(path, {
      method,
      headers: { 'Content-Type': 'application/json', Accept: 'text/event-stream' },
      body: JSON.stringify(body),
      credentials: 'same-origin',
      signal,
    });
  } catch {
    throw new ApiError(0, 'Cannot reach the server. Check your connection and retry.');
  }
  if (!response.ok) throw new ApiError(response.status, await errorMessage(response));
  return response;
}

export const enc = encodeURIComponent;
