"""Held-out text that training never saw: every line (or paragraph) of a held-out file that
shares a 50-character span with the training text is dropped.

The mix holds documents out by a hash of their text, but the corpus carries near-duplicates
(the same man page in two packages, a licence header in every file), so a held-out document
can be mostly training text under another name. Bits per byte on such text measures memory,
not modelling. Dropping lines can join two kept lines into a new shared span, so the check
runs again on what is kept until nothing is shared.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fireside.data.overlap import SPAN, SpanIndex, random_spans
from fireside.errors import DataError

# Paragraphs by default: a model reads them whole, where lines torn out of a function or a
# man page's section read as text no one wrote. (On the gpu-small mix, paragraphs keep 34% of
# the held-out prose and 60% of the code; lines 35% and 75%.)
UNITS = {"line": "\n", "paragraph": "\n\n"}
SAMPLE_SPANS, SAMPLE_LENGTH = 300, 100  # the measure: random 100-char spans in training
MAX_ROUNDS = 10


def jsonl_texts(path: Path) -> Iterator[str]:
    """The text a JSONL file trains on: each line's `text`, or its conversation's message
    contents (text parts and tool-call arguments too), one text each, so no span is counted
    across two messages."""
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{lineno}: malformed JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise DataError(f"{path}:{lineno}: expected an object per line")
            if isinstance(row.get("text"), str):
                yield row["text"]
            for message in row.get("messages") or []:
                yield from _message_texts(message)


def _message_texts(message: Any) -> Iterator[str]:
    if not isinstance(message, dict):
        return
    content = message.get("content")
    if isinstance(content, str):
        yield content
    elif isinstance(content, list):
        yield from (p["text"] for p in content if isinstance(p, dict) and "text" in p)
    for call in message.get("tool_calls") or []:
        arguments = (
            (call.get("function") or {}).get("arguments") if isinstance(call, dict) else None
        )
        if arguments is not None:
            yield arguments if isinstance(arguments, str) else json.dumps(arguments)


def training_texts(paths: Sequence[Path]) -> Iterator[str]:
    """Texts of training files: JSONL as `jsonl_texts` reads it, anything else whole."""
    for path in paths:
        if not path.is_file():
            raise DataError(f"{path} is not a file")
        if path.suffix == ".jsonl":
            yield from jsonl_texts(path)
        else:
            yield path.read_text(encoding="utf-8")


def _shared_pieces(index: SpanIndex, pieces: list[str], sep: str) -> np.ndarray:
    """Which pieces (joined by `sep`) are touched by a span the training text shares."""
    text = sep.join(pieces)
    ranges = index.spans_shared(text)
    lengths = np.array([len(p) for p in pieces], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths + len(sep))[:-1]])
    ends = starts + lengths
    if not ranges:
        return np.zeros(len(pieces), dtype=bool)
    r_start = np.array([r[0] for r in ranges])
    r_end = np.array([r[1] for r in ranges])
    # Ranges are sorted and apart: the first one ending after a piece starts is the only one
    # that can reach into it, and does if it starts before the piece ends (an empty piece
    # inside a range counts: it is where a separator the range holds would join two others).
    first = np.searchsorted(r_end, starts, side="right")
    inside = first < len(ranges)
    touched = np.zeros(len(pieces), dtype=bool)
    touched[inside] = r_start[first[inside]] < np.maximum(ends[inside], starts[inside] + 1)
    return touched


def drop_shared(index: SpanIndex, text: str, unit: str = "paragraph") -> tuple[str, int]:
    """`text` without the units (lines or paragraphs) that share a span with the training
    text, and how many were dropped; repeated until what is kept shares none."""
    if unit not in UNITS:
        raise DataError(f"unit must be one of {', '.join(UNITS)}, got {unit!r}")
    sep, dropped = UNITS[unit], 0
    for _ in range(MAX_ROUNDS):
        pieces = text.split(sep)
        touched = _shared_pieces(index, pieces, sep)
        if not touched.any():
            return text, dropped
        dropped += int(touched.sum())
        text = sep.join(p for p, t in zip(pieces, touched, strict=True) if not t)
    raise DataError(f"held-out text still shares spans after {MAX_ROUNDS} rounds")


def spans_in_training(index: SpanIndex, text: str, seed: int = 0) -> tuple[int, int]:
    """(found, sampled): how many random 100-character spans of `text` occur verbatim in the
    training text."""
    spans = random_spans(text, SAMPLE_SPANS, SAMPLE_LENGTH, seed)
    found = sum(bool(r) for r in index.spans_shared_many(spans, SAMPLE_LENGTH))
    return found, len(spans)


@dataclass(frozen=True)
class DedupReport:
    held_out: str
    output: str
    unit: str
    bytes_before: int
    bytes_after: int
    units_dropped: int
    spans_in_training_before: tuple[int, int]
    spans_in_training_after: tuple[int, int]
    characters_shared_after: int  # 0 unless the check is broken: verified on the written text

    def line(self) -> str:
        b0, b1 = self.spans_in_training_before, self.spans_in_training_after
        return (
            f"{self.output}: kept {self.bytes_after:,} of {self.bytes_before:,} bytes "
            f"({100 * self.bytes_after / max(1, self.bytes_before):.1f}%), dropped "
            f"{self.units_dropped} {self.unit}s; random {SAMPLE_LENGTH}-char spans found in "
            f"training: {b0[0]}/{b0[1]} before, {b1[0]}/{b1[1]} after"
        )


def dedup_file(
    index: SpanIndex, held_out: Path, output: Path, unit: str = "paragraph"
) -> DedupReport:
    """Write `output`: `held_out` without what it shares with the index's training text."""
    text = held_out.read_text(encoding="utf-8")
    kept, dropped = drop_shared(index, text, unit)
    tmp = output.with_name(output.name + ".tmp")
    tmp.write_text(kept, encoding="utf-8")
    tmp.replace(output)
    return DedupReport(
        held_out=str(held_out),
        output=str(output),
        unit=unit,
        bytes_before=len(text.encode()),
        bytes_after=len(kept.encode()),
        units_dropped=dropped,
        spans_in_training_before=spans_in_training(index, text),
        spans_in_training_after=spans_in_training(index, kept),
        characters_shared_after=sum(e - s for s, e in index.spans_shared(kept)),
    )


def dedup_output(held_out: Path) -> Path:
    """held-out-prose.txt -> held-out-prose.dedup.txt."""
    return held_out.with_name(f"{held_out.stem}.dedup{held_out.suffix or '.txt'}")


def dedup_held_out(
    train: Sequence[Path],
    held_out: Sequence[Path],
    outputs: Sequence[Path] | None = None,
    *,
    unit: str = "paragraph",
    report: Path | None = None,
) -> list[DedupReport]:
    """Index the training files once, then write each held-out file's de-duplicated copy;
    `report` (JSON) is written last, so its presence says every copy is complete."""
    outputs = list(outputs) if outputs else [dedup_output(p) for p in held_out]
    if len(outputs) != len(held_out):
        raise DataError(f"{len(held_out)} held-out files but {len(outputs)} outputs")
    for path in held_out:
        if not path.is_file():
            raise DataError(f"{path} is not a file")
    index = SpanIndex(training_texts(train))
    reports = [dedup_file(index, h, o, unit) for h, o in zip(held_out, outputs, strict=True)]
    if report is not None:
        body = {"span": SPAN, "train": [str(p) for p in train], "files": list(map(asdict, reports))}
        tmp = report.with_name(report.name + ".tmp")
        tmp.write_text(json.dumps(body, indent=2), encoding="utf-8")
        tmp.replace(report)
    return reports
