"""Which parts of a text also occur, verbatim, in a large training text: an index of the
training text's 50-character spans that answers in seconds and holds a few bytes per character.

Holding every 50-character span of 160M characters would take 160M hashes. Instead the index
hashes only the 25-character pieces that start at every 26th character (k=25, stride 26):
any 50-character span of the training text starts at most 25 characters before one of those
starts, so it contains one such piece whole. A candidate text is then checked in two steps:

1. every 25-character piece of the candidate is looked up among the training pieces (a hash
   set, so a miss is certain: equal strings have equal hashes);
2. around each hit, the candidate's 50-character windows are hashed beside the training's
   windows around every place that piece occurs, and each window whose hash matches is
   compared character by character, so a hash collision never reports a span that is not
   shared.

Texts are arrays of code points, so a span is 50 characters, not bytes. Documents are kept
apart by a separator no text holds, so no span reaches across two of them.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

SPAN = 50  # characters a shared span must have to count
PIECE = 25  # characters of each indexed piece of the training text
STRIDE = SPAN + 1 - PIECE  # 26: every SPAN-character window holds a whole indexed piece
_BASE = np.uint64(0x100000001B3)  # odd, so the polynomial hash mixes every character
# Code points go to 0x10FFFF, so these never equal a character, and differ from each other
# so no window of a candidate matches a training window across both texts' separators.
_TRAIN_SEP = np.uint32(0xFFFFFFFF)
_QUERY_SEP = np.uint32(0xFFFFFFFE)
_CHUNK = 1 << 24
_FILTER_BITS = 24
_FILTER_MASK = np.uint64(
    (1 << _FILTER_BITS) - 1
)  # code points gathered before they are joined into one array

Codes = npt.NDArray[np.uint32]
Hashes = npt.NDArray[np.uint64]
Positions = npt.NDArray[np.int64]


def _codes(text: str) -> Codes:
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)


def _hash_at(codes: Codes, starts: Positions, length: int) -> Hashes:
    """The polynomial hash (mod 2**64) of `codes[s : s + length]` for every s in `starts`."""
    h = np.zeros(len(starts), dtype=np.uint64)
    for j in range(length):
        h = h * _BASE + codes[starts + j].astype(np.uint64)
    return h


def _hash_all(codes: Codes, length: int) -> Hashes:
    """The hash of every `length`-character window of `codes`, by shifted slices."""
    n = len(codes) - length + 1
    h = np.zeros(max(0, n), dtype=np.uint64)
    for j in range(length):
        h = h * _BASE + codes[j : j + n].astype(np.uint64)
    return h


def _join(texts: Iterable[str], sep: np.uint32) -> tuple[Codes, Positions]:
    """The texts' code points, each text followed by `sep`, and where each text starts."""
    chunks: list[Codes] = []
    starts: list[int] = []
    pending: list[Codes] = []
    size = total = 0
    separator = np.array([sep], dtype=np.uint32)
    for text in texts:
        starts.append(total)
        codes = _codes(text)
        pending += [codes, separator]
        size += len(codes) + 1
        total += len(codes) + 1
        if size >= _CHUNK:
            chunks.append(np.concatenate(pending))
            pending, size = [], 0
    if pending:
        chunks.append(np.concatenate(pending))
    joined = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.uint32)
    return joined, np.asarray(starts, dtype=np.int64)


def _ranges(lo: Positions, hi: Positions) -> Positions:
    """Every index in the half-open ranges [lo[i], hi[i]), without a Python loop."""
    lengths = hi - lo
    total = int(lengths.sum())
    ends = np.cumsum(lengths)
    return np.arange(total, dtype=np.int64) - np.repeat(ends - lengths - lo, lengths)


def _merge(starts: Sequence[int], length: int) -> list[tuple[int, int]]:
    """Sorted window starts as the (start, end) ranges their windows cover."""
    ranges: list[tuple[int, int]] = []
    for s in starts:
        if ranges and s <= ranges[-1][1]:
            ranges[-1] = (ranges[-1][0], s + length)
        else:
            ranges.append((s, s + length))
    return ranges


class SpanIndex:
    """Every SPAN-character span of a training text, answering which parts of other texts
    share one. Memory: the training text's code points (4 bytes a character) and 16 bytes for
    every STRIDE characters."""

    def __init__(self, texts: Iterable[str]) -> None:
        self._codes, _ = _join(texts, _TRAIN_SEP)
        starts = np.arange(0, max(0, len(self._codes) - PIECE + 1), STRIDE, dtype=np.int64)
        hashes = _hash_at(self._codes, starts, PIECE)
        order = np.argsort(hashes, kind="stable")
        self._piece_hashes, self._piece_starts = hashes[order], starts[order]

    @property
    def characters(self) -> int:
        """Characters indexed, separators included."""
        return len(self._codes)

    def spans_shared(self, text: str, span: int = SPAN) -> list[tuple[int, int]]:
        """The (start, end) ranges of `text` covered by spans of `span` characters (SPAN or
        more) that the training text also holds; empty when it shares none."""
        return self.spans_shared_many([text], span)[0]

    def spans_shared_many(
        self, texts: Sequence[str], span: int = SPAN
    ) -> list[list[tuple[int, int]]]:
        """`spans_shared` for many texts at once: one pass over the training text's hits."""
        if span < SPAN:
            raise ValueError(f"the index finds spans of {SPAN} characters or more, not {span}")
        codes, offsets = _join(texts, _QUERY_SEP)
        windows = self._shared_windows(codes, span)
        # Each window back to its own text: the separators keep every window inside one.
        # Windows come sorted, so each text's are one run of them.
        which = np.searchsorted(offsets, windows, side="right") - 1
        out: list[list[tuple[int, int]]] = [[] for _ in texts]
        cuts = np.flatnonzero(np.diff(which)) + 1
        for run in np.split(windows, cuts) if len(windows) else []:
            i = int(which[np.searchsorted(windows, run[0])])
            out[i] = _merge((run - offsets[i]).tolist(), span)
        return out

    def _shared_windows(self, codes: Codes, span: int) -> Positions:
        """The sorted starts of `codes`' `span`-character windows the training text holds."""
        if len(codes) < span or len(self._piece_hashes) == 0:
            return np.zeros(0, dtype=np.int64)
        pieces = _hash_all(codes, PIECE)
        slot = np.searchsorted(self._piece_hashes, pieces)
        slot = np.minimum(slot, len(self._piece_hashes) - 1)
        hit = np.flatnonzero(self._piece_hashes[slot] == pieces)
        if len(hit) == 0:
            return np.zeros(0, dtype=np.int64)
        # The candidate's windows that hold a hit piece, STRIDE - 1 characters back at most.
        windows = _hash_all(codes, span)
        holds_hit = np.zeros(len(windows), dtype=bool)
        for back in range(STRIDE):
            starts = hit - back
            holds_hit[starts[(starts >= 0) & (starts < len(windows))]] = True
        query_starts = np.flatnonzero(holds_hit)
        if len(query_starts) == 0:
            return np.zeros(0, dtype=np.int64)
        query_hashes = np.sort(windows[query_starts])
        # The training windows around every place a hit piece occurs, kept where a candidate
        # window has the same hash.
        hit_hashes = np.unique(pieces[hit])
        lo = np.searchsorted(self._piece_hashes, hit_hashes, side="left")
        hi = np.searchsorted(self._piece_hashes, hit_hashes, side="right")
        places = np.sort(self._piece_starts[_ranges(lo, hi)])
        train_starts, train_hashes = self._windows_around(places, span)
        # A bitmap of the candidate hashes' low bits turns most training windows away before
        # the exact search (binary search of millions of hashes is the slow part otherwise).
        seen = np.zeros(1 << _FILTER_BITS, dtype=bool)
        seen[query_hashes & _FILTER_MASK] = True
        near = np.flatnonzero(seen[train_hashes & _FILTER_MASK])
        train_starts, train_hashes = train_starts[near], train_hashes[near]
        slot = np.minimum(np.searchsorted(query_hashes, train_hashes), len(query_hashes) - 1)
        keep = query_hashes[slot] == train_hashes
        train_starts, slot = train_starts[keep], slot[keep]
        if len(slot) == 0:
            return np.zeros(0, dtype=np.int64)
        # One training window for each candidate hash (any of them; collisions are met below).
        example = np.full(len(query_hashes), -1, dtype=np.int64)
        example[slot] = train_starts
        mine = np.searchsorted(query_hashes, windows[query_starts])
        query_starts, mine = query_starts[example[mine] >= 0], mine[example[mine] >= 0]
        # Equal hashes, then equal characters: a collision is dropped here, not reported.
        offsets = np.arange(span, dtype=np.int64)
        query_windows = codes[query_starts[:, None] + offsets]
        same = (query_windows == self._codes[example[mine][:, None] + offsets]).all(axis=1)
        confirmed = [query_starts[same]]
        for q, m in zip(query_starts[~same].tolist(), mine[~same].tolist(), strict=True):
            # Rare: the window picked for this hash was a collision; try every other one.
            others = self._codes[train_starts[slot == m][:, None] + offsets]
            if (others == codes[q : q + span]).all(axis=1).any():
                confirmed.append(np.array([q], dtype=np.int64))
        return np.sort(np.concatenate(confirmed))

    def _windows_around(self, places: Positions, span: int) -> tuple[Positions, Hashes]:
        """The starts and hashes of the training windows that begin up to STRIDE - 1
        characters before each place: one hash each, then rolled a character at a time, so
        the cost is two reads a window rather than `span`."""
        codes, last = self._codes, len(self._codes) - 1
        start = places - (STRIDE - 1)
        # Indices are clipped so a window starting before the text rolls into true hashes
        # once it is inside; the windows outside are dropped below.
        h = np.zeros(len(places), dtype=np.uint64)
        for j in range(span):
            h = h * _BASE + codes[np.clip(start + j, 0, last)].astype(np.uint64)
        top = _BASE ** np.uint64(span - 1)
        starts, hashes = [start], [h]
        for _ in range(STRIDE - 1):
            h = (h - codes[np.clip(start, 0, last)].astype(np.uint64) * top) * _BASE
            h = h + codes[np.clip(start + span, 0, last)].astype(np.uint64)
            start = start + 1
            starts.append(start)
            hashes.append(h)
        all_starts, all_hashes = np.concatenate(starts), np.concatenate(hashes)
        valid = (all_starts >= 0) & (all_starts + span <= len(codes))
        return all_starts[valid], all_hashes[valid]


@dataclass(frozen=True)
class OverlapSummary:
    items: int
    sharing: int  # items with at least one shared span

    def __str__(self) -> str:
        return f"{self.sharing}/{self.items}"


def summarize(index: SpanIndex, items: Sequence[Sequence[str]], span: int = SPAN) -> OverlapSummary:
    """How many of the items (each one or more texts: a question and its answer, say) share a
    span of `span` characters with the index's training text."""
    flat = [text for item in items for text in item]
    shared = iter(index.spans_shared_many(flat, span))
    sharing = sum(any([bool(next(shared)) for _ in item]) for item in items)
    return OverlapSummary(items=len(items), sharing=sharing)


def random_spans(text: str, n: int = 300, length: int = 100, seed: int = 0) -> list[str]:
    """`n` spans of `length` characters from random places in `text` (the measure the issue
    quotes: how many of them occur verbatim in training)."""
    if len(text) < length:
        return []
    rng = random.Random(seed)
    return [text[s : s + length] for s in (rng.randrange(len(text) - length + 1) for _ in range(n))]
