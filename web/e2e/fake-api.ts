/**
 * An in-memory stand-in for the chat app's /api routes, implementing issue 12's contract
 * (shapes, SSE event names and ids, Last-Event-ID replay) through Playwright's request
 * interception. The page's own assets still come from the real `fireside serve`.
 *
 * It exists for what a tiny random model cannot give: chosen model output (the XSS corpus,
 * a code answer for the screenshots) and deterministic streams.
 */
import type { Page, Route } from '@playwright/test';

export interface Msg {
  id: string;
  parent_id: string | null;
  role: 'user' | 'assistant' | 'tool';
  content: string;
  status: string;
  created_at: string;
  feedback?: unknown;
  tool_calls?: unknown[];
  attachments?: { id: string; name: string; size: number; content_type: string }[];
  sources?: FakeSource[] | null;
}

export interface FakeSource {
  n: number;
  file_id: string;
  file_name: string;
  passage: number;
  page: number | null;
  text: string;
}

export interface FakeFile {
  id: string;
  name: string;
  size: number;
  content_type: string;
  status: string;
  conversation_id: string | null;
  project_id: string | null;
  body: Buffer;
}

interface Conv {
  id: string;
  title: string;
  pinned: boolean;
  archived: boolean;
  project_id?: string | null;
  created_at: string;
  updated_at: string;
  leaf: string | null;
  messages: Msg[];
  events: string[]; // SSE frames, id = index + 1
}

export interface FakeOptions {
  /** The assistant's answer to a user message. */
  answer?: (userText: string, attempt: number) => string;
  /** End the POST's body after this many events (the generation itself goes on). */
  cutAfter?: number;
  loggedIn?: boolean;
  /** Tool calls the answer makes before its text, stored as the server does: the calling
   * message with its calls, one tool message per result, then the answer's text in a new
   * assistant message (events tool_call, tool_result, message). A result starting with
   * "error:" is a failure, as tools/base.py writes one. */
  tools?: { name: string; arguments: Record<string, unknown>; result: string; sources?: FakeSource[] }[];
  /** POST /api/files' refusal for a file name (status and message), as the server's limits give. */
  refuseUpload?: (name: string) => { status: number; message: string } | null;
  /** GET /api/auth/providers' `oidc`: null (the default) when single sign-on is off. */
  oidc?: { name: string; login_url: string } | null;
  /** GET /api/projects' list (conversations name theirs with `project_id`). */
  projects?: { id: string; name: string; instructions: string }[];
  /** The admin page's improve routes: the feedback counts, jobs and model versions. */
  improve?: { summary: unknown; jobs: unknown[]; versions: unknown[] };
  /** POST /api/run's answer, as the sandbox gives it. */
  run?: { stdout: string; stderr: string; exit_status: number; files: { name: string; content_type: string; size: number; data_base64: string }[] };
}

let seq = 0;
const now = () => new Date(Date.UTC(2026, 0, 1, 12, 0, seq++)).toISOString();
const newId = (p: string) => `${p}${(++seq).toString(36)}`;

export class FakeApi {
  convs = new Map<string, Conv>();
  shares = new Map<string, Msg[]>();
  feedback: unknown[] = [];
  streamRequests: (string | null)[] = [];
  files = new Map<string, FakeFile>();
  /** The bodies POST /api/conversations/{id}/messages was called with. */
  sent: { content: string; file_ids?: string[] }[] = [];
  /** The ids POST /api/messages/{id}/regenerate was called with. */
  regenerated: string[] = [];
  loggedIn: boolean;
  private attempts = 0;

  constructor(readonly opts: FakeOptions = {}) {
    this.loggedIn = opts.loggedIn ?? true;
  }

  user = { id: 'u-1', email: 'ada@example.com', name: 'Ada', role: 'admin' };

  addConversation(title: string, messages: Omit<Msg, 'created_at' | 'status'>[], extra: Partial<Conv> = {}): Conv {
    const conv: Conv = { id: newId('c'), title, pinned: false, archived: false, created_at: now(), updated_at: now(), leaf: null, messages: [], events: [], ...extra };
    for (const m of messages) conv.messages.push({ ...m, status: 'complete', created_at: now() });
    conv.leaf = conv.messages[conv.messages.length - 1]?.id ?? null;
    this.convs.set(conv.id, conv);
    return conv;
  }

  private branch(conv: Conv): Msg[] {
    const byId = new Map(conv.messages.map((m) => [m.id, m]));
    const out: Msg[] = [];
    for (let m = conv.leaf ? byId.get(conv.leaf) : undefined; m; m = m.parent_id ? byId.get(m.parent_id) : undefined) out.unshift(m);
    return out;
  }

  private publicConv(conv: Conv, withMessages = false) {
    const { leaf: _l, events: _e, messages: _m, ...rest } = conv;
    return withMessages ? { ...rest, messages: this.branch(conv) } : rest;
  }

  private push(conv: Conv, event: string, data: unknown): string {
    const frame = `id: ${conv.events.length + 1}\nevent: ${event}\ndata: ${JSON.stringify(data)}\n\n`;
    conv.events.push(frame);
    return frame;
  }

  /** Run a whole generation into the event log; the POST answers with (a prefix of) it. */
  private generate(conv: Conv, user: Msg | null, parentId: string, userText: string): string {
    const start = conv.events.length;
    if (user) {
      conv.messages.push(user);
      this.push(conv, 'message', user);
    }
    const answer = (this.opts.answer ?? ((t) => `You said: ${t}`))(userText, this.attempts++);
    const startAnswer = (parent: string): Msg => {
      const m: Msg = { id: newId('m'), parent_id: parent, role: 'assistant', content: '', status: 'streaming', created_at: now() };
      conv.messages.push(m);
      conv.leaf = m.id;
      this.push(conv, 'message', m);
      return m;
    };
    let asst = startAnswer(parentId);
    const tools = this.opts.tools ?? [];
    if (tools.length) {
      const calls = tools.map((t, i) => ({ id: `call${seq}_${i}`, type: 'function', function: { name: t.name, arguments: t.arguments } }));
      for (const call of calls) this.push(conv, 'tool_call', { message_id: asst.id, id: call.id, name: call.function.name, arguments: call.function.arguments });
      Object.assign(asst, { tool_calls: calls, status: 'complete' });
      let parent = asst.id;
      for (const [i, call] of calls.entries()) {
        const result = tools[i]?.result ?? '';
        const sources = tools[i]?.sources ?? null;
        const tool: Msg = { id: newId('t'), parent_id: parent, role: 'tool', content: result, status: 'complete', created_at: now(), tool_calls: [call], sources };
        conv.messages.push(tool);
        conv.leaf = tool.id;
        this.push(conv, 'tool_result', { message_id: tool.id, parent_id: parent, tool_call_id: call.id, name: call.function.name, content: result, error: result.startsWith('error:'), sources });
        parent = tool.id;
      }
      asst = startAnswer(parent);
    }
    for (const piece of answer.match(/[\s\S]{1,12}/g) ?? []) this.push(conv, 'delta', { message_id: asst.id, text: piece });
    asst.content = answer;
    asst.status = 'complete';
    this.push(conv, 'done', { message: asst });
    if (conv.title === 'New chat') conv.title = userText.slice(0, 30);
    const frames = conv.events.slice(start);
    const cut = this.opts.cutAfter;
    if (cut !== undefined) {
      // The generation "continues" server-side: the stored answer is partial until resumed.
      asst.status = 'streaming';
      return frames.slice(0, cut).join('');
    }
    return frames.join('');
  }

  /** The generation behind a conversation's log has finished: each stored message becomes what
   * its `done` event says (content and status), as the server's row does. Only the status would
   * leave a reloaded page showing the partial text as complete. */
  finishCut(conv: Conv): void {
    for (const frame of conv.events) {
      const [, event, data] = frame.split('\n').map((line) => line.slice(line.indexOf(':') + 2));
      if (event !== 'done' || data === undefined) continue;
      const { message } = JSON.parse(data) as { message: Msg };
      const stored = conv.messages.find((m) => m.id === message.id);
      if (stored) Object.assign(stored, message);
    }
  }

  async install(page: Page): Promise<void> {
    // The fake speaks SSE only: the page is told to follow answers that way (stream/live.ts).
    await page.addInitScript(() => localStorage.setItem('fireside.transport', 'sse'));
    await page.route('**/api/**', (route) => this.handle(route));
  }

  private async handle(route: Route): Promise<void> {
    const req = route.request();
    const url = new URL(req.url());
    const path = url.pathname;
    const method = req.method();
    const body = () => (req.postData() ? JSON.parse(req.postData() as string) : {});
    const json = (data: unknown, status = 200) => route.fulfill({ status, contentType: 'application/json', body: JSON.stringify(data) });
    const sse = (text: string) => route.fulfill({ status: 200, contentType: 'text/event-stream', body: text });
    const notFound = () => json({ error: { message: `not found: ${path}`, type: 'not_found_error' } }, 404);
    let m: RegExpMatchArray | null;

    if (path.startsWith('/api/share/') && method === 'GET') {
      const messages = this.shares.get(decodeURIComponent(path.slice('/api/share/'.length)));
      return messages ? json({ title: 'Shared chat', messages }) : notFound();
    }
    if (path === '/api/auth/providers') return json({ password: true, oidc: this.opts.oidc ?? null });
    if (path === '/api/auth/login' || path === '/api/auth/signup') {
      this.loggedIn = true;
      return json(this.user);
    }
    if (!this.loggedIn) return json({ error: { message: 'not logged in', type: 'authentication_error' } }, 401);
    if (path === '/api/auth/me') return json(this.user);
    if (path === '/api/auth/logout') {
      this.loggedIn = false;
      return route.fulfill({ status: 204 });
    }
    if (path === '/api/models') return json({ data: [{ id: 'fireside-tiny', ready: true, source: 'local' }], next_cursor: null });
    if (path === '/api/settings') return json({ training_consent: false, about_me: '', response_style: '', memory_enabled: true });
    if (path === '/api/memory') return json({ data: [], next_cursor: null });
    if (path === '/api/keys') return json({ data: [], next_cursor: null });
    if (path === '/api/shares') return json({ data: [], next_cursor: null });
    if (path === '/api/presets') return json({ data: [], next_cursor: null });
    if (path === '/api/projects' && method === 'GET') {
      const data = (this.opts.projects ?? []).map((p) => ({ ...p, created_at: now(), updated_at: now() }));
      return json({ data, next_cursor: null });
    }
    if (path === '/api/run' && method === 'POST' && this.opts.run) return json(this.opts.run);
    const improve = this.opts.improve;
    if (path === '/api/admin/improve' && improve) return json(improve.summary);
    if (path === '/api/admin/jobs' && improve) return json({ data: improve.jobs });
    if (path === '/api/admin/versions' && improve) return json({ data: improve.versions, served: null });
    if (['/api/admin/users', '/api/admin/usage', '/api/admin/connections'].includes(path)) return json({ data: [], next_cursor: null });
    if (path === '/api/admin/settings') return json({ signup_policy: 'open' });
    if (path === '/api/search') {
      const q = (url.searchParams.get('q') ?? '').toLowerCase();
      const data = [...this.convs.values()].flatMap((c) =>
        c.messages
          .filter((msg) => msg.content.toLowerCase().includes(q))
          .map((msg) => {
            const i = msg.content.toLowerCase().indexOf(q);
            const snippet = `${msg.content.slice(Math.max(0, i - 20), i)}<mark>${msg.content.slice(i, i + q.length)}</mark>${msg.content.slice(i + q.length, i + q.length + 20)}`;
            return { conversation_id: c.id, message_id: msg.id, title: c.title, snippet };
          }),
      );
      return json({ data, next_cursor: null });
    }
    if (path.startsWith('/api/files')) return this.handleFiles(route, path, url);
    if (path === '/api/conversations' && method === 'GET') {
      // Newest first, in pages; the cursor is the index to start from.
      const all = [...this.convs.values()].filter((c) => !c.archived).reverse();
      const start = Number(url.searchParams.get('cursor') ?? 0);
      const limit = Number(url.searchParams.get('limit') ?? 30);
      const page = all.slice(start, start + limit).map((c) => this.publicConv(c));
      return json({ data: page, next_cursor: start + limit < all.length ? String(start + limit) : null });
    }
    if (path === '/api/conversations' && method === 'POST') {
      const conv = this.addConversation('New chat', []);
      return json(this.publicConv(conv), 201);
    }
    if ((m = path.match(/^\/api\/conversations\/([^/]+)(\/.*)?$/))) {
      const conv = this.convs.get(decodeURIComponent(m[1] ?? ''));
      if (!conv) return notFound();
      const rest = m[2] ?? '';
      if (rest === '' && method === 'GET') return json(this.publicConv(conv, true));
      if (rest === '' && method === 'PATCH') {
        const { current_leaf_id, ...change } = body() as { current_leaf_id?: string };
        Object.assign(conv, change);
        if (current_leaf_id) conv.leaf = current_leaf_id;
        return json(this.publicConv(conv));
      }
      if (rest === '' && method === 'DELETE') {
        this.convs.delete(conv.id);
        return route.fulfill({ status: 204 });
      }
      if (rest === '/messages' && method === 'POST') {
        const sent = body() as { content: string; parent_id: string | null; file_ids?: string[] };
        this.sent.push({ content: sent.content, ...(sent.file_ids ? { file_ids: sent.file_ids } : {}) });
        const { content, parent_id } = sent;
        const attached = (sent.file_ids ?? []).map((id) => this.files.get(id));
        if (attached.some((f) => !f)) return notFound();
        const attachments = attached.map((f) => ({ id: f!.id, name: f!.name, size: f!.size, content_type: f!.content_type }));
        for (const f of attached) f!.conversation_id = conv.id;
        const user: Msg = { id: newId('m'), parent_id, role: 'user', content, status: 'complete', created_at: now(), ...(attachments.length ? { attachments } : {}) };
        return sse(this.generate(conv, user, user.id, content));
      }
      if (rest === '/stream') {
        const last = req.headers()['last-event-id'] ?? url.searchParams.get('last_event_id');
        this.streamRequests.push(last ?? null);
        this.finishCut(conv);
        return sse(conv.events.slice(Number(last ?? 0)).join(''));
      }
      if (rest === '/stop') return route.fulfill({ status: 204 });
      if (rest === '/share') {
        const token = `tok${newId('s')}`;
        this.shares.set(token, this.branch(conv));
        return json({ id: newId('share'), token, url: `/api/share/${token}` }, 201);
      }
      return notFound();
    }
    if ((m = path.match(/^\/api\/messages\/([^/]+)(\/.*)?$/))) {
      const id = decodeURIComponent(m[1] ?? '');
      const conv = [...this.convs.values()].find((c) => c.messages.some((x) => x.id === id));
      const msg = conv?.messages.find((x) => x.id === id);
      if (!conv || !msg) return notFound();
      const rest = m[2] ?? '';
      if (rest === '/feedback') {
        this.feedback.push({ message_id: id, ...body() });
        return route.fulfill({ status: 204 });
      }
      if (rest === '/regenerate' && msg.parent_id) {
        this.regenerated.push(id);
        const parent = conv.messages.find((x) => x.id === msg.parent_id) as Msg;
        return sse(this.generate(conv, null, parent.id, parent.content));
      }
      if (rest === '' && method === 'PATCH') {
        const { content } = body() as { content: string };
        const user: Msg = { id: newId('m'), parent_id: msg.parent_id, role: 'user', content, status: 'complete', created_at: now() };
        return sse(this.generate(conv, user, user.id, content));
      }
    }
    return notFound();
  }

  /** /api/files: multipart uploads (the part's file name and bytes), listing, content, delete. */
  private async handleFiles(route: Route, path: string, url: URL): Promise<void> {
    const req = route.request();
    const json = (data: unknown, status = 200) => route.fulfill({ status, contentType: 'application/json', body: JSON.stringify(data) });
    const publicFile = ({ body: _b, ...rest }: FakeFile) => ({ ...rest, text_chars: rest.size, created_at: now() });
    if (path === '/api/files' && req.method() === 'POST') {
      const raw = req.postDataBuffer() ?? Buffer.alloc(0);
      const text = raw.toString('latin1');
      const field = (name: string) => new RegExp(`name="${name}"\r\n\r\n([^\r]*)`).exec(text)?.[1] ?? null;
      const part = /name="file"; filename="([^"]*)"\r\nContent-Type: ([^\r]*)\r\n\r\n/.exec(text);
      if (!part) return json({ error: { message: 'no file in the request', type: 'invalid_request_error' } }, 400);
      const start = (part.index ?? 0) + part[0].length;
      const end = text.indexOf('\r\n--', start);
      const name = part[1] ?? 'file';
      const refusal = this.opts.refuseUpload?.(name);
      if (refusal) return json({ error: { message: refusal.message, type: 'invalid_request_error' } }, refusal.status);
      const file: FakeFile = {
        id: newId('file'), name, size: end - start, content_type: part[2] ?? 'application/octet-stream', status: 'ready',
        conversation_id: field('conversation_id'), project_id: field('project_id'), body: raw.subarray(start, end),
      };
      this.files.set(file.id, file);
      return json(publicFile(file), 201);
    }
    if (path === '/api/files' && req.method() === 'GET') {
      const project = url.searchParams.get('project_id');
      const conversation = url.searchParams.get('conversation_id');
      const data = [...this.files.values()].filter((f) => (!project || f.project_id === project) && (!conversation || f.conversation_id === conversation));
      return json({ data: data.map(publicFile), next_cursor: null });
    }
    const m = path.match(/^\/api\/files\/([^/]+)(\/content)?$/);
    const file = m ? this.files.get(decodeURIComponent(m[1] ?? '')) : undefined;
    if (!m || !file) return json({ error: { message: `not found: ${path}`, type: 'not_found_error' } }, 404);
    if (m[2]) return route.fulfill({ status: 200, contentType: file.content_type, body: file.body, headers: { 'Content-Disposition': `attachment; filename="${file.name}"` } });
    if (req.method() === 'DELETE') {
      this.files.delete(file.id);
      return route.fulfill({ status: 204 });
    }
    return json(publicFile(file));
  }
}
