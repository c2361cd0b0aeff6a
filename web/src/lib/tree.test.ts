import { describe, expect, it } from 'vitest';
import type { Message } from './api/types';
import { addMessage, answerStart, applyEvent, toolCall, toolSteps, turns, branchPath, emptyTree, fromMessages, latestLeaf, siblingPosition, switchBranch } from './tree';

let clock = 0;
function msg(id: string, parent: string | null, role: Message['role'] = 'user', content = id): Message {
  return { id, parent_id: parent, role, content, status: 'complete', created_at: new Date(clock++ * 1000).toISOString() };
}

// u1 -> a1, a1' (regenerated) ; a1 -> u2 -> a2 ; u2' (edited) -> a3
const tree = fromMessages([
  msg('u1', null),
  msg('a1', 'u1', 'assistant'),
  msg('u2', 'a1'),
  msg('a2', 'u2', 'assistant'),
  msg('a1b', 'u1', 'assistant'),
  msg('u2b', 'a1'),
  msg('a3', 'u2b', 'assistant'),
]);

describe('message tree', () => {
  it('follows a branch from its leaf to the root', () => {
    expect(branchPath(tree, 'a2').map((m) => m.id)).toEqual(['u1', 'a1', 'u2', 'a2']);
    expect(branchPath(tree, 'missing')).toEqual([]);
  });

  it('numbers siblings in creation order', () => {
    expect(siblingPosition(tree, 'a1')).toEqual({ index: 0, count: 2 });
    expect(siblingPosition(tree, 'a1b')).toEqual({ index: 1, count: 2 });
    expect(siblingPosition(tree, 'u2b')).toEqual({ index: 1, count: 2 });
    expect(siblingPosition(tree, 'u1')).toEqual({ index: 0, count: 1 });
  });

  it('switches branches to the newest leaf under the chosen sibling', () => {
    expect(latestLeaf(tree, 'a1')).toBe('a3');
    expect(switchBranch(tree, 'u2b', -1)).toBe('a2');
    expect(switchBranch(tree, 'u2', 1)).toBe('a3');
    expect(switchBranch(tree, 'a1', 1)).toBe('a1b');
    expect(switchBranch(tree, 'a1', -1)).toBeNull();
    expect(switchBranch(tree, 'a1b', 1)).toBeNull();
  });

  it('replacing a message keeps its place and leaves the old tree alone', () => {
    const edited = addMessage(tree, { ...msg('a1', 'u1', 'assistant'), content: 'new' });
    expect(edited.children['u1']).toEqual(['a1', 'a1b']);
    expect(edited.byId['a1']?.content).toBe('new');
    expect(tree.byId['a1']?.content).toBe('a1');
  });

  it('uses the server’s sibling list when it knows more than the page', () => {
    const t = fromMessages([msg('x', null), { ...msg('y', 'x', 'assistant'), sibling_ids: ['y0', 'y'] }]);
    expect(siblingPosition(t, 'y')).toEqual({ index: 1, count: 2 });
  });

  it('keeps the server’s order when an unloaded sibling arrives later, and adds newer ones', () => {
    // After a reload the page holds y (2/2); fetching y0 must not make it 2/2 too.
    let t = fromMessages([msg('x', null), { ...msg('y', 'x', 'assistant'), sibling_ids: ['y0', 'y'] }]);
    expect(switchBranch(t, 'y', -1)).toBeNull(); // y0 is not loaded: the chat state fetches it
    t = addMessage(t, { ...msg('y0', 'x', 'assistant'), sibling_ids: ['y0', 'y'] });
    expect(siblingPosition(t, 'y0')).toEqual({ index: 0, count: 2 });
    expect(siblingPosition(t, 'y')).toEqual({ index: 1, count: 2 });
    expect(switchBranch(t, 'y0', 1)).toBe('y');
    // A regeneration streamed after the load joins the end.
    t = addMessage(t, msg('y2', 'x', 'assistant'));
    expect(siblingPosition(t, 'y')).toEqual({ index: 1, count: 3 });
    expect(siblingPosition(t, 'y2')).toEqual({ index: 2, count: 3 });
    expect(switchBranch(t, 'y2', -1)).toBe('y');
  });
});

describe('applyEvent', () => {
  it('builds an answer from message, delta, tool and done events', () => {
    let t = applyEvent(emptyTree, { id: '1', event: 'message', data: msg('u', null) });
    t = applyEvent(t, { id: '2', event: 'message', data: { ...msg('a', 'u', 'assistant', ''), status: 'streaming' } });
    t = applyEvent(t, { id: '3', event: 'delta', data: { message_id: 'a', text: 'The ' } });
    t = applyEvent(t, { id: '4', event: 'tool_call', data: { message_id: 'a', id: 'c1', name: 'calculator', arguments: { expression: '2+2' } } });
    t = applyEvent(t, { id: '5', event: 'tool_result', data: { message_id: 'a', tool_call_id: 'c1', content: '4' } });
    t = applyEvent(t, { id: '6', event: 'delta', data: { message_id: 'a', text: 'sum is 4' } });
    expect(t.byId['a']?.content).toBe('The sum is 4');
    expect(t.byId['a']?.tool_calls).toEqual([{ id: 'c1', name: 'calculator', arguments: { expression: '2+2' }, result: '4' }]);
    t = applyEvent(t, { id: '7', event: 'done', data: { message: { ...msg('a', 'u', 'assistant', 'The sum is 4'), status: 'stopped' } } });
    expect(t.byId['a']?.status).toBe('stopped');
    expect(t.byId['a']?.tool_calls).toHaveLength(1);
    expect(branchPath(t, 'a').map((m) => m.id)).toEqual(['u', 'a']);
  });

  it('a replayed message event resets the partial text, so a replay from the start rebuilds it once', () => {
    let t = fromMessages([msg('u', null), { ...msg('a', 'u', 'assistant', 'partial from the database'), status: 'streaming' }]);
    t = applyEvent(t, { id: '2', event: 'message', data: { ...msg('a', 'u', 'assistant', ''), status: 'streaming' } });
    t = applyEvent(t, { id: '3', event: 'delta', data: { message_id: 'a', text: 'abc' } });
    expect(t.byId['a']?.content).toBe('abc');
  });
});

describe('toolCall', () => {
  it('reads Fireside’s and OpenAI’s shapes and rejects what has no name', () => {
    expect(toolCall({ id: 'a', name: 'python', arguments: { code: '1+1' }, result: 2 })).toEqual({ id: 'a', name: 'python', arguments: { code: '1+1' }, result: '2' });
    expect(toolCall({ id: 'b', type: 'function', function: { name: 'search', arguments: '{"q":"x"}' } })).toEqual({ id: 'b', name: 'search', arguments: '{"q":"x"}' });
    expect(toolCall({ id: 'c' })).toBeNull();
    expect(toolCall('nope')).toBeNull();
  });
});

describe('answers with tools', () => {
  const call = (id: string, name = 'calculator', args: Record<string, unknown> = { expression: '1234 * 56' }) => ({ id, type: 'function', function: { name, arguments: args } });
  const calling = { ...msg('a1', 'q', 'assistant', ''), tool_calls: [call('c1'), call('c2', 'python', { code: '1/0' })] };
  const result1 = { ...msg('t1', 'a1', 'tool', '69104'), tool_calls: [call('c1')] };
  const result2 = { ...msg('t2', 't1', 'tool', 'error: ZeroDivisionError'), tool_calls: [call('c2')] };
  const answer = msg('a2', 't2', 'assistant', 'It is 69104.');

  it('groups the messages after a question into one answer', () => {
    const shown = turns([msg('q', null), calling, result1, result2, answer, msg('q2', 'a2')]);
    expect(shown.map((t) => (t.kind === 'user' ? t.message.id : t.messages.map((m) => m.id)))).toEqual(['q', ['a1', 't1', 't2', 'a2'], 'q2']);
  });

  it("finds an answer's first message, the one a regeneration starts from", () => {
    const t = fromMessages([msg('q', null), calling, result1, result2, answer]);
    expect(answerStart(t, 'a2')).toBe('a1');
    expect(answerStart(t, 'a1')).toBe('a1');
  });

  it('derives a stored step state from the tool message answering its call', () => {
    // As a reload loads it: the calling message was saved before its results came.
    const steps = toolSteps([calling, result1, result2, answer], false);
    expect(steps.map((s) => [s.name, s.state, s.result])).toEqual([
      ['calculator', 'done', '69104'],
      ['python', 'failed', 'error: ZeroDivisionError'],
    ]);
    expect(toolSteps([calling, result1], true).map((s) => s.state)).toEqual(['done', 'running']);
    expect(toolSteps([calling, result1], false).map((s) => s.state)).toEqual(['done', 'no result']);
  });

  it("stores a streamed tool_result as the server does: a tool message answering the call", () => {
    let t = fromMessages([msg('q', null), calling]);
    t = applyEvent(t, { id: '1', event: 'tool_result', data: { message_id: 't9', parent_id: 'a1', tool_call_id: 'c2', name: 'python', content: 'boom', error: true } });
    expect(t.byId['t9']).toMatchObject({ role: 'tool', parent_id: 'a1', content: 'boom' });
    expect(toolSteps(branchPath(t, 't9').slice(1), true).map((s) => s.state)).toEqual(['running', 'failed']);
  });
});
