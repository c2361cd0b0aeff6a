"""A pretraining mix from `fireside data sources` output: prose and code in chosen shares, with
held-out prose and code kept apart for bits-per-byte evaluation.

A small model sees a few tens of millions of tokens, far fewer than the corpus holds, so what
it sees must be a sample of every source rather than the first files of the first one. Held-out
documents are chosen by a hash of their text, so re-running the mix never moves a document from
the evaluation set into training.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from fireside.data.prepare import clean
from fireside.errors import DataError

# Which kind each `fireside data sources` recipe is: evaluation reports prose and code apart.
KIND = {
    "debian-docs": "prose",
    "man-pages": "prose",
    "dictionary": "prose",
    "python-stdlib": "code",
    "python-packages": "code",
}
HELD_OUT_PER_MILLE = 5  # documents whose text hash falls here are evaluation-only


@dataclass(frozen=True)
class MixReport:
    train_chars: dict[str, int]
    held_out_chars: dict[str, int]


def held_out(text: str) -> bool:
    digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") % 1000 < HELD_OUT_PER_MILLE


def _documents(path: Path) -> Iterator[dict[str, str]]:
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                yield json.loads(line)


def mix(
    corpus: str | Path,
    output: str | Path,
    shares: Mapping[str, int],
    *,
    held_out_chars: int = 300_000,
    seed: int = 0,
) -> MixReport:
    """Write `output/train.jsonl` with about `shares[recipe]` characters drawn at random from
    each recipe's documents, and `output/held-out-{prose,code}.txt` (at most `held_out_chars`
    each) from documents no training mix ever includes."""
    corpus, output = Path(corpus), Path(output)
    output.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    train: list[str] = []
    report = MixReport(train_chars={}, held_out_chars={"prose": 0, "code": 0})
    evaluation: dict[str, list[str]] = {"prose": [], "code": []}
    for recipe, budget in shares.items():
        path = corpus / f"{recipe}.jsonl"
        if not path.is_file():
            raise DataError(f"{path} is missing: run `fireside data sources --recipe {recipe}`")
        kind = KIND.get(recipe, "prose")
        docs = []
        for doc in _documents(path):
            text = clean(doc["text"])
            if not text:
                continue
            if held_out(text):
                if report.held_out_chars[kind] < held_out_chars:
                    evaluation[kind].append(text)
                    report.held_out_chars[kind] += len(text)
            else:
                docs.append(json.dumps({"text": text, "source": recipe}))
        rng.shuffle(docs)
        taken = 0
        for line in docs:
            if taken >= budget:
                break
            train.append(line)
            taken += len(line)
        report.train_chars[recipe] = taken
    rng.shuffle(train)
    (output / "train.jsonl").write_text("\n".join(train) + "\n", encoding="utf-8")
    for kind, texts in evaluation.items():
        (output / f"held-out-{kind}.txt").write_text("\n\n".join(texts), encoding="utf-8")
    (output / "mix.json").write_text(
        json.dumps(
            {"train_chars": report.train_chars, "held_out_chars": report.held_out_chars}, indent=2
        )
    )
    return report
