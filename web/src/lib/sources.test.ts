import { describe, expect, it } from 'vitest';
import type { Message, Source } from './api/types';
import { answerSources, citationLabels, citedSources, labelsKey } from './sources';
import { applyEvent, emptyTree } from './tree';

const source = (n: number, file_name: string, text = `passage ${n}`): Source => ({ n, file_id: `f${n}`, file_name, passage: n - 1, page: n === 1 ? 2 : null, text });

const msg = (id: string, role: Message['role'], extra: Partial<Message> = {}): Message => ({
  id,
  parent_id: null,
  role,
  content: '',
  status: 'complete',
  created_at: '2026-01-01T00:00:00Z',
  ...extra,
});

describe('an answer’s sources', () => {
  it('gathers the numbered passages of every search step, numbers running on', () => {
    const answer = [
      msg('a1', 'assistant'),
      msg('t1', 'tool', { sources: [source(1, 'report.pdf'), source(2, 'notes.md')] }),
      msg('t2', 'tool', { sources: null }),
      msg('t3', 'tool', { sources: [source(3, 'data.csv'), { ...source(1, 'dupe.txt') }] }),
      msg('a2', 'assistant', { content: 'See [3] and [1].', sources: [source(9, 'not a tool message')] }),
    ];
    const sources = answerSources(answer);
    expect([...sources.keys()]).toEqual([1, 2, 3]);
    expect(sources.get(1)?.file_name).toBe('report.pdf');
    expect([...citationLabels(sources)]).toEqual([
      [1, 'report.pdf'],
      [2, 'notes.md'],
      [3, 'data.csv'],
    ]);
    // Listed by number, each once, without markers that have no source.
    expect(citedSources(sources, [3, 1, 3, 8]).map((s) => s.n)).toEqual([1, 3]);
  });

  it('keys labels by value, so a new but equal map keeps the rendered blocks', () => {
    const a = citationLabels(new Map([[1, source(1, 'x.pdf')]]));
    const b = citationLabels(new Map([[1, source(1, 'x.pdf')]]));
    expect(labelsKey(a)).toBe(labelsKey(b));
    expect(labelsKey(a)).not.toBe(labelsKey(citationLabels(new Map([[1, source(1, 'y.pdf')]]))));
    expect(labelsKey(null)).toBe('');
  });

  it('arrive with a streamed tool_result and are kept on its tool message', () => {
    let tree = applyEvent(emptyTree, { id: '1', event: 'message', data: msg('a1', 'assistant', { status: 'streaming' }) });
    tree = applyEvent(tree, {
      id: '2',
      event: 'tool_result',
      data: { message_id: 't1', parent_id: 'a1', tool_call_id: 'c1', name: 'search', content: '[1] report.pdf (page 2): …', sources: [source(1, 'report.pdf')] },
    });
    expect(tree.byId['t1']?.sources).toEqual([source(1, 'report.pdf')]);
    expect(answerSources(Object.values(tree.byId)).get(1)?.page).toBe(2);
  });
});
