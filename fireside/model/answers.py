"""The assistant's answers in a rendered conversation, for any chat template.

Fireside's own template marks answers with `{% generation %}`; most published templates
(Llama 3, Qwen, Mistral) do not. For those, an answer is found the way TRL and axolotl find
it: render the conversation up to the turn with the generation prompt, render it through the
turn, and the difference is what the model wrote after the prompt, the end-of-turn token
included (it is how the model learns to stop). Whitespace the template writes after that
token (ChatML's newline) is left out: generation stops at the token, so it is never produced.

Comparisons are on text, never on token ids, so a BPE merge across the boundary cannot make
a stable prefix look unstable; the caller tokenizes each sequence once, whole, and trains the
tokens wholly inside an answer. A token merged across an answer's start is not trained: at
inference the prompt is tokenized on its own and ends before it, so the model never writes it.

Two ways a template can disagree with itself, and what happens:

- The render through a turn does not start with the render before it (Mistral moves the
  system prompt into the last user message, so adding an answer moves it): the answer's
  tokens are unknowable, and it is an error naming the turn.
- The render of the whole conversation does not start with the render through a turn (Qwen3
  writes a `<think>` block only in turns after the last question, and drops it from earlier
  ones): what the model wrote in that turn is not what the history shows. That turn becomes
  a sequence of its own, the conversation through it, so each answer is trained as the model
  produced it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fireside.errors import ChatTemplateError
from fireside.model import chat

_GENERATION_TAG = re.compile(r"\{%-?\s*generation\s*-?%\}")


def has_generation_blocks(template: str) -> bool:
    """Whether the template marks answers itself (transformers' return_assistant_tokens_mask)."""
    return bool(_GENERATION_TAG.search(template))


@dataclass
class AnswerSpans:
    """One training sequence: its text and the character spans of the answers it trains."""

    text: str
    spans: list[tuple[int, int]]


def find_answers(
    template: str,
    messages: Sequence[chat.Message],
    *,
    tools: Sequence[Mapping[str, Any]] | None = None,
    special_tokens: Mapping[str, str | None] | None = None,
    end_tokens: Sequence[str] = (),
    last_only: bool = False,
) -> list[AnswerSpans]:
    """The conversation as training sequences with the spans of the assistant's answers.

    Usually one sequence, the whole conversation; more where a turn renders differently as
    history (see the module's docstring). `end_tokens`: the special tokens' texts, after which
    trailing whitespace is not part of an answer. `last_only`: the final answer alone (DPO).
    """

    def text(upto: int, generation_prompt: bool) -> str:
        rendered, _ = chat.render(
            template,
            messages[:upto],
            add_generation_prompt=generation_prompt,
            tools=tools,
            special_tokens=special_tokens,
        )
        return rendered

    whole = text(len(messages), False)
    turns = [i for i, m in enumerate(messages) if m.get("role") == "assistant"]
    if last_only:
        turns = turns[-1:]
    own: list[AnswerSpans] = []  # turns that are sequences of their own
    spans: list[tuple[int, int]] = []
    for i in turns:
        before, through = text(i, True), text(i + 1, False)
        if not through.startswith(before):
            raise ChatTemplateError(
                f"messages[{i}] (assistant): the chat template renders the conversation before "
                "this answer differently once the answer is added, so its tokens cannot be told "
                f"apart (before: {_tail(before)!r}; with the answer: "
                f"{_tail(through[: len(before)])!r}); add {{% generation %}} blocks to the "
                "template or change the conversation"
            )
        span = (len(before), _answer_end(through, len(before), end_tokens))
        if span[1] <= span[0]:
            continue  # an empty answer trains nothing
        if whole.startswith(through):
            spans.append(span)
        else:
            own.append(AnswerSpans(through, [span]))
    if spans or not own:
        own.append(AnswerSpans(whole, spans))
    return own


def _answer_end(text: str, start: int, end_tokens: Sequence[str]) -> int:
    """The answer's end: after its end-of-turn token, not the whitespace that follows it."""
    kept = text[start:].rstrip()
    if any(kept.endswith(t) for t in end_tokens):
        return start + len(kept)
    return len(text)


def _tail(text: str, n: int = 60) -> str:
    return text[-n:]
