/**
 * Citation markers: the model cites a search step's passage as `[n]`. The lexer always reads
 * `[n]` as a citation token (outside code, and not a link's text); the renderer makes it a
 * numbered button only when the answer has a source n, and otherwise writes the marker back
 * as the plain text it was. Which numbers exist is given per render (renderMarkdown's
 * `citations`); parsing is synchronous, so the one module-level slot is never shared.
 */
import type { Token, TokenizerAndRendererExtension, Tokens } from 'marked';
import { escapeHtml } from './sanitize';

/** Source number -> the file's name (the button's accessible name says which file). */
export type CitationLabels = ReadonlyMap<number, string>;

interface CitationToken extends Tokens.Generic {
  type: 'citation';
  n: number;
}

let active: CitationLabels | null = null;

/** Run `render` with these citations known to the renderer. */
export function withCitations<T>(labels: CitationLabels | null | undefined, render: () => T): T {
  const outer = active;
  active = labels ?? null;
  try {
    return render();
  } finally {
    active = outer;
  }
}

// `[12]`, but not `[12](url)` (a link) nor `[12]:` at a line's start (a link definition,
// which the block lexer takes first anyway).
const MARKER = /^\[(\d{1,3})\](?!\()/;

export const citation: TokenizerAndRendererExtension = {
  name: 'citation',
  level: 'inline',
  start: (src) => src.match(/\[\d{1,3}\](?!\()/)?.index,
  tokenizer(src) {
    const m = MARKER.exec(src);
    return m ? { type: 'citation', raw: m[0], n: Number(m[1]) } : undefined;
  },
  renderer(token) {
    const { n, raw } = token as CitationToken;
    const name = active?.get(n);
    if (name === undefined) return escapeHtml(raw);
    return `<sup class="cite"><button class="cite-ref" data-cite="${n}" aria-label="${escapeHtml(`Source ${n}: ${name}`)}">${n}</button></sup>`;
  },
};

function walk(tokens: readonly Token[], found: number[]): void {
  for (const t of tokens) {
    if (t.type === 'citation') found.push((t as CitationToken).n);
    const inner = t as { tokens?: Token[]; items?: Token[]; header?: { tokens: Token[] }[]; rows?: { tokens: Token[] }[][] };
    if (inner.tokens) walk(inner.tokens, found);
    if (inner.items) walk(inner.items, found);
    if (inner.header) for (const cell of inner.header) walk(cell.tokens, found);
    if (inner.rows) for (const row of inner.rows) for (const cell of row) walk(cell.tokens, found);
  }
}

/** The numbers `[n]` that `tokens` (marked's lexer output) cite, in order of first use. */
export function citedInTokens(tokens: readonly Token[]): number[] {
  const found: number[] = [];
  walk(tokens, found);
  return [...new Set(found)];
}
