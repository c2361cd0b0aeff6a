/** History-API routing for a handful of pages; the server answers index.html for them. */
export type Route =
  | { page: 'chat'; id: string | null }
  | { page: 'login' }
  | { page: 'signup' }
  | { page: 'settings' }
  | { page: 'admin' }
  | { page: 'share'; token: string };

export function parseRoute(pathname: string): Route {
  const parts = pathname.split('/').filter(Boolean).map(decodeURIComponent);
  switch (parts[0]) {
    case 'login':
      return { page: 'login' };
    case 'signup':
      return { page: 'signup' };
    case 'settings':
      return { page: 'settings' };
    case 'admin':
      return { page: 'admin' };
    case 'share':
      return { page: 'share', token: parts[1] ?? '' };
    case 'c':
      return { page: 'chat', id: parts[1] ?? null };
    default:
      return { page: 'chat', id: null };
  }
}

export const router = $state({ route: parseRoute(location.pathname) });

export function navigate(path: string, replace = false): void {
  if (path === location.pathname) return;
  if (replace) history.replaceState(null, '', path);
  else history.pushState(null, '', path);
  router.route = parseRoute(path);
}

addEventListener('popstate', () => {
  router.route = parseRoute(location.pathname);
});
