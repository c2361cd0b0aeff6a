import { describe, expect, it } from 'vitest';
import { renderMarkdown } from './render';
import { addRunControls, showResult } from './run';

function block(markdown: string): HTMLElement {
  const div = document.createElement('div');
  div.innerHTML = renderMarkdown(markdown);
  return div.querySelector('.code-block') as HTMLElement;
}

const buttons = (el: HTMLElement) => [...el.querySelectorAll('button')].map((b) => b.textContent);

describe('addRunControls', () => {
  it('gives Python blocks Run and Edit, HTML blocks Preview, others nothing (once)', () => {
    const py = block('```python\nprint(1)\n```');
    addRunControls(py);
    addRunControls(py);
    expect(buttons(py)).toEqual(['Run', 'Edit']);
    const html = block('```html\n<p>x</p>\n```');
    addRunControls(html);
    expect(buttons(html)).toEqual(['Preview']);
    const js = block('```js\nalert(1)\n```');
    addRunControls(js);
    expect(buttons(js)).toEqual([]);
  });
});

describe('showResult', () => {
  it('shows output as text, images inline and other files as downloads', () => {
    const panel = document.createElement('div');
    showResult(panel, {
      stdout: '<img src=x onerror=alert(1)>',
      stderr: '',
      exit_status: 'killed (time limit of 10 s)',
      files: [
        { name: 'a.png', content_type: 'image/png', size: 3, data_base64: 'AAAA' },
        { name: 'b.svg', content_type: 'image/svg+xml', size: 3, data_base64: 'AAAA' },
      ],
    });
    expect(panel.querySelector('pre')?.textContent).toBe('<img src=x onerror=alert(1)>');
    const images = [...panel.querySelectorAll('img')];
    expect(images.map((i) => i.alt)).toEqual(['a.png']); // SVG is never inline
    expect(images[0]?.src).toBe('data:image/png;base64,AAAA');
    expect(panel.querySelector('a[download]')?.getAttribute('download')).toBe('b.svg');
    expect(panel.textContent).toContain('Exit status: killed (time limit of 10 s)');
  });
});
