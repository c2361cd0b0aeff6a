"""Chat templates rendered with jinja2 exactly as transformers renders them.

Fireside's own format is a Jinja template too (FIRESIDE_CHAT_TEMPLATE), so
`AutoTokenizer.apply_chat_template` in transformers gives the same text. Assistant turns sit
inside `{% generation %}` blocks, which is how both Fireside and transformers find the tokens
the assistant produced (the training loss mask).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from functools import lru_cache
from typing import Any

import jinja2
import jinja2.ext
import jinja2.nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from fireside.errors import ChatTemplateError

Message = Mapping[str, Any]

# Fireside's chat format. Special tokens delimit turns; tool calls are JSON between
# <|tool_call|> and <|/tool_call|>, one per call, so a parser can find them in a stream.
FIRESIDE_CHAT_TEMPLATE = (
    "{{- bos_token }}"
    "{%- if messages and messages[0].role == 'system' %}"
    "{%- set system = messages[0].content %}{%- set turns = messages[1:] %}"
    "{%- else %}{%- set system = '' %}{%- set turns = messages %}{%- endif %}"
    # Tools as one line each, `name(arguments): description`, not their JSON schemas: a small
    # model reads the prompt on every turn, and schemas would triple its length.
    "{%- if tools %}"
    "<|system|>{{ system }}{% if system %}{{ '\\n\\n' }}{% endif %}Tools:"
    "{%- for tool in tools %}"
    "{%- set fn = tool.function if tool.function is defined else tool %}"
    "{%- set params = (fn.parameters or {}).properties or {} %}"
    "{{ '\\n' }}{{ fn.name }}({{ params | list | join(', ') }}): {{ fn.description or '' }}"
    "{%- endfor %}<|end|>"
    "{%- elif system %}<|system|>{{ system }}<|end|>{%- endif %}"
    "{%- for message in turns %}"
    "{%- if message.role == 'user' %}<|user|>{{ message.content }}<|end|>"
    "{%- elif message.role == 'assistant' %}<|assistant|>"
    "{%- generation %}{{ message.content or '' }}"
    "{%- for call in message.tool_calls or [] %}"
    "{%- set fn = call.function if call.function is defined else call %}"
    '<|tool_call|>{"name": {{ fn.name | tojson }}, "arguments": '
    "{%- if fn.arguments is string %} {{ fn.arguments }}{% else %} {{ fn.arguments | tojson }}{% endif %}}"
    "<|/tool_call|>"
    "{%- endfor %}<|end|>{%- endgeneration %}"
    "{%- elif message.role == 'tool' %}<|tool|>{{ message.content }}<|end|>"
    "{%- elif message.role == 'system' %}"
    "{{- raise_exception('a system message may only come first') }}"
    "{%- else %}{{- raise_exception('unknown role ' ~ message.role) }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}<|assistant|>{%- endif %}"
)


class _GenerationTracker(jinja2.ext.Extension):
    """`{% generation %}...{% endgeneration %}`: records the character spans it renders."""

    tags = {"generation"}  # noqa: RUF012 - jinja reads it as a class attribute

    def __init__(self, environment: jinja2.Environment) -> None:
        super().__init__(environment)
        self.rendered: list[str] | None = None
        self.spans: list[tuple[int, int]] | None = None
        environment.extend(track_generation=self.track)

    def parse(self, parser: jinja2.parser.Parser) -> jinja2.nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        call = self.call_method("_mark", [])
        return jinja2.nodes.CallBlock(call, [], [], body).set_lineno(lineno)

    def _mark(self, caller: Callable[[], str]) -> str:
        text = caller()
        if self.rendered is not None and self.spans is not None:
            start = len("".join(self.rendered))
            self.spans.append((start, start + len(text)))
        return text

    @contextmanager
    def track(self, rendered: list[str], spans: list[tuple[int, int]]) -> Iterator[None]:
        self.rendered, self.spans = rendered, spans
        try:
            yield
        finally:
            self.rendered, self.spans = None, None


def _raise_exception(message: str) -> None:
    raise jinja2.exceptions.TemplateError(message)


def _tojson(
    x: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    # transformers' tojson: unlike jinja's own, it does not HTML-escape.
    return json.dumps(
        x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


@lru_cache(maxsize=16)
def compile_template(source: str) -> jinja2.Template:
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=[_GenerationTracker, jinja2.ext.loopcontrols],
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    try:
        return env.from_string(source)
    except jinja2.TemplateSyntaxError as e:
        raise ChatTemplateError(f"the chat template does not compile: {e}") from None


def flatten_content(messages: Sequence[Message]) -> list[dict[str, Any]]:
    """OpenAI content parts ([{"type": "text", "text": ...}]) joined into plain strings."""
    out = []
    for m in messages:
        m = dict(m)
        content = m.get("content")
        if isinstance(content, list):
            texts = []
            for part in content:
                if not isinstance(part, Mapping) or part.get("type") != "text":
                    kind = part.get("type") if isinstance(part, Mapping) else type(part).__name__
                    raise ChatTemplateError(f"content part of type {kind!r} is not supported")
                texts.append(str(part.get("text", "")))
            m["content"] = "".join(texts)
        out.append(m)
    return out


def render(
    template: str,
    messages: Sequence[Message],
    *,
    add_generation_prompt: bool = False,
    tools: Sequence[Mapping[str, Any]] | None = None,
    special_tokens: Mapping[str, str | None] | None = None,
    **kwargs: Any,
) -> tuple[str, list[tuple[int, int]]]:
    """Render a conversation; returns the text and the character spans of assistant output."""
    compiled = compile_template(template)
    rendered: list[str] = []
    spans: list[tuple[int, int]] = []
    context = dict(special_tokens or {})
    context.update(kwargs)
    try:
        with compiled.environment.track_generation(rendered, spans):  # type: ignore[attr-defined]
            for chunk in compiled.generate(
                messages=flatten_content(messages),
                tools=list(tools) if tools else None,
                documents=None,
                add_generation_prompt=add_generation_prompt,
                **context,
            ):
                rendered.append(chunk)
    except jinja2.TemplateError as e:
        raise ChatTemplateError(f"the chat template refused the conversation: {e}") from None
    return "".join(rendered), spans
