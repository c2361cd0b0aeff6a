/**
 * An answer's sources: the passages its `search` steps returned, numbered by the server so
 * that the numbers run on across the steps of one answer. The answer's text cites them `[n]`.
 */
import type { Message, Source } from './api/types';
import type { CitationLabels } from './markdown/citations';

/** The sources of one answer (its assistant and tool messages), by number; first one wins. */
export function answerSources(messages: readonly Message[]): Map<number, Source> {
  const byN = new Map<number, Source>();
  for (const m of messages) {
    if (m.role !== 'tool') continue;
    for (const s of m.sources ?? []) if (!byN.has(s.n)) byN.set(s.n, s);
  }
  return byN;
}

export function citationLabels(sources: ReadonlyMap<number, Source>): CitationLabels {
  return new Map([...sources].map(([n, s]) => [n, s.file_name]));
}

/** A value that changes only when the citable numbers or their names do. */
export function labelsKey(labels: CitationLabels | null | undefined): string {
  return labels ? JSON.stringify([...labels]) : '';
}

/** The sources the texts cite (markers with no source are left out), by number. */
export function citedSources(sources: ReadonlyMap<number, Source>, cited: Iterable<number>): Source[] {
  const out = [...new Set(cited)].flatMap((n) => sources.get(n) ?? []);
  return out.sort((a, b) => a.n - b.n);
}
