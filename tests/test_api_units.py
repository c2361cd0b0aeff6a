"""Pure API logic without a server: tool-call parsing (whole and streamed, both formats),
grammar constraints over the real tokenizer, SSE framing and the error envelope."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import llguidance
import pytest
import torch

from fireside.api.errors import APIError
from fireside.api.guided import GrammarConstraint, constraint_factory, json_schema_grammar
from fireside.api.schemas import NamedToolChoice, Tool
from fireside.api.streaming import DONE, sse_event, sse_stream
from fireside.api.tools import (
    FIRESIDE,
    HERMES,
    ToolCallStreamParser,
    parse_tool_calls,
    tool_call_grammar,
    tool_format,
)
from fireside.model import Tokenizer


def fireside_call(name: str, args: str) -> str:
    return f'<|tool_call|>{{"name": "{name}", "arguments": {args}}}<|/tool_call|>'


def test_parse_fireside_calls() -> None:
    text = (
        "Let me check." + fireside_call("weather", '{"city": "Oslo"}') + fireside_call("time", "{}")
    )
    content, calls = parse_tool_calls(text, FIRESIDE)
    assert content == "Let me check."
    assert [c.function.name for c in calls] == ["weather", "time"]
    assert json.loads(calls[0].function.arguments) == {"city": "Oslo"}
    assert len({c.id for c in calls}) == 2


def test_parse_hermes_calls_and_bad_json_stays_content() -> None:
    text = '<tool_call>\n{"name": "f", "arguments": {"x": 1}}\n</tool_call>'
    content, calls = parse_tool_calls(text, HERMES)
    assert content is None and calls[0].function.name == "f"
    broken = "<tool_call>{not json}</tool_call>"
    content, calls = parse_tool_calls(broken, HERMES)
    assert calls == [] and content == broken


def test_unterminated_call_with_whole_json_is_parsed() -> None:
    content, calls = parse_tool_calls('<|tool_call|>{"name": "f", "arguments": {}}', FIRESIDE)
    assert content is None and calls[0].function.name == "f"


@pytest.mark.parametrize("step", [1, 2, 3, 7])
def test_stream_parser_matches_whole_parse(step: int) -> None:
    text = "Hi <|tool" + "x" + fireside_call("f", '{"a": [1, 2]}') + " bye"
    parser = ToolCallStreamParser(FIRESIDE)
    content, calls = "", []
    for i in range(0, len(text), step):
        c, k = parser.feed(text[i : i + step])
        content += c
        calls += k
    c, k = parser.finish()
    content += c
    calls += k
    whole_content, whole_calls = parse_tool_calls(text, FIRESIDE)
    assert content == whole_content == "Hi <|toolx bye"
    assert [c.function.arguments for c in calls] == [c.function.arguments for c in whole_calls]


def test_tool_format_follows_the_tokenizer(tokenizer: Tokenizer) -> None:
    assert tool_format(tokenizer) is FIRESIDE


def walk(constraint: GrammarConstraint, tokenizer: Tokenizer, text: str, vocab: int) -> None:
    for token in tokenizer.encode(text):
        mask = constraint.allowed(vocab)
        assert mask is not None and mask.dtype == torch.bool and mask.shape == (vocab,)
        assert bool(mask[token]), f"token {tokenizer.decode([token])!r} refused in {text!r}"
        constraint.accept(token)


def grammar_tokenizer(tokenizer: Tokenizer, vocab: int) -> llguidance.LLTokenizer:
    return llguidance.LLTokenizer(
        tokenizer.backend.to_str(), n_vocab=vocab, eos_token=tokenizer.eos_id
    )


def test_json_schema_constraint_allows_valid_and_refuses_invalid(tokenizer: Tokenizer) -> None:
    vocab = tokenizer.vocab_size + 64  # the model's logits may be wider than the tokenizer
    schema = {
        "type": "object",
        "properties": {"n": {"type": "integer"}},
        "required": ["n"],
        "additionalProperties": False,
    }
    make = constraint_factory(
        grammar_tokenizer(tokenizer, vocab), json_schema_grammar(schema), "response_format"
    )
    c = make()
    assert isinstance(c, GrammarConstraint)
    first = c.allowed(vocab)
    assert first is not None
    assert not bool(first[tokenizer.encode("x")[0]])  # JSON cannot start with x
    assert not bool(first[tokenizer.vocab_size :].any())  # padding rows are never allowed
    walk(c, tokenizer, '{"n": 42}', vocab)
    assert c.matcher.is_accepting()  # a whole object; more digits could still follow
    end = c.allowed(vocab)
    assert end is not None and bool(end[tokenizer.eos_id or 0])


def test_bad_schema_is_a_400(tokenizer: Tokenizer) -> None:
    llt = grammar_tokenizer(tokenizer, tokenizer.vocab_size)
    with pytest.raises(APIError) as e:
        constraint_factory(llt, json_schema_grammar({"type": "bogus"}), "response_format")
    assert e.value.status == 400 and "bogus" in e.value.message


def test_tool_grammar_forces_the_named_function(tokenizer: Tokenizer) -> None:
    vocab = tokenizer.vocab_size
    tools = [
        Tool.model_validate(
            {"type": "function", "function": {"name": "a", "parameters": {"type": "object"}}}
        ),
        Tool.model_validate({"type": "function", "function": {"name": "b"}}),
    ]
    named = NamedToolChoice.model_validate({"type": "function", "function": {"name": "b"}})
    grammar = tool_call_grammar(tools, named, FIRESIDE, parallel=True)
    make = constraint_factory(grammar_tokenizer(tokenizer, vocab), grammar, "tool_choice")
    c = make()
    mask = c.allowed(vocab)
    assert mask is not None and int(mask.sum()) == 1
    assert bool(mask[tokenizer.token_id("<|tool_call|>") or 0])
    walk(c, tokenizer, '<|tool_call|>{"name": "b", "arguments": {}}<|/tool_call|>', vocab)  # type: ignore[arg-type]
    assert c.is_finished()  # one call only: nothing but the end may follow
    refused = make()
    refused.accept(tokenizer.token_id("<|tool_call|>") or 0)
    with pytest.raises(AssertionError):
        walk(refused, tokenizer, '{"name": "a"', vocab)  # type: ignore[arg-type]


def test_sse_framing_and_error_event() -> None:
    async def events() -> AsyncIterator[APIError]:
        raise APIError("boom", 500, type="internal_error")
        yield

    async def frames() -> list[str]:
        return [f async for f in sse_stream(events())]  # type: ignore[arg-type]

    out = asyncio.run(frames())
    assert out[-1] == DONE
    assert json.loads(out[0][len("data: ") :])["error"]["message"] == "boom"
    assert sse_event({"a": 1}) == 'data: {"a":1}\n\n'


def test_hermes_tool_grammar_compiles_and_walks(tokenizer: Tokenizer) -> None:
    tools = [Tool.model_validate({"type": "function", "function": {"name": "f"}})]
    grammar = tool_call_grammar(tools, "required", HERMES, parallel=False)
    c = constraint_factory(
        grammar_tokenizer(tokenizer, tokenizer.vocab_size), grammar, "tool_choice"
    )()
    walk(
        c,
        tokenizer,
        '<tool_call>\n{"name": "f", "arguments": {}}\n</tool_call>',
        tokenizer.vocab_size,
    )  # type: ignore[arg-type]
    assert c.is_finished()
