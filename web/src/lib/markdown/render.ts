/**
 * Markdown -> sanitized HTML for one block: GFM (tables, task lists, strikethrough), math
 * placeholders for the lazy KaTeX step, code blocks marked for the lazy highlighter.
 *
 * Raw HTML in the text is shown as text, as ChatGPT does: a model writing `<div>` means the
 * characters. DOMPurify still runs over the result as the second line of defence.
 */
import { Marked, type Tokens, type TokenizerAndRendererExtension } from 'marked';
import { citation, citedInTokens, withCitations, type CitationLabels } from './citations';
import { escapeHtml, sanitize } from './sanitize';

const blockMath: TokenizerAndRendererExtension = {
  name: 'blockMath',
  level: 'block',
  start: (src) => src.match(/^\$\$/m)?.index,
  tokenizer(src) {
    const m = /^\$\$([\s\S]+?)\$\$[^\S\n]*(?:\n|$)/.exec(src);
    if (m) return { type: 'blockMath', raw: m[0], text: (m[1] ?? '').trim() };
    return undefined;
  },
  renderer: (token) => `<div class="math" data-display="1" data-tex="${escapeHtml(String(token['text']))}">${escapeHtml(String(token['text']))}</div>\n`,
};

const inlineMath: TokenizerAndRendererExtension = {
  name: 'inlineMath',
  level: 'inline',
  start: (src) => src.match(/\$|\\\(/)?.index,
  tokenizer(src) {
    // $$x$$ inside a line is display math; $x$ needs no space just inside the dollars (so
    // "$5 and $6" stays text); \( x \) too.
    const display = /^\$\$((?:\\.|[^$\\])+?)\$\$/.exec(src);
    if (display) return { type: 'inlineMath', raw: display[0], text: (display[1] ?? '').trim(), display: true };
    const m = /^\$(?!\s)((?:\\.|[^$\\\n])+?)(?<!\s)\$(?!\d)/.exec(src) ?? /^\\\((.+?)\\\)/.exec(src);
    if (m) return { type: 'inlineMath', raw: m[0], text: m[1] ?? '' };
    return undefined;
  },
  renderer: (token) => `<span class="math"${token['display'] ? ' data-display="1"' : ''} data-tex="${escapeHtml(String(token['text']))}">${escapeHtml(String(token['text']))}</span>`,
};

function createMarked(): Marked {
  const marked = new Marked({ gfm: true, breaks: false, async: false });
  marked.use({
    extensions: [blockMath, inlineMath, citation],
    renderer: {
      html: (token: Tokens.HTML | Tokens.Tag) => escapeHtml(token.text),
      image: (token: Tokens.Image) =>
        // No remote images: a model could exfiltrate the chat through an image URL.
        `<a href="${escapeHtml(token.href)}" title="${escapeHtml(token.title ?? '')}">${escapeHtml(token.text || token.href)}</a>`,
      // Task-list boxes as symbols: no form controls in rendered text.
      checkbox: ({ checked }: Tokens.Checkbox) =>
        `<span class="task" role="img" aria-label="${checked ? 'done' : 'not done'}">${checked ? '☑' : '☐'}</span> `,
      code: (token: Tokens.Code) => {
        const lang = (token.lang ?? '').trim().split(/\s+/)[0]?.toLowerCase() ?? '';
        const label = lang ? escapeHtml(lang) : 'text';
        return (
          `<div class="code-block"><div class="code-head"><span class="code-lang">${label}</span></div>` +
          `<pre><code data-lang="${escapeHtml(lang)}">${escapeHtml(token.text)}</code></pre></div>\n`
        );
      },
    },
  });
  return marked;
}

const marked = createMarked();

/**
 * One markdown string (a block or a whole message) to sanitized HTML. `citations` are the
 * answer's sources: their `[n]` markers become citation buttons, any other `[n]` stays text.
 */
export function renderMarkdown(source: string, citations?: CitationLabels | null): string {
  return sanitize(withCitations(citations, () => marked.parse(source) as string));
}

/** The source numbers a text cites with `[n]` (not inside code), in order of first use. */
export function citedNumbers(source: string): number[] {
  return citedInTokens(marked.lexer(source));
}

export { marked };
