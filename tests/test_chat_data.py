"""SFT and DPO data: the loss mask covers exactly the assistant's words; bad files name FILE:LINE."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import torch

from fireside.model import Tokenizer, Transformer
from fireside.train.chat_data import (
    ChatDataError,
    LengthReport,
    MixtureSampler,
    last_run,
    load_dpo_file,
    load_sft_file,
    mixture_order,
    parse_weighted_path,
    require_chat_template,
)
from fireside.train.losses import (
    dpo_loss,
    masked_lm_loss,
    pad_batch,
    sequence_logprobs,
    shifted_labels,
)
from tests.conftest import tiny_config

CONVERSATION = {
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Say hello."},
        {"role": "assistant", "content": "Hello there!"},
        {"role": "user", "content": "What is 2 + 2?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"function": {"name": "add", "arguments": {"a": 2, "b": 2}}}],
        },
        {"role": "tool", "content": "4"},
        {"role": "assistant", "content": [{"type": "text", "text": "It is 4."}]},
    ]
}


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


ADD_TOOL = {
    "type": "function",
    "function": {"name": "add", "parameters": {"type": "object", "properties": {}}},
}


def test_sft_loss_tokens_decode_to_exactly_the_assistant_turns(
    tmp_path: Path, tokenizer: Tokenizer
) -> None:
    path = write_jsonl(tmp_path / "chat.jsonl", [{**CONVERSATION, "tools": [ADD_TOOL]}])
    [example] = load_sft_file(path, tokenizer, 1024, LengthReport())
    ids, mask = pad_batch([example.ids], [example.mask], pad_id=0)
    labels = shifted_labels(ids, mask)[0]
    trained = labels[labels != -100].tolist()
    assert tokenizer.decode(trained) == (
        "Hello there!<|end|>"
        '<|tool_call|>{"name": "add", "arguments": {"a": 2, "b": 2}}<|/tool_call|><|end|>'
        "It is 4.<|end|>"
    )
    # And nothing the user, system or tool said is a target.
    untrained = tokenizer.decode(
        [t for t, m in zip(example.ids, example.mask, strict=True) if not m]
    )
    for said in ("Be brief.", "Tools:\nadd(): ", "Say hello.", "<|tool|>4"):
        assert said in untrained


def test_padding_is_never_a_target(tokenizer: Tokenizer) -> None:
    ids, mask = pad_batch([[1, 2, 3, 4], [5, 6]], [[0, 1, 1, 1], [0, 1]], pad_id=99)
    assert ids[1].tolist() == [5, 6, 99, 99]
    assert shifted_labels(ids, mask).tolist() == [[2, 3, 4], [6, -100, -100]]


@pytest.mark.parametrize(
    ("line", "complaint"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('{"text": ""}', "'text' must be a non-empty string"),
        ('{"note": "hi"}', "'messages' must be a non-empty list"),
        ('{"messages": [{"role": "robot", "content": "x"}]}', "role 'robot'"),
        ('{"messages": [{"role": "user", "content": "x"}]}', "no assistant turn"),
        ('{"messages": [{"role": "user"}, {"role": "assistant", "content": "y"}]}', "no content"),
        ('{"messages": [{"role": "assistant", "content": 5}]}', "must be a string"),
        (
            '{"messages": [{"role": "user", "content": "a"}, {"role": "system", "content": "b"},'
            ' {"role": "assistant", "content": "c"}]}',
            "a system message may only come first",
        ),
        (
            '{"messages": [{"role": "user", "content": [{"type": "image_url"}]},'
            ' {"role": "assistant", "content": "c"}]}',
            "'image_url' is not supported",
        ),
    ],
)
def test_malformed_sft_line_is_reported_with_file_and_line(
    tmp_path: Path, tokenizer: Tokenizer, line: str, complaint: str
) -> None:
    path = tmp_path / "data.jsonl"
    path.write_text(json.dumps(CONVERSATION) + "\n\n" + line + "\n")
    with pytest.raises(ChatDataError) as err:
        load_sft_file(path, tokenizer, 1024, LengthReport())
    assert f"{path}:3" in str(err.value)
    assert complaint in str(err.value)


def test_empty_missing_and_binary_files_are_clear_errors(
    tmp_path: Path, tokenizer: Tokenizer
) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n  \n")
    with pytest.raises(ChatDataError, match="holds no conversations"):
        load_sft_file(empty, tokenizer, 1024, LengthReport())
    with pytest.raises(ChatDataError, match="does not exist"):
        load_sft_file(tmp_path / "nope.jsonl", tokenizer, 1024, LengthReport())
    with pytest.raises(ChatDataError, match="does not exist or is not a file"):
        load_sft_file(tmp_path, tokenizer, 1024, LengthReport())
    binary = tmp_path / "binary.jsonl"
    binary.write_bytes(json.dumps(CONVERSATION).encode() + b"\n\xff\xfe\x00garbage\n")
    with pytest.raises(ChatDataError, match=r"binary\.jsonl:2: not UTF-8"):
        load_sft_file(binary, tokenizer, 1024, LengthReport())


def test_tokenizer_without_a_chat_template_is_refused(tokenizer: Tokenizer) -> None:
    require_chat_template(tokenizer)
    with pytest.raises(ChatDataError, match="no chat template"):
        require_chat_template(Tokenizer(tokenizer.backend, None, tokenizer.special))


def test_over_long_conversations_are_truncated_or_dropped_and_counted(
    tmp_path: Path, tokenizer: Tokenizer
) -> None:
    long_user = {"role": "user", "content": "word " * 200}
    short = tokenizer.render_chat(CONVERSATION["messages"])
    assert len(short.ids) < 128
    rows = [
        CONVERSATION,  # fits
        {
            "messages": [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "x " * 200},
            ]
        },
        {"messages": [long_user, {"role": "assistant", "content": "late answer"}]},
    ]
    path = write_jsonl(tmp_path / "long.jsonl", rows)
    report = LengthReport()
    examples = load_sft_file(path, tokenizer, 128, report)
    assert (report.total, report.truncated, report.dropped) == (3, 1, 1)
    assert report.examples == [f"{path}:2", f"{path}:3"]
    assert [len(e.ids) for e in examples] == [len(short.ids), 128]
    assert examples[1].mask[-1] == 1  # cut inside the answer, which still trains
    assert "dropped" in report.summary()


def test_weighted_paths_and_mixture(tmp_path: Path) -> None:
    assert parse_weighted_path("chat.jsonl:3") == (Path("chat.jsonl"), 3.0)
    assert parse_weighted_path("code.jsonl") == (Path("code.jsonl"), 1.0)
    assert parse_weighted_path("a:b.jsonl") == (Path("a:b.jsonl"), 1.0)
    with pytest.raises(ChatDataError, match="positive number"):
        parse_weighted_path("chat.jsonl:0")
    order = mixture_order([4, 10], [3.0, 0.5], epoch=0, seed=1)
    counts = Counter(f for f, _ in order)
    assert counts == {0: 12, 1: 5}
    assert Counter(i for f, i in order if f == 0) == {0: 3, 1: 3, 2: 3, 3: 3}
    assert order == mixture_order([4, 10], [3.0, 0.5], epoch=0, seed=1)
    assert order != mixture_order([4, 10], [3.0, 0.5], epoch=1, seed=1)


PAIR = {
    "prompt": [
        {"role": "user", "content": "Name a colour."},
        {"role": "assistant", "content": "Blue."},
        {"role": "user", "content": "Another one?"},
    ],
    "chosen": {"role": "assistant", "content": "Green."},
    "rejected": {"role": "assistant", "content": "I refuse."},
}


def test_dpo_mask_covers_only_the_final_answer(tmp_path: Path, tokenizer: Tokenizer) -> None:
    path = write_jsonl(tmp_path / "pairs.jsonl", [PAIR])
    [pair] = load_dpo_file(path, tokenizer, 1024)
    chosen = [t for t, m in zip(pair.chosen_ids, pair.chosen_mask, strict=True) if m]
    rejected = [t for t, m in zip(pair.rejected_ids, pair.rejected_mask, strict=True) if m]
    assert tokenizer.decode(chosen) == "Green.<|end|>"
    assert tokenizer.decode(rejected) == "I refuse.<|end|>"
    assert last_run([1, 1, 0, 1, 1, 0]) == [0, 0, 0, 1, 1, 0]


@pytest.mark.parametrize(
    ("row", "complaint"),
    [
        ({"prompt": PAIR["prompt"], "chosen": PAIR["chosen"]}, "missing 'rejected'"),
        ({**PAIR, "prompt": []}, "'prompt' must be a non-empty list"),
        ({**PAIR, "chosen": {"role": "user", "content": "x"}}, "must be an assistant message"),
        ({**PAIR, "rejected": "just text"}, "must be an object"),
    ],
)
def test_malformed_dpo_line_is_reported_with_file_and_line(
    tmp_path: Path, tokenizer: Tokenizer, row: dict[str, Any], complaint: str
) -> None:
    path = write_jsonl(tmp_path / "pairs.jsonl", [PAIR, row])
    with pytest.raises(ChatDataError) as err:
        load_dpo_file(path, tokenizer, 1024)
    assert f"{path}:2" in str(err.value) and complaint in str(err.value)


def test_dpo_pair_longer_than_context_is_an_error(tmp_path: Path, tokenizer: Tokenizer) -> None:
    path = write_jsonl(tmp_path / "pairs.jsonl", [PAIR])
    with pytest.raises(ChatDataError, match="longer than the context"):
        load_dpo_file(path, tokenizer, 8)


def test_losses_match_their_definitions(tokenizer: Tokenizer) -> None:
    torch.manual_seed(0)
    model = Transformer(tiny_config(tokenizer.vocab_size))
    model.init_weights()
    ids, mask = pad_batch([[5, 6, 7, 8], [9, 10, 11]], [[0, 0, 1, 1], [0, 1, 1]], pad_id=0)
    with torch.no_grad():
        logp = model(ids[:, :-1]).log_softmax(-1)
        seq = sequence_logprobs(model, ids, mask)
        loss, n = masked_lm_loss(model, ids, mask)
    manual0 = logp[0, 1, 7] + logp[0, 2, 8]
    manual1 = logp[1, 0, 10] + logp[1, 1, 11]
    torch.testing.assert_close(seq, torch.stack([manual0, manual1]))
    assert n == 4
    torch.testing.assert_close(loss, -(manual0 + manual1) / 4)

    stats = dpo_loss(
        torch.tensor([-1.0, -2.0]),
        torch.tensor([-3.0, -1.0]),
        torch.tensor([-2.0, -2.0]),
        torch.tensor([-2.0, -2.0]),
        beta=0.5,
    )
    margins = [0.5 * (1.0 - -1.0), 0.5 * (0.0 - 1.0)]
    expected = -sum(math.log(1 / (1 + math.exp(-m))) for m in margins) / 2
    assert stats.loss.item() == pytest.approx(expected)
    assert stats.accuracy.item() == 0.5
    assert stats.chosen_rewards.tolist() == pytest.approx([0.5, 0.0])
    assert stats.rejected_rewards.tolist() == pytest.approx([-0.5, 0.5])


def test_mixture_sampler_walks_epochs_as_a_pure_function_of_the_step() -> None:
    sampler = MixtureSampler([3, 2], [1.0, 1.0], batch_size=2, seed=7)
    assert sampler.epoch_len == 5 and sampler.steps_per_epoch() == 3
    seen = [pick for step in range(5) for pick in sampler.batch(step)]
    assert sorted(seen[:5]) == sorted(seen[5:10]) == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)]
    fresh = MixtureSampler([3, 2], [1.0, 1.0], batch_size=2, seed=7)
    assert fresh.batch(3) == sampler.batch(3)  # no state: step 3 first, same records
    with pytest.raises(ChatDataError, match="mixture is empty"):
        MixtureSampler([0], [1.0], batch_size=2, seed=0)
