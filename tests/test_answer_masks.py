"""Answer masks for any chat template: Llama 3, Qwen2.5, Qwen3, Mistral and Fireside's own.

Each expected answer is written out by hand, found in the rendered text, and exactly the
tokens inside it must be the ones the loss trains: for SFT files, DPO pairs and the lines the
chat app's feedback export writes. Templates without `{% generation %}` blocks train too."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from fireside.app.export import _turn, _turns
from fireside.model import Tokenizer, Transformer, save_pretrained
from fireside.model.answers import has_generation_blocks
from fireside.store.models import Conversation, Message
from fireside.train.chat_data import ChatDataError, LengthReport, load_dpo_file, load_sft_file
from fireside.train.dpo import train_dpo
from fireside.train.finetune import FinetuneOptions
from fireside.train.metrics import read_metrics
from fireside.train.sft import train_sft
from tests.conftest import tiny_config
from tests.family_templates import FAMILIES, family_tokenizer

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]
CALL = {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Oslo"}}}
SIMPLE = [
    {"role": "user", "content": "Say hello."},
    {"role": "assistant", "content": "Hello there!"},
    {"role": "user", "content": "What is 2 + 2?"},
    {"role": "assistant", "content": "It is 4."},
]
WITH_TOOLS = [
    {"role": "user", "content": "Weather in Oslo?"},
    {"role": "assistant", "content": None, "tool_calls": [CALL]},
    {"role": "tool", "content": "-3C, snow"},
    {"role": "assistant", "content": "Cold and snowy."},
]
THINK = "<think>\n\n</think>\n\n"  # Qwen3's empty reasoning in a turn after the last question
QWEN_CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>'
# Per family: the training sequences, each as the answers it trains, in order.
EXPECTED: dict[str, dict[str, list[list[str]]]] = {
    "llama3": {
        "simple": [["Hello there!<|eot_id|>", "It is 4.<|eot_id|>"]],
        "tools": [
            [
                '{"name": "get_weather", "parameters": {"city": "Oslo"}}<|eot_id|>',
                "Cold and snowy.<|eot_id|>",
            ]
        ],
    },
    "qwen2.5": {
        "simple": [["Hello there!<|im_end|>", "It is 4.<|im_end|>"]],
        "tools": [[QWEN_CALL + "<|im_end|>", "Cold and snowy.<|im_end|>"]],
    },
    # Qwen3 shows an empty <think> block in the answer being written and drops it from the
    # history, so each answer is a sequence of its own, as the model produced it.
    "qwen3": {
        "simple": [[THINK + "Hello there!<|im_end|>"], [THINK + "It is 4.<|im_end|>"]],
        "tools": [[THINK + QWEN_CALL + "<|im_end|>"], [THINK + "Cold and snowy.<|im_end|>"]],
    },
    "mistral": {"simple": [[" Hello there!</s>", " It is 4.</s>"]]},
    "fireside": {
        "simple": [["Hello there!<|end|>", "It is 4.<|end|>"]],
        "tools": [
            [
                '<|tool_call|>{"name": "get_weather", "arguments": {"city": "Oslo"}}'
                "<|/tool_call|><|end|>",
                "Cold and snowy.<|end|>",
            ]
        ],
    },
}
CASES = [(family, case) for family, cases in EXPECTED.items() for case in cases]


@pytest.fixture(scope="module")
def families(tokenizer: Tokenizer) -> dict[str, Tokenizer]:
    return {name: family_tokenizer(tokenizer, name) for name in FAMILIES}


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def assert_trains_exactly(
    tok: Tokenizer, ids: list[int], mask: list[int], answers: list[str]
) -> None:
    """The answers found in the rendered text by hand; the tokens inside them, and only
    those, are masked."""
    text = tok.decode(ids)
    encoded = tok.backend.encode(text, add_special_tokens=False)
    assert encoded.ids == ids  # the text is the sequence, tokenized in one piece
    spans, at = [], 0
    for answer in answers:
        start = text.index(answer, at)
        spans.append((start, start + len(answer)))
        at = start + len(answer)
    want = [int(any(s <= a and b <= e for s, e in spans)) for a, b in encoded.offsets]
    assert mask == want, text
    assert tok.decode([t for t, m in zip(ids, mask, strict=True) if m]) == "".join(answers)


@pytest.mark.parametrize(("family", "case"), CASES)
def test_sft_mask_is_exactly_the_answers(
    families: dict[str, Tokenizer], tmp_path: Path, family: str, case: str
) -> None:
    tok = families[family]
    messages, tools = (SIMPLE, None) if case == "simple" else (WITH_TOOLS, TOOLS)
    row: dict[str, Any] = {"messages": messages, **({"tools": tools} if tools else {})}
    examples = load_sft_file(write_jsonl(tmp_path / "sft.jsonl", [row]), tok, 4096, LengthReport())
    expected = EXPECTED[family][case]
    assert len(examples) == len(expected)
    for example, answers in zip(examples, expected, strict=True):
        assert_trains_exactly(tok, example.ids, example.mask, answers)
    if tools and family != "fireside":
        assert "get_weather" in tok.decode(examples[-1].ids).split(answers[0])[0]  # tools shown


def test_turn_by_turn_finds_what_generation_blocks_mark(tokenizer: Tokenizer) -> None:
    assert has_generation_blocks(tokenizer.chat_template or "")
    for messages, tools in ((SIMPLE, None), (WITH_TOOLS, TOOLS)):
        tagged = tokenizer.render_chat(messages, tools=tools)
        [found] = tokenizer.render_answers(messages, tools=tools)
        assert (found.ids, found.assistant_mask) == (tagged.ids, tagged.assistant_mask)


PAIR = {
    "prompt": [
        {"role": "user", "content": "Name a colour."},
        {"role": "assistant", "content": "Blue."},
        {"role": "user", "content": "Another one?"},
    ],
    "chosen": {"role": "assistant", "content": "Green."},
    "rejected": {"role": "assistant", "content": "I refuse."},
}
END = {
    "llama3": ("", "<|eot_id|>"),
    "qwen2.5": ("", "<|im_end|>"),
    "qwen3": (THINK, "<|im_end|>"),
    "mistral": (" ", "</s>"),
    "fireside": ("", "<|end|>"),
}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_dpo_mask_is_exactly_the_final_answer(
    families: dict[str, Tokenizer], tmp_path: Path, family: str
) -> None:
    tok = families[family]
    [pair] = load_dpo_file(write_jsonl(tmp_path / "pairs.jsonl", [PAIR]), tok, 4096)
    head, end = END[family]
    assert_trains_exactly(tok, pair.chosen_ids, pair.chosen_mask, [f"{head}Green.{end}"])
    assert_trains_exactly(tok, pair.rejected_ids, pair.rejected_mask, [f"{head}I refuse.{end}"])
    # The earlier answer ("Blue.") is part of the prompt, in both.
    assert "Blue." in tok.decode(pair.chosen_ids) and "Blue." in tok.decode(pair.rejected_ids)


def exported_lines() -> tuple[dict[str, Any], dict[str, Any]]:
    """An SFT line (a liked answer that called a tool) and a DPO line, made by the chat
    app's export from stored messages (OpenAI shapes: arguments as a JSON string, ids)."""
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
    }
    path = [
        Message(role="user", content="Weather in Oslo?"),
        Message(role="assistant", content="", tool_calls=[call]),
        Message(role="tool", content="-3C, snow", tool_calls=[call]),
        Message(role="assistant", content="Cold and snowy."),
    ]
    sft = {"messages": _turns(Conversation(system_prompt=None), path), "tools": TOOLS}
    question = Message(role="user", content="Name a colour.")
    dpo = {
        "prompt": _turns(Conversation(system_prompt="Be brief."), [question]),
        "chosen": _turn(Message(role="assistant", content="Green.")),
        "rejected": _turn(Message(role="assistant", content="I refuse.")),
    }
    return sft, dpo


STRING_ARGS = json.dumps('{"city": "Oslo"}')  # templates that tojson the arguments string
EXPORTED_CALL = {
    "llama3": '{"name": "get_weather", "parameters": ' + STRING_ARGS + "}<|eot_id|>",
    "qwen2.5": '<tool_call>\n{"name": "get_weather", "arguments": '
    + STRING_ARGS
    + "}\n</tool_call><|im_end|>",
    "qwen3": THINK + QWEN_CALL + "<|im_end|>",
    "fireside": EXPECTED["fireside"]["tools"][0][0],
}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_feedback_export_lines_train_exactly_the_answers(
    families: dict[str, Tokenizer], tmp_path: Path, family: str
) -> None:
    tok = families[family]
    sft, dpo = exported_lines()
    head, end = END[family]
    if family == "mistral":
        # Mistral moves the system prompt into the last user turn: adding the answer moves
        # it again, so the answer's tokens cannot be told apart. A clear error, not a guess.
        path = write_jsonl(tmp_path / "pairs.jsonl", [dpo])
        with pytest.raises(ChatDataError, match=rf"{path}:1: messages\[2\] \(assistant\)"):
            load_dpo_file(path, tok, 4096)
    else:
        [pair] = load_dpo_file(write_jsonl(tmp_path / "pairs.jsonl", [dpo]), tok, 4096)
        assert_trains_exactly(tok, pair.chosen_ids, pair.chosen_mask, [f"{head}Green.{end}"])
        assert "Be brief." in tok.decode(pair.chosen_ids)
        examples = load_sft_file(
            write_jsonl(tmp_path / "sft.jsonl", [sft]), tok, 4096, LengthReport()
        )
        answers = [EXPORTED_CALL[family], f"{head}Cold and snowy.{end}"]
        if family == "qwen3":
            assert len(examples) == 2
            for example, answer in zip(examples, answers, strict=True):
                assert_trains_exactly(tok, example.ids, example.mask, [answer])
        else:
            [example] = examples
            assert_trains_exactly(tok, example.ids, example.mask, answers)


def test_qwen3_reasoning_of_an_earlier_turn_trains_in_its_own_sequence(
    families: dict[str, Tokenizer], tmp_path: Path
) -> None:
    """Qwen3 keeps <think> only after the last question: the earlier turn's reasoning is
    trained where the model wrote it (the conversation through that turn), never dropped."""
    tok = families["qwen3"]
    messages = [
        {"role": "user", "content": "Say hello."},
        {"role": "assistant", "content": "<think>\nA greeting.\n</think>\n\nHello there!"},
        {"role": "user", "content": "What is 2 + 2?"},
        {"role": "assistant", "content": "<think>\n2 and 2 make 4.\n</think>\n\nIt is 4."},
    ]
    path = write_jsonl(tmp_path / "sft.jsonl", [{"messages": messages}])
    first, whole = load_sft_file(path, tok, 4096, LengthReport())
    assert_trains_exactly(
        tok, first.ids, first.mask, ["<think>\nA greeting.\n</think>\n\nHello there!<|im_end|>"]
    )
    assert_trains_exactly(
        tok, whole.ids, whole.mask, ["<think>\n2 and 2 make 4.\n</think>\n\nIt is 4.<|im_end|>"]
    )
    assert "A greeting." not in tok.decode(whole.ids)  # the history as Qwen3 shows it


def test_an_unstable_prefix_names_the_turn(families: dict[str, Tokenizer], tmp_path: Path) -> None:
    rows = [
        {"messages": SIMPLE},
        {"messages": [{"role": "system", "content": "Be brief."}, *SIMPLE]},
    ]
    path = write_jsonl(tmp_path / "sft.jsonl", rows)
    with pytest.raises(ChatDataError) as err:
        load_sft_file(path, families["mistral"], 4096, LengthReport())
    message = str(err.value)
    assert f"{path}:2: messages[2] (assistant)" in message
    assert "renders the conversation before this answer differently" in message


def base_dir(tmp_path: Path, tok: Tokenizer) -> Path:
    torch.manual_seed(0)
    model = Transformer(tiny_config(tok.vocab_size))
    model.init_weights()
    path = tmp_path / "base"
    save_pretrained(model, tok, path)
    return path


def options(base: Path, data: Path, out: Path, **kw: Any) -> FinetuneOptions:
    values: dict[str, Any] = dict(steps=12, batch_size=4, lr=3e-3, progress=False, device="cpu")
    values.update(kw)
    return FinetuneOptions(model=base, data=[str(data)], output=out, **values)


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_sft_and_dpo_train_on_every_family_template(
    families: dict[str, Tokenizer], tmp_path: Path, family: str
) -> None:
    """The losses fall with each family's template: with generation blocks (Fireside's) and
    without (ChatML's Qwen2.5 and Qwen3, Llama 3, Mistral), answers found turn by turn."""
    tok = families[family]
    assert has_generation_blocks(tok.chat_template or "") is (family == "fireside")
    base = base_dir(tmp_path, tok)
    rows = [
        {
            "messages": [
                {"role": "user", "content": f"What is {a} + {b}?"},
                {"role": "assistant", "content": f"{a + b}"},
            ]
        }
        for a in range(1, 5)
        for b in range(1, 4)
    ]
    train_sft(options(base, write_jsonl(tmp_path / "chat.jsonl", rows), tmp_path / "sft"))
    losses = [r["loss"] for r in read_metrics(tmp_path / "sft")]
    assert sum(losses[-3:]) / 3 < 0.6 * sum(losses[:3]) / 3

    pairs = [
        {
            "prompt": [{"role": "user", "content": f"Tell me about {topic}."}],
            "chosen": {"role": "assistant", "content": f"Here is a short note on {topic}."},
            "rejected": {"role": "assistant", "content": "No."},
        }
        for topic in ("rivers", "stars", "bread", "trains", "moss", "clocks")
    ]
    data = write_jsonl(tmp_path / "pairs.jsonl", pairs)
    train_dpo(options(base, data, tmp_path / "dpo", batch_size=3, lr=1e-3), beta=0.5)
    rows_dpo = read_metrics(tmp_path / "dpo")
    assert rows_dpo[-1]["loss"] < rows_dpo[0]["loss"]
    assert rows_dpo[-1]["reward_margin"] > rows_dpo[0]["reward_margin"]


@pytest.mark.parametrize("family", sorted(set(FAMILIES) - {"fireside"}))
def test_family_templates_render_as_transformers_renders_them(
    families: dict[str, Tokenizer], tmp_path: Path, family: str
) -> None:
    transformers = pytest.importorskip("transformers", reason="transformers (dev extra) missing")
    families[family].save(tmp_path)
    hf = transformers.AutoTokenizer.from_pretrained(tmp_path)
    cases = [(SIMPLE, None)] + ([(WITH_TOOLS, TOOLS)] if family != "mistral" else [])
    for messages, tools in cases:
        for prompt in (False, True):
            ours = families[family].render_chat(messages, tools=tools, add_generation_prompt=prompt)
            want = hf.apply_chat_template(
                messages, tools=tools, add_generation_prompt=prompt, tokenize=False
            )
            assert ours.text == want
