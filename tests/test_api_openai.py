"""The official `openai` client, sync and async, against a real server and the real engine."""

from __future__ import annotations

import asyncio
import json
import math
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import jsonschema
import openai
import pytest

from fireside.model import Tokenizer
from tests.api_utils import RunningServer, run_server
from tests.worker_utils import run_gateway

MESSAGES = [{"role": "user", "content": "Write a function that parses JSON."}]


@pytest.fixture(scope="module", params=["local", "gateway"])
def server(
    request: pytest.FixtureRequest, api_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    """The model in the server's own process, and behind a gateway (`fireside serve
    --workers`) over two `fireside worker` processes: the API must not tell them apart."""
    if request.param == "local":
        with run_server(api_model_dir) as s:
            yield s
        return
    with run_gateway(api_model_dir, tmp_path_factory.mktemp("gateway-logs"), workers=2) as s:
        yield s


@pytest.fixture
def client(server: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0)


def tokenize(server: RunningServer, text: str) -> list[int]:
    r = httpx.post(f"{server.url}/tokenize", json={"prompt": text})
    r.raise_for_status()
    return list(r.json()["tokens"])


# -- models ----------------------------------------------------------------------------------


def test_models_list_and_retrieve(client: openai.OpenAI) -> None:
    models = client.models.list().data
    assert [m.id for m in models] == ["tiny"]
    assert client.models.retrieve("tiny").id == "tiny"
    with pytest.raises(openai.NotFoundError) as e:
        client.models.retrieve("gpt-4")
    assert e.value.body["code"] == "model_not_found"  # type: ignore[index]


# -- chat ------------------------------------------------------------------------------------


def test_chat_stream_equals_non_stream_at_temperature_0(client: openai.OpenAI) -> None:
    whole = client.chat.completions.create(
        model="tiny",
        messages=MESSAGES,
        max_tokens=24,
        temperature=0,  # type: ignore[arg-type]
    )
    chunks = list(
        client.chat.completions.create(
            model="tiny",
            messages=MESSAGES,  # type: ignore[arg-type]
            max_tokens=24,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.choices[0].delta.role is None for c in chunks[1:] if c.choices)
    finishes = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finishes == [whole.choices[0].finish_reason]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert whole.choices[0].message.content
    assert text == whole.choices[0].message.content
    # Exactly one usage chunk, last, with no choices and the same counts as the whole answer.
    assert [c.usage is not None for c in chunks].count(True) == 1
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens  # type: ignore[union-attr]
    assert chunks[-1].usage.prompt_tokens == whole.usage.prompt_tokens  # type: ignore[union-attr]


def test_sse_framing_ends_with_done(server: RunningServer) -> None:
    body = {"model": "tiny", "messages": MESSAGES, "max_tokens": 4, "stream": True}
    with httpx.stream("POST", f"{server.base_url}/chat/completions", json=body) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        events = [line for line in r.iter_lines() if line]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"
    assert all(json.loads(e[6:])["object"] == "chat.completion.chunk" for e in events[:-1])


def test_max_tokens_and_max_completion_tokens(client: openai.OpenAI) -> None:
    for field in ("max_tokens", "max_completion_tokens"):
        r = client.chat.completions.create(
            model="tiny",
            messages=MESSAGES,  # type: ignore[arg-type]
            temperature=0,
            extra_body={"ignore_eos": True},
            **{field: 5},  # type: ignore[arg-type]
        )
        assert r.usage is not None and r.usage.completion_tokens == 5
        assert r.choices[0].finish_reason == "length"


def test_n_with_seed_is_reproducible(client: openai.OpenAI) -> None:
    def ask(seed: int) -> list[str]:
        r = client.chat.completions.create(
            model="tiny",
            messages=MESSAGES,
            max_tokens=12,
            n=3,
            seed=seed,
            temperature=1.0,  # type: ignore[arg-type]
        )
        assert [c.index for c in r.choices] == [0, 1, 2]
        return [c.message.content or "" for c in r.choices]

    first = ask(7)
    assert ask(7) == first
    assert ask(8) != first
    assert len(set(first)) > 1  # the samples differ from one another


def test_stop_string_and_list(client: openai.OpenAI) -> None:
    full = (
        client.completions.create(
            model="tiny", prompt="import json\n", max_tokens=20, temperature=0
        )
        .choices[0]
        .text
    )
    assert len(full) > 6
    stop = full[3:6]
    before = full[: full.index(stop)]
    for spec in (stop, [stop, "never appears here"]):
        r = client.completions.create(
            model="tiny", prompt="import json\n", max_tokens=20, temperature=0, stop=spec
        )
        assert r.choices[0].text == before
        assert r.choices[0].finish_reason == "stop"


def test_reply_cut_inside_a_character_ends_in_replacement_character(
    client: openai.OpenAI,
) -> None:
    """max_tokens cuts the second 火 after two of its three bytes (the tiny vocabulary has one
    token per byte for it): streamed or not, the text is all tokens decoded at once."""
    ask = dict(model="tiny", max_tokens=5, extra_body={"guided_regex": "火火"})
    chat = client.chat.completions.create(messages=MESSAGES, **ask)  # type: ignore[call-overload]
    assert chat.choices[0].finish_reason == "length"
    assert chat.choices[0].message.content == "火\ufffd"
    chunks = client.chat.completions.create(messages=MESSAGES, stream=True, **ask)  # type: ignore[call-overload]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "火\ufffd"
    whole = client.completions.create(prompt="print(", **ask)  # type: ignore[call-overload]
    assert whole.choices[0].text == "火\ufffd"
    chunks = client.completions.create(prompt="print(", stream=True, **ask)  # type: ignore[call-overload]
    assert "".join(c.choices[0].text for c in chunks) == "火\ufffd"


def test_chat_logprobs(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(
        model="tiny",
        messages=MESSAGES,
        max_tokens=6,
        temperature=0,
        logprobs=True,
        top_logprobs=3,  # type: ignore[arg-type]
    )
    content = r.choices[0].logprobs.content  # type: ignore[union-attr]
    assert content is not None and len(content) == r.usage.completion_tokens  # type: ignore[union-attr]
    # Raw bytes, since a byte-level token may hold part of a character.
    joined = bytes(b for t in content for b in t.bytes or [])
    assert joined.decode("utf-8", errors="replace") == r.choices[0].message.content
    for t in content:
        assert len(t.top_logprobs) == 3
        lps = [x.logprob for x in t.top_logprobs]
        assert lps == sorted(lps, reverse=True) and all(lp <= 0 for lp in lps)
        assert t.logprob == pytest.approx(lps[0])  # greedy picks the best token


def test_vllm_knobs_and_unknown_fields(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(
        model="tiny",
        messages=MESSAGES,  # type: ignore[arg-type]
        max_tokens=8,
        extra_body={
            "top_k": 5,
            "min_p": 0.05,
            "repetition_penalty": 1.2,
            "min_tokens": 8,
            "stop_token_ids": [],
            "skip_special_tokens": False,
            "no_such_field": {"x": 1},
        },
    )
    assert r.usage is not None and r.usage.completion_tokens == 8


# -- completions -------------------------------------------------------------------------------


def test_completion_prompt_shapes(client: openai.OpenAI, server: RunningServer) -> None:
    ids = tokenize(server, "def main():")
    as_text = client.completions.create(
        model="tiny", prompt="def main():", max_tokens=6, temperature=0
    )
    as_ids = client.completions.create(model="tiny", prompt=ids, max_tokens=6, temperature=0)
    assert as_ids.choices[0].text == as_text.choices[0].text
    many = client.completions.create(
        model="tiny", prompt=["def main():", "class A:"], max_tokens=6, temperature=0, n=2
    )
    assert [c.index for c in many.choices] == [0, 1, 2, 3]
    assert many.choices[0].text == as_text.choices[0].text
    many_ids = client.completions.create(
        model="tiny", prompt=[ids, tokenize(server, "class A:")], max_tokens=6, temperature=0
    )
    assert many_ids.choices[0].text == as_text.choices[0].text
    assert many_ids.choices[1].text == many.choices[2].text
    assert many_ids.usage is not None and many_ids.usage.completion_tokens == 12


def test_completion_echo_logprobs_cover_the_prompt(
    client: openai.OpenAI, server: RunningServer
) -> None:
    prompt = "import os\nprint(os.getcwd())"
    ids = tokenize(server, prompt)
    r = client.completions.create(
        model="tiny", prompt=prompt, max_tokens=3, temperature=0, logprobs=2, echo=True
    )
    choice = r.choices[0]
    lp = choice.logprobs
    assert lp is not None and lp.token_logprobs is not None and lp.tokens is not None
    assert choice.text.startswith(prompt)
    assert len(lp.tokens) == len(ids) + 3
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None  # type: ignore[index]
    assert all(x is not None and x <= 0 for x in lp.token_logprobs[1:])
    assert "".join(lp.tokens) == choice.text
    assert lp.text_offset == [sum(len(t) for t in lp.tokens[:i]) for i in range(len(lp.tokens))]


def test_completion_stream_equals_non_stream(client: openai.OpenAI) -> None:
    whole = client.completions.create(model="tiny", prompt="for i in", max_tokens=16, temperature=0)
    chunks = list(
        client.completions.create(
            model="tiny", prompt="for i in", max_tokens=16, temperature=0, stream=True
        )
    )
    assert "".join(c.choices[0].text for c in chunks) == whole.choices[0].text
    assert [c.choices[0].finish_reason for c in chunks if c.choices[0].finish_reason] == ["length"]


# -- structured output and tools ---------------------------------------------------------------

SCHEMA = {
    "type": "object",
    "properties": {
        "ok": {"type": "boolean"},
        "color": {"enum": ["red", "green", "blue"]},
    },
    "required": ["ok", "color"],
    "additionalProperties": False,
}


def test_response_format_json_schema_validates(client: openai.OpenAI) -> None:
    for seed in (1, 2, 3):
        r = client.chat.completions.create(
            model="tiny",
            messages=MESSAGES,  # type: ignore[arg-type]
            max_tokens=60,
            seed=seed,
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "answer", "schema": SCHEMA},
            },
        )
        assert r.choices[0].finish_reason == "stop"
        jsonschema.validate(json.loads(r.choices[0].message.content or ""), SCHEMA)


def test_response_format_json_object_parses(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(
        model="tiny",
        messages=MESSAGES,  # type: ignore[arg-type]
        max_tokens=200,
        temperature=0,
        response_format={"type": "json_object"},
    )
    assert r.choices[0].finish_reason == "stop"
    assert isinstance(json.loads(r.choices[0].message.content or ""), dict)


def test_bad_json_schema_is_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(
            model="tiny",
            messages=MESSAGES,  # type: ignore[arg-type]
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "x", "schema": {"type": "bogus"}},
            },
        )
    assert "bogus" in str(e.value)


# Short, because the tiny tokenizer spends many tokens on JSON and the context is 256.
LIGHT = {
    "type": "object",
    "properties": {"on": {"type": "boolean"}},
    "required": ["on"],
    "additionalProperties": False,
}
TOOLS = [
    {"type": "function", "function": {"name": "light", "parameters": LIGHT}},
    {
        "type": "function",
        "function": {
            "name": "noop",
            "parameters": {"type": "object", "properties": {}, "additionalProperties": False},
        },
    },
]


@pytest.mark.parametrize(
    "choice", ["required", {"type": "function", "function": {"name": "light"}}]
)
def test_forced_tool_calls(client: openai.OpenAI, choice: object) -> None:
    r = client.chat.completions.create(
        model="tiny",
        messages=MESSAGES,  # type: ignore[arg-type]
        max_tokens=80,
        temperature=0,
        tools=TOOLS,  # type: ignore[arg-type]
        tool_choice=choice,  # type: ignore[arg-type]
        parallel_tool_calls=False,
    )
    choice0 = r.choices[0]
    assert choice0.finish_reason == "tool_calls"
    calls = choice0.message.tool_calls
    assert calls is not None and len(calls) == 1
    call = calls[0]
    assert call.id.startswith("call_")
    if isinstance(choice, dict):
        assert call.function.name == "light"
    args = json.loads(call.function.arguments)
    jsonschema.validate(args, LIGHT if call.function.name == "light" else {"maxProperties": 0})
    # Streamed, the same call arrives as tool_calls deltas.
    chunks = list(
        client.chat.completions.create(
            model="tiny",
            messages=MESSAGES,  # type: ignore[arg-type]
            max_tokens=80,
            temperature=0,
            tools=TOOLS,  # type: ignore[arg-type]
            tool_choice=choice,  # type: ignore[arg-type]
            parallel_tool_calls=False,
            stream=True,
        )
    )
    deltas = [tc for c in chunks for tc in (c.choices[0].delta.tool_calls or [])]
    assert [d.function.name for d in deltas if d.function] == [call.function.name]
    assert (
        "".join(d.function.arguments or "" for d in deltas if d.function) == call.function.arguments
    )
    assert [c.choices[0].finish_reason for c in chunks if c.choices[0].finish_reason] == [
        "tool_calls"
    ]


def test_auto_tool_call_is_parsed_from_the_output(client: openai.OpenAI) -> None:
    # With tool_choice "auto" the model decides; a grammar (vLLM's structured_outputs) makes this
    # random model write a call in Fireside's format, which the server must parse back out.
    call = json.dumps({"name": "light", "arguments": {"on": True}})
    grammar = f"start: {json.dumps('Sure. ')} <|tool_call|> {json.dumps(call)} <|/tool_call|>"
    kwargs = dict(
        model="tiny", messages=MESSAGES, max_tokens=60, tools=TOOLS, tool_choice="auto",
        extra_body={"structured_outputs": {"grammar": grammar}},
    )  # fmt: skip
    r = client.chat.completions.create(**kwargs)  # type: ignore[call-overload]
    message = r.choices[0].message
    assert r.choices[0].finish_reason == "tool_calls"
    assert message.content == "Sure. "
    assert [(c.function.name, json.loads(c.function.arguments)) for c in message.tool_calls] == [
        ("light", {"on": True})
    ]
    chunks = list(client.chat.completions.create(stream=True, **kwargs))  # type: ignore[call-overload]
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    deltas = [tc for c in chunks for tc in (c.choices[0].delta.tool_calls or [])]
    assert text == "Sure. "
    assert [(d.index, d.function.name) for d in deltas if d.function] == [(0, "light")]
    assert json.loads(deltas[0].function.arguments or "") == {"on": True}  # type: ignore[union-attr]


def test_auto_tool_calls_are_whole_and_no_markup_reaches_the_content(
    client: openai.OpenAI, tokenizer: Tokenizer
) -> None:
    # No grammar from the client: with tools and tool_choice "auto" the server's own one lets
    # the model write text or calls, and a call it opens is whole and fits its tool's schema.
    # The bias pushes this random model to open calls; sampling makes it babble.
    start = tokenizer.token_id("<|tool_call|>")
    specials = tokenizer.special_token_texts()
    schemas = {"light": LIGHT, "noop": {"maxProperties": 0}}
    called = 0
    for seed in range(4):
        kwargs = dict(
            model="tiny", messages=MESSAGES, max_tokens=80, temperature=1.0, seed=seed,
            tools=TOOLS, tool_choice="auto", logit_bias={str(start): 3},
        )  # fmt: skip
        r = client.chat.completions.create(**kwargs)  # type: ignore[call-overload]
        message = r.choices[0].message
        assert not any(s in (message.content or "") for s in specials), message.content
        for call in message.tool_calls or []:
            jsonschema.validate(json.loads(call.function.arguments), schemas[call.function.name])
            called += 1
        chunks = list(client.chat.completions.create(stream=True, **kwargs))  # type: ignore[call-overload]
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert not any(s in text for s in specials), text
    assert called >= 1


def test_no_tools_offered_no_call_and_no_markup(
    client: openai.OpenAI, tokenizer: Tokenizer
) -> None:
    # Without tools (or with tool_choice "none") the call markers are never sampled, however
    # hard the model (here a bias) pushes for them: no call, and no marker text in the answer.
    markers = [tokenizer.token_id("<|tool_call|>"), tokenizer.token_id("<|/tool_call|>")]
    specials = tokenizer.special_token_texts()
    bias = {str(i): 100 for i in markers if i is not None}
    assert len(bias) == 2
    for seed, extra in enumerate([{}, {"tools": TOOLS, "tool_choice": "none"}] * 2):
        kwargs = dict(
            model="tiny", messages=MESSAGES, max_tokens=24, temperature=1.0, seed=seed,
            logit_bias=bias, logprobs=True, **extra,
        )  # fmt: skip
        r = client.chat.completions.create(**kwargs)  # type: ignore[call-overload]
        message = r.choices[0].message
        assert not message.tool_calls, message.tool_calls
        assert r.choices[0].finish_reason != "tool_calls"
        assert not any(s in (message.content or "") for s in specials), message.content
        chosen = [t.token for t in r.choices[0].logprobs.content or []]  # type: ignore[union-attr]
        assert chosen and not any(s in t for t in chosen for s in specials), chosen


def test_structured_outputs_choice_regex_json(client: openai.OpenAI) -> None:
    for seed in range(3):
        r = client.completions.create(
            model="tiny", prompt="The answer is", max_tokens=20, seed=seed,
            extra_body={"guided_choice": ["yes", "no", "a \"maybe\""]},
        )  # fmt: skip
        assert r.choices[0].text in ("yes", "no", 'a "maybe"')
        r = client.completions.create(
            model="tiny", prompt="Call", max_tokens=20, seed=seed,
            extra_body={"structured_outputs": {"regex": "[0-9]{3}-[a-z]{2}"}},
        )  # fmt: skip
        assert re.fullmatch("[0-9]{3}-[a-z]{2}", r.choices[0].text)
    r = client.completions.create(
        model="tiny", prompt="{", max_tokens=60, seed=1, extra_body={"guided_json": SCHEMA}
    )
    jsonschema.validate(json.loads(r.choices[0].text), SCHEMA)


def test_two_output_constraints_are_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(
            model="tiny", messages=MESSAGES, response_format={"type": "json_object"},  # type: ignore[arg-type]
            extra_body={"guided_regex": "a+"},
        )  # fmt: skip
    assert "cannot be combined" in str(e.value)


def test_tool_history_renders(
    client: openai.OpenAI, server: RunningServer, tokenizer: Tokenizer
) -> None:
    messages = [
        {"role": "user", "content": "Lights on"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "light", "arguments": '{"on": true}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "done"},
    ]
    r = client.chat.completions.create(
        model="tiny",
        messages=messages,
        max_tokens=4,
        tools=TOOLS,
        tool_choice="none",  # type: ignore[arg-type]
    )
    assert r.choices[0].message.tool_calls in (None, [])
    # The prompt the model saw (tool_choice "none" leaves the tool list out) is the template's
    # rendering of the call and its result.
    history = (
        "<|user|>Lights on<|end|>"
        '<|assistant|><|tool_call|>{"name": "light", "arguments": {"on": true}}<|/tool_call|>'
        "<|end|><|tool|>done<|end|><|assistant|>"
    )
    seen = httpx.post(f"{server.url}/tokenize", json={"messages": messages}).json()
    assert r.usage is not None and r.usage.prompt_tokens == seen["count"]
    assert tokenizer.decode(seen["tokens"], skip_special_tokens=False) == "<|endoftext|>" + history
    with_tools = httpx.post(
        f"{server.url}/tokenize", json={"messages": messages, "tools": TOOLS}
    ).json()
    text = tokenizer.decode(with_tools["tokens"], skip_special_tokens=False)
    assert text.endswith(history)
    assert text.split("<|end|>")[0].endswith(
        "Tools:\nlight(on): \nnoop(): "
    )  # the tools, in the system turn


# -- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"temperature": 2.5}, "temperature"),
        ({"n": 0}, "n"),
        ({"n": 129}, "n"),
        ({"stop": [f"s{i}" for i in range(17)]}, "stop"),
        ({"top_logprobs": 3}, "top_logprobs"),
        ({"max_tokens": 10_000}, "max_tokens"),
        ({"seed": 2**70}, "seed"),
        ({"logit_bias": {"99999": 1}}, "logit_bias"),
    ],
)
def test_invalid_values_are_400(
    server: RunningServer, extra: dict[str, object], param: str
) -> None:
    body = {"model": "tiny", "messages": MESSAGES, **extra}
    r = httpx.post(f"{server.base_url}/chat/completions", json=body)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    assert error["param"].startswith(param)


def test_content_parts(client: openai.OpenAI) -> None:
    parts = [
        {"type": "text", "text": "Write a function "},
        {"type": "text", "text": "that parses JSON."},
    ]
    kwargs = dict(model="tiny", max_tokens=6, temperature=0)
    joined = client.chat.completions.create(messages=MESSAGES, **kwargs)  # type: ignore[call-overload]
    split = client.chat.completions.create(messages=[{"role": "user", "content": parts}], **kwargs)  # type: ignore[call-overload]
    assert split.choices[0].message.content == joined.choices[0].message.content
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(messages=[{"role": "user", "content": [image]}], **kwargs)  # type: ignore[call-overload]
    assert "image_url" in str(e.value)  # refused, not silently dropped


def test_prompt_over_context_is_400_not_truncated(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model="tiny", prompt="word " * 1100, max_tokens=4)
    assert e.value.code == "context_length_exceeded"


@pytest.mark.parametrize(
    "content",
    [b"{not json", b"[]", b'{"messages": "hi"}', b""],
)
def test_malformed_bodies_are_400_never_422(server: RunningServer, content: bytes) -> None:
    r = httpx.post(
        f"{server.base_url}/chat/completions",
        content=content,
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 400, r.text
    assert r.json()["error"]["type"] == "invalid_request_error"


def test_unknown_model_and_route_are_404(client: openai.OpenAI, server: RunningServer) -> None:
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)  # type: ignore[arg-type]
    r = httpx.get(f"{server.url}/v1/nothing")
    assert r.status_code == 404 and "error" in r.json()


def test_oversized_body_is_413(server: RunningServer) -> None:
    body = {"model": "tiny", "prompt": "x" * (9 << 20)}
    r = httpx.post(f"{server.base_url}/completions", json=body)
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "request_too_large"


# -- concurrency, metrics --------------------------------------------------------------------


def test_concurrent_streams_match_the_non_streamed_answer(
    client: openai.OpenAI, server: RunningServer
) -> None:
    prompts = [f"def f{i}(x):" for i in range(6)]
    expected = [
        client.completions.create(model="tiny", prompt=p, max_tokens=20, temperature=0)
        .choices[0]
        .text
        for p in prompts
    ]

    async def one(aclient: openai.AsyncOpenAI, prompt: str) -> str:
        stream = await aclient.completions.create(
            model="tiny", prompt=prompt, max_tokens=20, temperature=0, stream=True
        )
        return "".join([c.choices[0].text async for c in stream])

    async def main() -> list[str]:
        async with openai.AsyncOpenAI(base_url=server.base_url, api_key="x", max_retries=0) as c:
            return list(await asyncio.gather(*(one(c, p) for p in prompts * 2)))

    assert asyncio.run(main()) == expected * 2


def metric(server: RunningServer, name: str, labels: str = "") -> float:
    text = httpx.get(f"{server.url}/metrics").text
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and labels in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_metrics_count_requests_and_tokens(client: openai.OpenAI, server: RunningServer) -> None:
    before = {
        n: metric(server, n)
        for n in (
            "fireside:prompt_tokens_total",
            "fireside:generation_tokens_total",
            "fireside:time_to_first_token_seconds_count",
            "fireside:e2e_request_latency_seconds_count",
            "fireside:request_queue_time_seconds_count",
            "fireside:inter_token_latency_seconds_count",
        )
    }
    length_before = metric(server, "fireside:request_success_total", 'finished_reason="length"')
    r = client.completions.create(
        model="tiny",
        prompt="import sys",
        max_tokens=7,
        temperature=0,
        extra_body={"ignore_eos": True},
    )
    assert r.usage is not None
    after = {n: metric(server, n) for n in before}
    assert (
        after["fireside:prompt_tokens_total"] - before["fireside:prompt_tokens_total"]
        == r.usage.prompt_tokens
    )
    assert (
        after["fireside:generation_tokens_total"] - before["fireside:generation_tokens_total"] == 7
    )
    assert (
        after["fireside:time_to_first_token_seconds_count"]
        == before["fireside:time_to_first_token_seconds_count"] + 1
    )
    assert (
        after["fireside:e2e_request_latency_seconds_count"]
        == before["fireside:e2e_request_latency_seconds_count"] + 1
    )
    assert (
        metric(server, "fireside:request_success_total", 'finished_reason="length"')
        == length_before + 1
    )
    text = httpx.get(f"{server.url}/metrics").text
    for name in (
        "fireside:num_requests_running",
        "fireside:num_requests_waiting",
        "fireside:kv_cache_usage_perc",
        "fireside:prefix_cache_queries_total",
        "fireside:prefix_cache_hits_total",
        "fireside:inter_token_latency_seconds_bucket",
        "fireside:request_queue_time_seconds",
    ):
        assert name in text, name


def test_streamed_n_samples_match_non_streamed_with_seed(client: openai.OpenAI) -> None:
    kwargs = dict(model="tiny", messages=MESSAGES, max_tokens=10, n=3, seed=11, temperature=0.9)
    whole = client.chat.completions.create(**kwargs)  # type: ignore[call-overload]
    chunks = list(client.chat.completions.create(stream=True, **kwargs))  # type: ignore[call-overload]
    roles = [c.choices[0].index for c in chunks if c.choices and c.choices[0].delta.role]
    assert sorted(roles) == [0, 1, 2]
    for choice in whole.choices:
        mine = [c.choices[0] for c in chunks if c.choices and c.choices[0].index == choice.index]
        assert "".join(m.delta.content or "" for m in mine) == choice.message.content
        assert [m.finish_reason for m in mine if m.finish_reason] == [choice.finish_reason]


def test_streamed_echo_logprobs_match_non_streamed(client: openai.OpenAI) -> None:
    kwargs = dict(
        model="tiny", prompt="x = [1, 2]", max_tokens=5, temperature=0, logprobs=1, echo=True
    )
    whole = client.completions.create(**kwargs)  # type: ignore[call-overload]
    chunks = list(client.completions.create(stream=True, **kwargs))  # type: ignore[call-overload]
    assert "".join(c.choices[0].text for c in chunks) == whole.choices[0].text
    tokens = [t for c in chunks if c.choices[0].logprobs for t in c.choices[0].logprobs.tokens]
    lps = [x for c in chunks if c.choices[0].logprobs for x in c.choices[0].logprobs.token_logprobs]
    assert tokens == whole.choices[0].logprobs.tokens
    assert lps == whole.choices[0].logprobs.token_logprobs
    offsets = [
        x for c in chunks if c.choices[0].logprobs for x in c.choices[0].logprobs.text_offset
    ]
    assert offsets == whole.choices[0].logprobs.text_offset


# -- vLLM's sampling fields, each shown to change the output ---------------------------------

HOT = dict(model="tiny", messages=MESSAGES, max_tokens=24, temperature=2.0, seed=3, logprobs=True)


def hot_sample(
    client: openai.OpenAI, k: int, extra: dict[str, object]
) -> list[tuple[float, list[float]]]:
    """Per generated token: its logprob and the k best tokens' (raw logits, best first)."""
    r = client.chat.completions.create(
        **HOT, top_logprobs=k, extra_body={"ignore_eos": True, **extra}
    )  # type: ignore[call-overload]
    content = r.choices[0].logprobs.content
    assert len(content) == 24
    return [(t.logprob, [x.logprob for x in t.top_logprobs]) for t in content]


def test_top_k_keeps_only_the_k_likeliest(client: openai.OpenAI) -> None:
    def outside_top_2(extra: dict[str, object]) -> int:
        return sum(chosen < top[1] - 1e-4 for chosen, top in hot_sample(client, 2, extra))

    assert outside_top_2({}) > 0  # hot sampling strays beyond the two best...
    assert outside_top_2({"top_k": 2}) == 0  # ...top_k=2 never does


def test_min_p_drops_tokens_far_below_the_best(client: openai.OpenAI) -> None:
    # min_p=0.5 at temperature 2 keeps tokens whose raw logprob is within 2*ln(2) of the best.
    floor = 2.0 * math.log(0.5)

    def below(extra: dict[str, object]) -> int:
        return sum(chosen - top[0] < floor - 1e-4 for chosen, top in hot_sample(client, 1, extra))

    assert below({}) > 0
    assert below({"min_p": 0.5}) == 0


def test_repetition_penalty_stops_a_boosted_token_repeating(
    client: openai.OpenAI, server: RunningServer
) -> None:
    (eq,) = tokenize(server, "=")
    ask = dict(model="tiny", prompt="x", max_tokens=8, temperature=0, logit_bias={str(eq): 30})
    plain = client.completions.create(**ask).choices[0].text  # type: ignore[call-overload]
    assert plain == "=" * 8
    penalized = (
        client.completions.create(  # type: ignore[call-overload]
            **ask, extra_body={"repetition_penalty": 10.0}
        )
        .choices[0]
        .text
    )
    assert penalized.startswith("=") and penalized.count("=") < 8


def test_stop_token_ids_end_the_answer(client: openai.OpenAI, server: RunningServer) -> None:
    (eq,) = tokenize(server, "=")
    ask = dict(model="tiny", prompt="x", max_tokens=6, temperature=0, logit_bias={str(eq): 100})
    plain = client.completions.create(**ask).choices[0]  # type: ignore[call-overload]
    assert plain.text == "=" * 6 and plain.finish_reason == "length"
    stopped = client.completions.create(**ask, extra_body={"stop_token_ids": [eq]}).choices[0]  # type: ignore[call-overload]
    assert stopped.text == "" and stopped.finish_reason == "stop"
    assert stopped.model_extra is not None and stopped.model_extra["stop_reason"] == eq


def test_skip_special_tokens_false_keeps_them_in_the_text(
    client: openai.OpenAI, tokenizer: Tokenizer
) -> None:
    system = tokenizer.token_id("<|system|>")
    ask = dict(model="tiny", prompt="x", max_tokens=3, temperature=0, logit_bias={str(system): 100})
    assert client.completions.create(**ask).choices[0].text == ""  # type: ignore[call-overload]
    kept = client.completions.create(**ask, extra_body={"skip_special_tokens": False})  # type: ignore[call-overload]
    assert kept.choices[0].text == "<|system|>" * 3
