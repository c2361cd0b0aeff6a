"""Chat rendering matches transformers' apply_chat_template: text, token ids and assistant masks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from transformers import AutoTokenizer

from fireside.errors import ChatTemplateError, TokenizerError
from fireside.model import Tokenizer

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
CONVERSATIONS: dict[str, tuple[list[dict[str, Any]], Any]] = {
    "plain": ([{"role": "user", "content": "Hello there"}], None),
    "system": (
        [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Zürich — what's 2+2?"},
            {"role": "assistant", "content": "4."},
            {"role": "user", "content": "And 3+3?"},
        ],
        None,
    ),
    "tools": (
        [
            {"role": "user", "content": "Weather in Oslo?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
                    }
                ],
            },
            {"role": "tool", "content": "-3C, snow"},
            {"role": "assistant", "content": "Cold and snowy."},
        ],
        TOOLS,
    ),
}


@pytest.fixture(scope="module")
def saved(tokenizer: Tokenizer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tok")
    tokenizer.save(path)
    return path


@pytest.mark.parametrize("name", sorted(CONVERSATIONS))
@pytest.mark.parametrize("gen_prompt", [False, True])
def test_render_matches_transformers(saved: Path, name: str, gen_prompt: bool) -> None:
    messages, tools = CONVERSATIONS[name]
    ours = Tokenizer.from_dir(saved).render_chat(
        messages, add_generation_prompt=gen_prompt, tools=tools
    )
    hf = AutoTokenizer.from_pretrained(saved)
    want = hf.apply_chat_template(
        messages,
        tools=tools,
        add_generation_prompt=gen_prompt,
        tokenize=True,
        return_dict=True,
        return_assistant_tokens_mask=True,
    )
    assert ours.text == hf.apply_chat_template(
        messages, tools=tools, add_generation_prompt=gen_prompt, tokenize=False
    )
    assert ours.ids == list(want["input_ids"])
    assert ours.assistant_mask == list(want["assistant_masks"])


def test_assistant_mask_covers_exactly_the_assistant_turns(tokenizer: Tokenizer) -> None:
    messages, _ = CONVERSATIONS["system"]
    r = tokenizer.render_chat(messages)
    masked = tokenizer.decode([t for t, m in zip(r.ids, r.assistant_mask, strict=True) if m])
    assert masked == "4.<|end|>"
    r = tokenizer.render_chat(CONVERSATIONS["tools"][0], tools=TOOLS)
    masked = tokenizer.decode([t for t, m in zip(r.ids, r.assistant_mask, strict=True) if m])
    assert masked == (
        '<|tool_call|>{"name": "get_weather", "arguments": {"city": "Oslo"}}<|/tool_call|>'
        "<|end|>Cold and snowy.<|end|>"
    )


# A foreign template in the style of Qwen's ChatML, as a checkpoint would ship it.
CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content']"
    " + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


@pytest.mark.parametrize("where", ["tokenizer_config", "jinja_file"])
def test_foreign_template_renders_like_transformers(
    saved: Path, tmp_path: Path, where: str
) -> None:
    for f in saved.iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    (tmp_path / "chat_template.jinja").unlink()
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    if where == "tokenizer_config":
        config["chat_template"] = CHATML
    else:
        config.pop("chat_template")
        (tmp_path / "chat_template.jinja").write_text(CHATML)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    messages = CONVERSATIONS["system"][0]
    ours = Tokenizer.from_dir(tmp_path).render_chat(messages, add_generation_prompt=True)
    hf = AutoTokenizer.from_pretrained(tmp_path)
    assert ours.text == hf.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert ours.text.endswith("<|im_start|>assistant\n")


def test_content_parts_are_joined(tokenizer: Tokenizer) -> None:
    parts = [{"type": "text", "text": "Hello "}, {"type": "text", "text": "there"}]
    a = tokenizer.render_chat([{"role": "user", "content": parts}])
    b = tokenizer.render_chat([{"role": "user", "content": "Hello there"}])
    assert a.ids == b.ids


def test_bad_conversations_are_clear_errors(tokenizer: Tokenizer) -> None:
    with pytest.raises(ChatTemplateError, match="system message may only come first"):
        tokenizer.render_chat(
            [{"role": "user", "content": "a"}, {"role": "system", "content": "b"}]
        )
    with pytest.raises(ChatTemplateError, match="unknown role"):
        tokenizer.render_chat([{"role": "wizard", "content": "a"}])
    with pytest.raises(ChatTemplateError, match="image_url"):
        tokenizer.render_chat([{"role": "user", "content": [{"type": "image_url"}]}])


def test_tokenizer_round_trip_and_special_tokens(tokenizer: Tokenizer) -> None:
    text = "naïve café — 東京 🔥\n\tdef f(x): return x**2"
    assert tokenizer.decode(tokenizer.encode(text)) == text
    assert tokenizer.encode("<|user|>") == [tokenizer.token_id("<|user|>")]
    assert tokenizer.bos_id is not None and tokenizer.eos_id is not None
    with pytest.raises(TokenizerError, match="too small"):
        from fireside.model import train_tokenizer

        train_tokenizer(["abc"], vocab_size=100)
