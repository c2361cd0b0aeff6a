import { api, ApiError } from './api/client';
import type { User } from './api/types';

export const session = $state<{ user: User | null; loaded: boolean }>({ user: null, loaded: false });

export async function loadSession(): Promise<void> {
  try {
    session.user = await api.get<User>('/api/auth/me');
  } catch (e) {
    if (!(e instanceof ApiError) || (e.status !== 401 && e.status !== 404)) console.warn(e);
    session.user = null;
  }
  session.loaded = true;
}

export async function logout(): Promise<void> {
  try {
    await api.post('/api/auth/logout');
  } finally {
    session.user = null;
  }
}

/** The server no longer knows this session (a 401, a socket closed with 4401): the app shows
 * the login page (App.svelte). */
export function sessionEnded(): void {
  session.user = null;
}
