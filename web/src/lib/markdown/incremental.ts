/**
 * Incremental rendering of a streaming answer: the text is split into top-level markdown
 * blocks; blocks that can no longer change are rendered once and kept, and only the open
 * tail is rendered again as tokens arrive. A 5,000-token answer thus costs one small block
 * per token, not the whole message.
 */
import { marked, renderMarkdown } from './render';

export interface Block {
  /** Stable across updates: the block's offset and its source. */
  key: string;
  html: string;
}

export interface Rendered {
  blocks: Block[];
  tail: string;
}

/** Token types after which more text can still join the same block. */
const OPEN_ENDED = new Set(['list', 'blockquote']);

export class IncrementalRenderer {
  private source = '';
  private committedLength = 0;
  private committed: Block[] = [];
  private readonly render: (markdown: string) => string;

  constructor(render: (markdown: string) => string = renderMarkdown) {
    this.render = render;
  }

  /** `final` commits the tail too (the answer is complete). */
  update(text: string, final = false): Rendered {
    const source = text.replace(/\r\n?/g, '\n');
    if (!source.startsWith(this.source.slice(0, this.committedLength))) this.reset();
    this.source = source;
    const rest = source.slice(this.committedLength);
    const tokens = marked.lexer(rest).filter((t) => t.raw.length > 0);
    // Keep the last real block open; also the one before it when it could absorb what follows.
    let open = tokens.length;
    if (!final) {
      let lastReal = tokens.length - 1;
      while (lastReal >= 0 && tokens[lastReal]?.type === 'space') lastReal--;
      open = Math.max(0, lastReal);
      const before = open - 1 >= 0 ? tokens[open - 1] : undefined;
      if (before && OPEN_ENDED.has(before.type)) open -= 1;
      // Trailing blank lines belong to the open region, so its raw text stays contiguous.
    }
    let offset = this.committedLength;
    for (const token of tokens.slice(0, open)) {
      if (token.type !== 'space') {
        this.committed.push({ key: `${offset}:${token.raw.length}`, html: this.render(token.raw) });
      }
      offset += token.raw.length;
    }
    this.committedLength = offset;
    const tail = source.slice(offset);
    return { blocks: [...this.committed], tail: tail.trim() ? this.render(tail) : '' };
  }

  reset(): void {
    this.source = '';
    this.committedLength = 0;
    this.committed = [];
  }
}
