"""The improve job's pure parts: the held-out split by question, the preference win rate,
and progress read from a run's metrics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from fireside.app.improve import progress_of
from fireside.app.improve_data import held_out_questions, question_key, split
from fireside.eval.compare import ModelRef, load_model, pair_logprobs_all, preference_win_rate
from fireside.model import Tokenizer, Transformer, save_pretrained
from fireside.train.chat_data import load_dpo_file
from tests.conftest import tiny_config
from tests.family_templates import family_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")


def pair(question: str, chosen: str, rejected: str) -> dict[str, object]:
    return {
        "prompt": [{"role": "user", "content": question}],
        "chosen": {"role": "assistant", "content": chosen},
        "rejected": {"role": "assistant", "content": rejected},
    }


def test_the_held_out_split_is_by_question_deterministic_and_about_15_percent() -> None:
    pairs = [pair(f"Question {q}?", f"good {i}", f"bad {i}") for q in range(40) for i in range(2)]
    conversations = [
        {"messages": [*p["prompt"], p["chosen"]]}  # type: ignore[misc]
        for p in pairs[::2]
    ]
    keys = [question_key(p) for p in pairs]
    held = held_out_questions(keys)
    assert len(held) == 6  # 15% of 40 questions
    assert held == held_out_questions(list(reversed(keys)))  # order does not matter
    train, test = split(pairs, held, question_key)
    assert len(test) == 12 and len(train) == 68  # both pairs of a held-out question
    assert not {question_key(p) for p in train} & {question_key(p) for p in test}
    # An SFT conversation of a held-out question is held out with its pairs.
    _, test_conversations = split(conversations, held, question_key)
    assert {question_key(c) for c in test_conversations} == held


def test_small_sets_keep_one_question_each_side() -> None:
    assert held_out_questions([]) == set()
    assert held_out_questions(["a", "a"]) == set()  # one question: nothing to test on
    assert len(held_out_questions(["a", "b"])) == 1
    assert len(held_out_questions(["a", "b", "c"])) == 1


def test_preference_win_rate_counts_wins_and_half_ties() -> None:
    chosen = torch.tensor([-1.0, -5.0, -2.0, -3.0])
    rejected = torch.tensor([-2.0, -4.0, -2.0, -9.0])
    assert preference_win_rate(chosen, rejected) == pytest.approx((1 + 0 + 0.5 + 1) / 4)
    with pytest.raises(ValueError):
        preference_win_rate(torch.tensor([]), torch.tensor([]))


def test_win_rate_of_a_model_on_pairs_and_on_the_same_pairs_swapped(
    tmp_path: Path, tokenizer: Tokenizer
) -> None:
    tok = family_tokenizer(tokenizer, "qwen2.5")  # ChatML, no generation blocks
    torch.manual_seed(0)
    model = Transformer(tiny_config(tok.vocab_size))
    model.init_weights(std=0.1)
    save_pretrained(model, tok, tmp_path / "m")
    rows = [pair(f"Tell me about {t}.", f"A note on {t}.", "No.") for t in ("moss", "rain", "tea")]
    swapped = [{**r, "chosen": r["rejected"], "rejected": r["chosen"]} for r in rows]
    for name, lines in (("pairs", rows), ("swapped", swapped)):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    bundle = load_model(ModelRef(tmp_path / "m"), "cpu")
    forward = load_dpo_file(tmp_path / "pairs.jsonl", tok, 256)
    backward = load_dpo_file(tmp_path / "swapped.jsonl", tok, 256)
    chosen, rejected = pair_logprobs_all(bundle, forward, batch_size=2)
    assert chosen.shape == (3,) and bool((chosen < 0).all())
    rate = preference_win_rate(chosen, rejected)
    assert preference_win_rate(*pair_logprobs_all(bundle, backward)) == pytest.approx(1 - rate)


def test_progress_reads_step_loss_margin_and_time_left() -> None:
    records: list[dict[str, Any]] = [
        {"step": 1, "loss": 0.69, "reward_margin": 0.0, "step_s": 2.0},
        {"step": 2, "loss": 0.6, "reward_margin": 0.3, "step_s": 4.0},
        {"step": 2, "sample": "text"},  # free text lines are not steps
    ]
    assert progress_of(records, 10) == {
        "step": 2,
        "total": 10,
        "loss": 0.6,
        "reward_margin": 0.3,
        "eta_s": 24.0,
    }
    assert progress_of([], 10) is None
