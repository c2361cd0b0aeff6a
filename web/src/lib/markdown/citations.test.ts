import { describe, expect, it } from 'vitest';
import { IncrementalRenderer } from './incremental';
import { citedNumbers, renderMarkdown } from './render';

function dom(html: string): HTMLElement {
  const div = document.createElement('div');
  div.innerHTML = html;
  return div;
}

const labels = new Map([
  [1, 'report.pdf'],
  [2, 'notes <b>.md'],
]);

describe('citation markers', () => {
  it('become numbered buttons only where the answer has that source', () => {
    const root = dom(renderMarkdown('Revenue grew [1], costs fell [2], see also [7].', labels));
    const buttons = [...root.querySelectorAll('sup.cite > button.cite-ref')];
    expect(buttons.map((b) => b.textContent)).toEqual(['1', '2']);
    expect(buttons.map((b) => b.getAttribute('data-cite'))).toEqual(['1', '2']);
    expect(buttons[0]?.getAttribute('type')).toBe('button');
    // The file's name is the button's accessible name, as text: no markup from it survives.
    expect(buttons[1]?.getAttribute('aria-label')).toBe('Source 2: notes <b>.md');
    expect(root.querySelector('b')).toBeNull();
    expect(root.textContent).toContain('see also [7].');
  });

  it('stay plain text without sources, inside code, and as link text', () => {
    expect(dom(renderMarkdown('Item [1] here.')).querySelector('button')).toBeNull();
    expect(dom(renderMarkdown('Item [1] here.')).textContent?.trim()).toBe('Item [1] here.');
    const code = dom(renderMarkdown('`xs[1]` and\n\n```\nys[2]\n```', labels));
    expect(code.querySelector('button')).toBeNull();
    expect(code.querySelector('code')?.textContent).toBe('xs[1]');
    const link = dom(renderMarkdown('[1](https://example.com) and [2]', labels));
    expect(link.querySelector('a')?.textContent).toBe('1');
    expect(link.querySelectorAll('button')).toHaveLength(1);
  });

  it('adjacent markers are two citations; a source number cannot smuggle markup', () => {
    const root = dom(renderMarkdown('Both [1][2].', labels));
    expect(root.querySelectorAll('button.cite-ref')).toHaveLength(2);
    // Raw HTML in the text is still text, even dressed as a citation button.
    const forged = dom(renderMarkdown('<button data-cite="1" onclick="alert(1)">1</button>', labels));
    expect(forged.querySelector('button')).toBeNull();
  });

  it('are listed in order of first use, in lists and tables too, never from code', () => {
    expect(citedNumbers('b [2] a [1] again [2]\n\n- item [3]\n\n| h |\n|---|\n| [4] |\n\n`[5]`')).toEqual([2, 1, 3, 4]);
  });

  it('render the same incrementally as at once', () => {
    const text = 'First paragraph [1].\n\n- a point [2]\n- another [9]\n\nLast [1].';
    const renderer = new IncrementalRenderer((md) => renderMarkdown(md, labels));
    for (let i = 1; i < text.length; i += 7) renderer.update(text.slice(0, i));
    const done = renderer.update(text, true);
    const joined = done.blocks.map((b) => b.html).join('');
    expect(joined.replace(/\s+/g, '')).toBe(renderMarkdown(text, labels).replace(/\s+/g, ''));
    expect(dom(joined).querySelectorAll('button.cite-ref')).toHaveLength(3);
  });
});
