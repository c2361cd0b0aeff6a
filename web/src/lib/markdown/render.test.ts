import { describe, expect, it } from 'vitest';
import { renderMarkdown } from './render';
import { highlightSnippet } from './sanitize';

function dom(html: string): HTMLElement {
  const div = document.createElement('div');
  div.innerHTML = html;
  return div;
}

describe('renderMarkdown', () => {
  it('renders GFM tables, strikethrough and task lists', () => {
    const root = dom(renderMarkdown('| a | b |\n|---|:-:|\n| 1 | 2 |\n\n~~old~~\n\n- [x] done'));
    expect(root.querySelectorAll('table th')).toHaveLength(2);
    expect(root.querySelector('td:nth-child(2)')?.textContent).toBe('2');
    expect(root.querySelector('del')?.textContent).toBe('old');
    expect(root.querySelector('input')).toBeNull();
    expect(root.querySelector('.task')?.getAttribute('aria-label')).toBe('done');
  });

  it('marks code blocks with their language and escapes their text', () => {
    const root = dom(renderMarkdown('```python\nprint("<b>hi</b>")\n```'));
    const code = root.querySelector('pre code');
    expect(code?.getAttribute('data-lang')).toBe('python');
    expect(code?.textContent).toBe('print("<b>hi</b>")');
    expect(code?.querySelector('b')).toBeNull();
    expect(root.querySelector('.code-lang')?.textContent).toBe('python');
  });

  it('leaves math to the lazy KaTeX step as escaped placeholders', () => {
    const root = dom(renderMarkdown('Euler: $e^{i\\pi}+1=0$ and $$\\int_0^1 x\\,dx$$'));
    const maths = root.querySelectorAll('.math');
    expect(maths).toHaveLength(2);
    expect(maths[0]?.getAttribute('data-tex')).toBe('e^{i\\pi}+1=0');
    expect(renderMarkdown('costs $5 and $6')).not.toContain('class="math"');
  });

  it('keeps http, https and mailto links only', () => {
    const root = dom(
      renderMarkdown(
        '[a](https://example.com "t") [b](javascript:alert(1)) [c](data:text/html;base64,PHNjcmlwdD4=) [d](mailto:x@y.z) [e](vbscript:x) [f](JaVaScRiPt:alert(1))',
      ),
    );
    const links = [...root.querySelectorAll('a')];
    expect(links.map((a) => a.getAttribute('href'))).toEqual(['https://example.com', null, null, 'mailto:x@y.z', null, null]);
    expect(links[0]?.getAttribute('rel')).toContain('noopener');
    expect(links[0]?.getAttribute('title')).toBe('t');
  });

  it('shows raw HTML as text and never emits handlers, scripts, SVG or images', () => {
    const corpus = [
      '<script>alert(1)</script>',
      '<img src=x onerror=alert(1)>',
      '<svg onload=alert(1)></svg>',
      '<a href="javascript:alert(1)">x</a>',
      '[t](https://ok.example "\\" onmouseover=\\"alert(1)")',
      '![img](https://evil.example/x.png)',
      '<iframe src="javascript:alert(1)"></iframe>',
    ].join('\n\n');
    const root = dom(renderMarkdown(corpus));
    expect(root.querySelector('script, img, svg, iframe')).toBeNull();
    for (const el of root.querySelectorAll('*')) {
      for (const attr of el.getAttributeNames()) expect(attr.startsWith('on')).toBe(false);
    }
    expect(root.textContent).toContain('<script>alert(1)</script>');
    expect(root.querySelector('a[href^="javascript"]')).toBeNull();
  });
});

describe('highlightSnippet', () => {
  it('keeps the server’s <mark> pairs and nothing else as markup', () => {
    // The server escapes the text (html.escape) and marks the hits.
    expect(highlightSnippet('a <mark>hit</mark> &lt;i&gt;x&amp;y&lt;/i&gt; &#x27;q&#x27;')).toBe(
      'a <mark>hit</mark> &lt;i&gt;x&amp;y&lt;/i&gt; &#39;q&#39;',
    );
    // Even if it did not escape, no markup but <mark> survives.
    expect(highlightSnippet('<mark>q</mark> <script>alert(1)</script><img onerror=x>')).toBe(
      '<mark>q</mark> &lt;script&gt;alert(1)&lt;/script&gt;&lt;img onerror=x&gt;',
    );
  });
});

describe('math inside a line', () => {
  it('treats $$…$$ in a paragraph as display math', () => {
    const root = dom(renderMarkdown('in general $$\\sum_i i$$ holds'));
    const math = root.querySelector('.math');
    expect(math?.getAttribute('data-tex')).toBe('\\sum_i i');
    expect(math?.getAttribute('data-display')).toBe('1');
    expect(root.textContent).not.toContain('$');
  });
});
