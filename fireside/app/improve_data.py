"""An improve job's data: the consented feedback exported into its run directory, split by
question into what trains and what is held out for the evaluation.

The split is by question (the conversation up to the answer), not by line: a question's
regenerations make several DPO pairs and maybe an SFT conversation, and a model evaluated on
a pair whose question it trained on would be graded on its homework. Which questions are held
out depends only on their text (SHA-256 order), so a resumed or repeated export splits alike.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from fireside.app.export import dpo_pairs, sft_conversations
from fireside.store.models import now

Method = Literal["dpo", "sft"]
HELD_OUT = 0.15  # of the questions; at least one whenever there are two
TRAIN_FILE = "train.jsonl"
HELD_OUT_PAIRS = "heldout_pairs.jsonl"
HELD_OUT_CONVERSATIONS = "heldout_conversations.jsonl"
DATA_FILE = "data.json"

T = TypeVar("T")


def question_key(line: dict[str, Any]) -> str:
    """A DPO pair's prompt, or an SFT conversation without its last answer: the same question
    either way, as canonical JSON."""
    turns = line["prompt"] if "prompt" in line else line["messages"][:-1]
    return json.dumps(turns, sort_keys=True, ensure_ascii=False)


def held_out_questions(keys: Sequence[str], fraction: float = HELD_OUT) -> set[str]:
    """The questions kept out of training: the first ~`fraction` in SHA-256 order (at least
    one when there are two or more, so something is always left to train on and to test)."""
    unique = sorted(set(keys), key=lambda k: hashlib.sha256(k.encode()).hexdigest())
    if len(unique) < 2:
        return set()
    count = min(len(unique) - 1, max(1, math.floor(fraction * len(unique) + 0.5)))
    return set(unique[:count])


def split(
    lines: Sequence[T], held_out: set[str], key: Callable[[T], str]
) -> tuple[list[T], list[T]]:
    train = [line for line in lines if key(line) not in held_out]
    test = [line for line in lines if key(line) in held_out]
    return train, test


@dataclass
class FeedbackCounts:
    dpo_pairs: int
    sft_conversations: int
    questions: int  # distinct questions among them


async def feedback_counts(db: AsyncSession) -> FeedbackCounts:
    pairs, conversations = await dpo_pairs(db), await sft_conversations(db)
    keys = {question_key(line) for line in [*pairs, *conversations]}
    return FeedbackCounts(len(pairs), len(conversations), len(keys))


class NotEnoughFeedback(ValueError):
    """Too little consented feedback to train on and to evaluate with."""


async def export_run_data(db: AsyncSession, run_dir: Path, method: Method) -> dict[str, Any]:
    """Writes train.jsonl (`fireside train METHOD` reads it) and the held-out pairs and
    conversations; returns what the version records as its data."""
    pairs, conversations = await dpo_pairs(db), await sft_conversations(db)
    lines = pairs if method == "dpo" else conversations
    held_out = held_out_questions([question_key(line) for line in lines])
    train, _ = split(lines, held_out, question_key)
    if not train or not held_out:
        what = (
            "DPO pairs (an answer rated up beside a regenerated one)"
            if method == "dpo"
            else ("conversations ending in an answer rated up")
        )
        raise NotEnoughFeedback(
            f"not enough consented feedback for {method}: it needs {what} on at least two "
            f"different questions (one to train on, one held out); there are {len(lines)} "
            f"on {len({question_key(line) for line in lines})}"
        )
    # Pairs and conversations of the held-out questions both stay out of training, so the
    # evaluation's win rate and bits per byte are measured on unseen questions.
    _, test_pairs = split(pairs, held_out, question_key)
    _, test_conversations = split(conversations, held_out, question_key)
    run_dir.mkdir(parents=True, exist_ok=True)
    _write_jsonl(run_dir / TRAIN_FILE, train)
    _write_jsonl(run_dir / HELD_OUT_PAIRS, test_pairs)
    _write_jsonl(run_dir / HELD_OUT_CONVERSATIONS, test_conversations)
    data = {
        "method": method,
        "dpo_pairs": len(pairs),
        "sft_conversations": len(conversations),
        "train_lines": len(train),
        "held_out_questions": len(held_out),
        "held_out_pairs": len(test_pairs),
        "held_out_conversations": len(test_conversations),
        "feedback_up_to": now().isoformat(),  # every consented rating until this moment
    }
    (run_dir / DATA_FILE).write_text(json.dumps(data, indent=2))
    return data


def _write_jsonl(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    # `model` is the export's note of which model answered; training reads no such field.
    path.write_text(
        "".join(
            json.dumps({k: v for k, v in r.items() if k != "model"}, ensure_ascii=False) + "\n"
            for r in rows
        )
    )
