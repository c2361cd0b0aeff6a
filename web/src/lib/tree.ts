/**
 * The message tree as small pure functions: add a message, follow a branch, find siblings,
 * move between branches, and apply a stream event. Every function returns a new tree and
 * leaves its input alone, so Svelte sees a change and tests can compare before and after.
 */
import type { Message, ToolCall } from './api/types';
import type { StreamEvent } from './stream/events';

export interface Tree {
  byId: Readonly<Record<string, Message>>;
  /** Child ids per parent id ('' for roots), oldest first. */
  children: Readonly<Record<string, readonly string[]>>;
}

export const emptyTree: Tree = { byId: {}, children: {} };

const ROOT = '';

function parentKey(m: Message): string {
  return m.parent_id ?? ROOT;
}

/** Add or replace a message; a replaced message keeps its place among its siblings. */
export function addMessage(tree: Tree, message: Message): Tree {
  const byId = { ...tree.byId, [message.id]: message };
  const key = parentKey(message);
  const siblings = tree.children[key] ?? [];
  if (siblings.includes(message.id)) return { byId, children: tree.children };
  return { byId, children: { ...tree.children, [key]: [...siblings, message.id] } };
}

export function fromMessages(messages: readonly Message[], tree: Tree = emptyTree): Tree {
  return messages.reduce(addMessage, tree);
}

/** Root-first path ending at `leafId` (empty when unknown). */
export function branchPath(tree: Tree, leafId: string | null | undefined): Message[] {
  const path: Message[] = [];
  const seen = new Set<string>();
  let id = leafId ?? undefined;
  while (id !== undefined && !seen.has(id)) {
    const m = tree.byId[id];
    if (!m) break;
    seen.add(id);
    path.push(m);
    id = m.parent_id ?? undefined;
  }
  return path.reverse();
}

/**
 * The sibling ids of a message (itself included), in order: the server's list where it sent
 * one (it knows the branches this page never loaded), then any the page has seen since
 * (a regeneration streamed after the load), in the order they came.
 */
export function siblingIds(tree: Tree, id: string): readonly string[] {
  const m = tree.byId[id];
  if (!m) return [];
  const local = tree.children[parentKey(m)] ?? [id];
  // A streamed message has no list of its own; a loaded sibling's list covers it too.
  const remote = m.sibling_ids ?? local.map((x) => tree.byId[x]?.sibling_ids).find((l) => l?.length) ?? [];
  if (remote.length === 0) return local;
  const known = new Set(remote);
  return [...remote, ...local.filter((x) => !known.has(x))];
}

export interface SiblingPosition {
  index: number; // 0-based
  count: number;
}

export function siblingPosition(tree: Tree, id: string): SiblingPosition {
  const ids = siblingIds(tree, id);
  return { index: Math.max(0, ids.indexOf(id)), count: Math.max(1, ids.length) };
}

/** Follow the newest child down to a leaf: where a branch picked by its top message ends. */
export function latestLeaf(tree: Tree, id: string): string {
  let current = id;
  const seen = new Set<string>();
  for (;;) {
    seen.add(current);
    const kids = tree.children[current] ?? [];
    const next = kids[kids.length - 1];
    if (next === undefined || seen.has(next)) return current;
    current = next;
  }
}

/**
 * The leaf to show after pressing ‹ or › on message `id`: its sibling `step` away (clamped),
 * followed down to that sibling's newest leaf. Null when there is nowhere to go.
 */
export function switchBranch(tree: Tree, id: string, step: -1 | 1): string | null {
  const ids = siblingIds(tree, id);
  const target = ids[ids.indexOf(id) + step];
  if (target === undefined || !tree.byId[target]) return null;
  return latestLeaf(tree, target);
}

/**
 * A stored or streamed tool call in the page's shape. The server keeps calls as free-form
 * objects: Fireside's own `{id, name, arguments}` or OpenAI's `{id, function: {name, arguments}}`.
 */
export function toolCall(raw: unknown): ToolCall | null {
  if (!raw || typeof raw !== 'object') return null;
  const r = raw as Record<string, unknown>;
  const fn = (r['function'] && typeof r['function'] === 'object' ? r['function'] : r) as Record<string, unknown>;
  const name = fn['name'];
  if (typeof name !== 'string') return null;
  const id = typeof r['id'] === 'string' ? r['id'] : typeof r['tool_call_id'] === 'string' ? r['tool_call_id'] : name;
  const args = fn['arguments'];
  const result = r['result'] ?? r['content'];
  return {
    id,
    name,
    arguments: typeof args === 'string' || (args && typeof args === 'object') ? (args as ToolCall['arguments']) : {},
    ...(result === undefined || result === null ? {} : { result: typeof result === 'string' ? result : JSON.stringify(result) }),
    ...(r['error'] === true ? { error: true } : {}),
  };
}

export function toolCalls(m: Message): ToolCall[] {
  return (m.tool_calls ?? []).map(toolCall).filter((c): c is ToolCall => c !== null);
}

function update(tree: Tree, id: string, change: (m: Message) => Message): Tree {
  const m = tree.byId[id];
  return m ? addMessage(tree, change(m)) : tree;
}

function callId(data: { id?: string; tool_call_id?: string }): string {
  return data.tool_call_id ?? data.id ?? '';
}

/**
 * Apply one stream event. The same function serves a first send and a resumed stream: a
 * `message` event replaces the message (so a replay from the start rebuilds it), and `done`
 * replaces it with the stored answer.
 */
export function applyEvent(tree: Tree, event: StreamEvent): Tree {
  switch (event.event) {
    case 'message':
      return addMessage(tree, event.data);
    case 'delta':
      return update(tree, event.data.message_id, (m) => ({ ...m, content: m.content + event.data.text }));
    case 'done': {
      // The stored answer wins, but steps seen live stay when it does not list its calls.
      const stored = event.data.message;
      const seen = tree.byId[stored.id]?.tool_calls;
      return addMessage(tree, stored.tool_calls?.length || !seen?.length ? stored : { ...stored, tool_calls: seen });
    }
    case 'tool_call': {
      const data = event.data;
      if (!data.message_id) return tree;
      const call = toolCall({ ...data, id: callId(data) });
      if (!call) return tree;
      return update(tree, data.message_id, (m) => {
        const calls = toolCalls(m).filter((c) => c.id !== call.id);
        return { ...m, tool_calls: [...calls, call] };
      });
    }
    case 'tool_result': {
      const data = event.data;
      if (!data.message_id) return tree;
      const result = data.content ?? (typeof data.result === 'string' ? data.result : JSON.stringify(data.result ?? ''));
      const error = data.error === true;
      const target = tree.byId[data.message_id];
      if (target && target.role !== 'tool') {
        // A result sent for the calling message itself: kept on its call.
        return update(tree, data.message_id, (m) => ({
          ...m,
          tool_calls: toolCalls(m).map((c) => (c.id === callId(data) ? { ...c, result, ...(error ? { error } : {}) } : c)),
        }));
      }
      // The server's contract: the result is a tool message of its own under the calling one,
      // stored with the call it answers, as a reload loads it.
      return addMessage(tree, {
        id: data.message_id,
        parent_id: data.parent_id ?? null,
        role: 'tool',
        content: result,
        status: 'complete',
        error: error ? result : null,
        sources: data.sources ?? null,
        tool_calls: [{ id: callId(data), name: data.name ?? 'tool', arguments: {} }],
        created_at: new Date().toISOString(),
      });
    }
    case 'error':
      return tree;
  }
}

export type StepState = 'running' | 'done' | 'failed' | 'no result';

/** A tool call of an answer with what became of it. */
export interface ToolStep extends ToolCall {
  state: StepState;
}

/** A tool's failure as the server stores it: tools/base.py's call_tool writes "error: …". */
function failed(m: Message): boolean {
  return !!m.error || m.content.startsWith('error:');
}

/**
 * The tool steps of one answer (its assistant and tool messages, in branch order). A step is
 * done when a tool message answering its call id exists, whatever the calling message's own
 * record says: that record was saved before its results came. `live` says whether the answer
 * is still being written, so a call without a result is running rather than cut off.
 */
export function toolSteps(messages: readonly Message[], live: boolean): ToolStep[] {
  const results = new Map<string, Message>();
  for (const m of messages) {
    const id = m.role === 'tool' ? toolCalls(m)[0]?.id : undefined;
    if (id !== undefined) results.set(id, m);
  }
  return messages
    .filter((m) => m.role === 'assistant')
    .flatMap(toolCalls)
    .map((call): ToolStep => {
      const answer = results.get(call.id);
      if (answer) return { ...call, result: answer.content, state: failed(answer) ? 'failed' : 'done' };
      if (call.result !== undefined && call.result !== null) return { ...call, state: call.error || call.result.startsWith('error:') ? 'failed' : 'done' };
      return { ...call, state: live ? 'running' : 'no result' };
    });
}

/**
 * The first message of the answer `id` belongs to (the one after the question): regenerating
 * it runs the whole turn again, tools included; regenerating a later one would only rewrite
 * the text after the last tool result.
 */
export function answerStart(tree: Tree, id: string): string {
  let current = tree.byId[id];
  const seen = new Set<string>();
  while (current && !seen.has(current.id)) {
    seen.add(current.id);
    const parent = current.parent_id ? tree.byId[current.parent_id] : undefined;
    if (!parent || parent.role === 'user' || parent.role === 'system') break;
    current = parent;
  }
  return current?.id ?? id;
}

/** What the chat shows as one unit: a user's message, or the whole answer that follows it. */
export type Turn = { kind: 'user'; message: Message } | { kind: 'answer'; messages: Message[] };

/**
 * A branch as turns: the assistant and tool messages after a question (the calls, their
 * results and the final text) form one answer, shown, rated and regenerated as a whole.
 */
export function turns(branch: readonly Message[]): Turn[] {
  const out: Turn[] = [];
  for (const m of branch) {
    const last = out[out.length - 1];
    if (m.role === 'user' || m.role === 'system') out.push({ kind: 'user', message: m });
    else if (last?.kind === 'answer') last.messages.push(m);
    else out.push({ kind: 'answer', messages: [m] });
  }
  return out;
}

/** The message a stream is writing: the newest assistant message not yet finished. */
export function isRunning(m: Message | undefined): boolean {
  return !!m && m.role === 'assistant' && m.status === 'streaming';
}
