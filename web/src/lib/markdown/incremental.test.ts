import { describe, expect, it } from 'vitest';
import { IncrementalRenderer } from './incremental';
import { renderMarkdown } from './render';

function counting() {
  const calls: string[] = [];
  const render = (md: string) => {
    calls.push(md);
    return renderMarkdown(md);
  };
  return { calls, render };
}

describe('IncrementalRenderer', () => {
  it('renders each finished block once while the tail streams', () => {
    const { calls, render } = counting();
    const r = new IncrementalRenderer(render);
    const answer = '# Title\n\nFirst paragraph.\n\n```js\nlet x = 1;\n```\n\nLast words here';
    let out = r.update('');
    let headingDoneAt = -1;
    // Feed it a few characters at a time, as tokens arrive.
    for (let i = 1; i <= answer.length; i += 3) {
      out = r.update(answer.slice(0, i));
      if (headingDoneAt < 0 && out.blocks.length === 1) headingDoneAt = calls.length;
    }
    out = r.update(answer);
    expect(out.blocks.map((b) => b.html.replace(/\s+/g, ''))).toEqual([
      '<h1>Title</h1>',
      '<p>Firstparagraph.</p>',
      expect.stringContaining('letx=1;'),
    ]);
    expect(out.tail).toContain('Last words here');
    // Once finished, the heading is never rendered again: later renders are of the tail only.
    expect(headingDoneAt).toBeGreaterThan(0);
    expect(calls.slice(headingDoneAt).some((c) => c.includes('Title'))).toBe(false);
    expect(calls.slice(headingDoneAt).every((c) => c.length < 40)).toBe(true);
  });

  it('produces the same HTML as rendering the whole text at once', () => {
    const answer = 'Intro\n\n- one\n- two\n\n- three\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n> quote\n> more\n\nend $x^2$';
    const r = new IncrementalRenderer();
    for (let i = 1; i < answer.length; i++) r.update(answer.slice(0, i));
    const done = r.update(answer, true);
    expect(done.tail).toBe('');
    const joined = done.blocks.map((b) => b.html).join('');
    expect(joined.replace(/\s+/g, '')).toBe(renderMarkdown(answer).replace(/\s+/g, ''));
  });

  it('keeps an unclosed code fence open and starts again when the text is replaced', () => {
    const r = new IncrementalRenderer();
    const open = r.update('Some text\n\n```py\nx = 1\n');
    expect(open.blocks).toHaveLength(1);
    expect(open.tail).toContain('x = 1');
    const other = r.update('Completely different');
    expect(other.blocks).toHaveLength(0);
    expect(other.tail).toContain('Completely different');
  });
});
