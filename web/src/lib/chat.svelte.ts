/**
 * One open conversation: its message tree, the branch on screen, and the generation being
 * streamed into it. Send, regenerate and edit all start a server-side generation and follow
 * its events with the same function, which also resumes after a cut connection or a reload:
 * over the page's one WebSocket, shared by every chat it opens, or SSE (stream/live.ts).
 */
import { untrack } from 'svelte';
import { api, ApiError, enc, postStream } from './api/client';
import type { Conversation, Feedback, Message } from './api/types';
import { conversations } from './conversations.svelte';
import { projects } from './projects.svelte';
import { sessionEnded } from './session.svelte';
import { EventCursor, type StreamEvent } from './stream/events';
import { StreamHttpError } from './stream/follow';
import { followLive, pageHub } from './stream/live';
import { addMessage, answerStart, applyEvent, branchPath, emptyTree, fromMessages, isRunning, siblingIds, switchBranch, type Tree } from './tree';

export interface ChatError {
  message: string;
  retry?: () => void;
}

/** What a new chat starts with, chosen before its first message. */
export interface NewChatOptions {
  /** In no history, search or export; deleted when the page leaves it. */
  temporary: boolean;
  /** The preset picked ('' for none) and its system prompt. */
  presetId: string;
  systemPrompt: string;
}

export class Chat {
  conversation = $state<Conversation | null>(null);
  options = $state<NewChatOptions>({ temporary: false, presetId: '', systemPrompt: '' });
  tree = $state<Tree>(emptyTree);
  leafId = $state<string | null>(null);
  streamingId = $state<string | null>(null);
  busy = $state(false);
  loading = $state(false);
  error = $state<ChatError | null>(null);

  branch = $derived(branchPath(this.tree, this.leafId));

  private abort: AbortController | null = null;

  async open(id: string): Promise<void> {
    if (this.conversation?.id === id) return;
    this.close();
    projects.startIn = null; // a new chat after this one starts in no project
    this.loading = true;
    try {
      const conv = await api.get<Conversation>(`/api/conversations/${enc(id)}`);
      this.conversation = conv;
      const messages = conv.messages ?? [];
      this.tree = fromMessages(messages);
      this.leafId = messages[messages.length - 1]?.id ?? null;
      // An answer still being written when the page was (re)loaded: replay its events.
      // Without a Last-Event-ID the server replays the running answer from its start; its
      // `message` event resets the partial text, so nothing is applied twice. While its tools
      // run, the calling message is the one still streaming and a tool message may be last.
      if (messages.some(isRunning)) void this.run(() => Promise.resolve(null));
    } catch (e) {
      this.error = { message: (e as Error).message, retry: () => void this.open(id) };
    } finally {
      this.loading = false;
    }
  }

  close(): void {
    this.leave();
    this.abort?.abort();
    this.abort = null;
    this.conversation = null;
    this.tree = emptyTree;
    this.leafId = null;
    this.streamingId = null;
    this.busy = false;
    this.error = null;
  }

  /**
   * A temporary chat ends when the page leaves it (another chat, a new one, the tab closing):
   * the server deletes it, stopping its answer. `keepalive` lets the request outlive the page.
   */
  leave(): void {
    // Read untracked: close() runs inside the chat page's effect, which must not come to
    // depend on the conversation (it would close the chat the first message just made).
    const conv = untrack(() => this.conversation);
    if (!conv?.temporary) return;
    this.conversation = null;
    void fetch(`/api/conversations/${enc(conv.id)}`, { method: 'DELETE', credentials: 'same-origin', keepalive: true }).catch(() => undefined);
  }

  private onEvent = (event: StreamEvent): void => {
    this.tree = applyEvent(this.tree, event);
    if (event.event === 'message') {
      this.leafId = event.data.id;
      if (event.data.role === 'assistant') this.streamingId = event.data.id;
    } else if (event.event === 'tool_result') {
      // A result stored as a tool message continues the branch on show.
      const id = event.data.message_id;
      if (id && this.tree.byId[id]?.role === 'tool') this.leafId = id;
    } else if (event.event === 'done') {
      this.leafId = event.data.message.id;
      if (event.data.message.status === 'error') this.error = { message: 'The answer failed.', retry: () => void this.regenerate(event.data.message.id) };
    } else if (event.event === 'error') {
      this.error = { message: event.data.message, retry: this.retryLast };
    }
  };

  private retryLast = (): void => {
    const last = this.branch[this.branch.length - 1];
    if (last?.role === 'assistant' || last?.role === 'tool') void this.regenerate(last.id);
    else if (last?.role === 'user') void this.regenerateFromUser(last);
  };

  /** Start (or resume) a generation and follow it to its end. */
  private async run(
    start: (signal: AbortSignal) => Promise<Response | null>,
    cursor = new EventCursor(),
    retry: () => void = this.retryLast,
  ): Promise<void> {
    const conv = this.conversation;
    if (!conv) return;
    this.abort?.abort();
    const abort = new AbortController();
    this.abort = abort;
    this.busy = true;
    this.error = null;
    const hub = pageHub(sessionEnded);
    void hub?.connect(); // the socket's handshake overlaps the POST
    try {
      const first = await start(abort.signal);
      const end = await followLive(first, { conversationId: conv.id, cursor, onEvent: this.onEvent, signal: abort.signal }, hub);
      if (end === 'lost') this.error = { message: 'The connection to the server was lost while the answer was being written.', retry: () => void this.resume() };
    } catch (e) {
      if (abort.signal.aborted) return;
      const status = e instanceof ApiError || e instanceof StreamHttpError ? e.status : 0;
      if (status === 401) sessionEnded(); // logged out elsewhere: to the login page
      const message = status === 429 ? `Too many requests: ${(e as Error).message}` : (e as Error).message;
      this.error = { message, retry };
    } finally {
      if (this.abort === abort) {
        this.abort = null;
        this.busy = false;
        this.streamingId = null;
        void this.refreshTitle(conv.id);
      }
    }
  }

  /** Follow the running answer again (after a lost connection). */
  resume(): Promise<void> {
    return this.run(() => Promise.resolve(null));
  }

  /** `fileIds`: files already uploaded (the composer's chips), attached to this message. */
  async send(content: string, fileIds: readonly string[] = [], model?: string): Promise<string | null> {
    const text = content.trim();
    if (!text || this.busy) return null;
    if (!this.conversation) {
      try {
        const { temporary, systemPrompt } = this.options;
        const project = projects.startIn;
        const fields = {
          ...(model ? { model } : {}),
          ...(systemPrompt ? { system_prompt: systemPrompt } : {}),
          ...(project ? { project_id: project } : {}),
          temporary,
        };
        this.conversation = await api.post<Conversation>('/api/conversations', fields);
        projects.startIn = null;
        if (!temporary) conversations.upsert(this.conversation);
      } catch (e) {
        this.error = { message: (e as Error).message, retry: () => void this.send(text, fileIds, model) };
        return null;
      }
    }
    const id = this.conversation.id;
    const parent = this.leafId;
    const post = (signal: AbortSignal) =>
      postStream(`/api/conversations/${enc(id)}/messages`, { content: text, parent_id: parent, ...(fileIds.length ? { file_ids: fileIds } : {}) }, 'POST', signal);
    // A send refused before it started (429, network) is retried as the same send.
    void this.run(post, new EventCursor(), () => void this.run(post));
    return id;
  }

  /** A new answer to the question before `assistantId`'s turn, tools and all. */
  regenerate(assistantId: string): Promise<void> {
    const id = this.tree.byId[assistantId]?.role === 'user' ? assistantId : answerStart(this.tree, assistantId);
    return this.run((signal) => postStream(`/api/messages/${enc(id)}/regenerate`, {}, 'POST', signal));
  }

  private regenerateFromUser(user: Message): Promise<void> {
    // A user message without an answer (the generation failed to start): answer it again.
    return this.regenerate(user.id);
  }

  edit(userId: string, content: string): Promise<void> {
    return this.run((signal) => postStream(`/api/messages/${enc(userId)}`, { content }, 'PATCH', signal));
  }

  async stop(): Promise<void> {
    const conv = this.conversation;
    if (!conv || !this.busy) return;
    if (pageHub(sessionEnded)?.stop(conv.id)) return; // followed over the socket: stopped on it
    try {
      // The server stops the task; its `done` event (status "stopped") ends our stream.
      await api.post(`/api/conversations/${enc(conv.id)}/stop`);
    } catch (e) {
      this.abort?.abort();
      this.error = { message: `Could not stop the answer: ${(e as Error).message}` };
    }
  }

  switchBranch(messageId: string, step: -1 | 1): void {
    const leaf = switchBranch(this.tree, messageId, step);
    const conv = this.conversation;
    if (!conv) return;
    if (!leaf) {
      // After a reload only the branch on show is loaded: a sibling the server listed
      // (sibling_ids) but the page has not seen is fetched by making it the branch on show.
      const ids = siblingIds(this.tree, messageId);
      const target = ids[ids.indexOf(messageId) + step];
      if (target !== undefined && !this.tree.byId[target]) void this.showUnloaded(conv.id, target);
      return;
    }
    this.leafId = leaf;
    // The server keeps the branch on show: a reload, a share link and the next message follow it.
    api.patch(`/api/conversations/${enc(conv.id)}`, { current_leaf_id: leaf }).catch((e: Error) => {
      this.error = { message: `Could not switch branches: ${e.message}` };
    });
  }

  private async showUnloaded(id: string, target: string): Promise<void> {
    try {
      await api.patch(`/api/conversations/${enc(id)}`, { current_leaf_id: target });
      const conv = await api.get<Conversation>(`/api/conversations/${enc(id)}`);
      if (this.conversation?.id !== id) return;
      const messages = conv.messages ?? [];
      this.tree = fromMessages(messages, this.tree);
      this.leafId = messages[messages.length - 1]?.id ?? this.leafId;
    } catch (e) {
      this.error = { message: `Could not switch branches: ${(e as Error).message}` };
    }
  }

  async feedback(messageId: string, feedback: Feedback): Promise<void> {
    await api.post(`/api/messages/${enc(messageId)}/feedback`, feedback);
    const m = this.tree.byId[messageId];
    if (m) this.tree = addMessage(this.tree, { ...m, feedback });
  }

  /** The server titles a conversation after its first exchange, possibly a moment later. */
  private async refreshTitle(id: string): Promise<void> {
    for (const delay of [0, 1500, 4000]) {
      await new Promise((r) => setTimeout(r, delay));
      try {
        const conv = await api.get<Conversation>(`/api/conversations/${enc(id)}`);
        conversations.refresh(conv);
        if (this.conversation?.id === id) this.conversation = { ...this.conversation, ...conv, messages: undefined };
        if (conv.title) return;
      } catch {
        return; // the list keeps its old title
      }
    }
  }

}
