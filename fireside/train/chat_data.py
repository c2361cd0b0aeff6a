"""Conversation data for SFT and DPO: JSONL readers, tokenization with the loss mask, mixing.

Every reader reports a bad record as `FILE:LINE: what is wrong`, so a 100k-line file with one
broken line is fixed in a minute. Tokenization goes through the model's own chat template:
its `{% generation %}` blocks mark the tokens the assistant wrote where it has them
(`Tokenizer.render_chat`), and rendering turn by turn finds them where it has none
(`Tokenizer.render_answers`: Llama 3, Qwen, Mistral and other published templates).
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fireside.errors import ChatTemplateError, DataError
from fireside.model.answers import has_generation_blocks
from fireside.model.tokenizer import Tokenizer

ROLES = ("system", "user", "assistant", "tool")


class ChatDataError(DataError):
    """A conversation file that cannot be used: unreadable, empty or malformed."""


# -- reading -----------------------------------------------------------------------------


def read_jsonl(path: str | Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield (`FILE:LINE`, object) for each non-blank line; any bad line is an error naming it."""
    path = Path(path)
    if not path.is_file():
        raise ChatDataError(f"{str(path)!r} does not exist or is not a file")
    try:
        fh = path.open("rb")
    except OSError as e:
        raise ChatDataError(f"{str(path)!r} cannot be read: {e.strerror}") from None
    with fh:
        for line_no, raw in enumerate(fh, start=1):
            where = f"{path}:{line_no}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise ChatDataError(f"{where}: not UTF-8 text") from None
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise ChatDataError(f"{where}: not valid JSON ({e.msg})") from None
            if not isinstance(obj, dict):
                raise ChatDataError(f"{where}: expected a JSON object, got {type(obj).__name__}")
            yield where, obj


def check_message(msg: Any, where: str, what: str = "message") -> dict[str, Any]:
    if not isinstance(msg, dict):
        raise ChatDataError(f"{where}: {what} must be an object, got {type(msg).__name__}")
    role = msg.get("role")
    if role not in ROLES:
        raise ChatDataError(f"{where}: {what} has role {role!r}; expected one of {ROLES}")
    content = msg.get("content")
    if content is None:
        if not (role == "assistant" and msg.get("tool_calls")):
            raise ChatDataError(f"{where}: {what} ({role}) has no content")
    elif not isinstance(content, str | list):
        raise ChatDataError(
            f"{where}: {what} content must be a string or a list of parts, "
            f"got {type(content).__name__}"
        )
    return msg


def check_messages(value: Any, where: str, what: str = "messages") -> list[dict[str, Any]]:
    if not isinstance(value, list) or not value:
        raise ChatDataError(f"{where}: {what!r} must be a non-empty list of messages")
    return [check_message(m, where, f"{what}[{i}]") for i, m in enumerate(value)]


def parse_weighted_path(spec: str) -> tuple[Path, float]:
    """`chat.jsonl:3` -> (chat.jsonl, 3.0); a path with no weight has weight 1."""
    head, sep, tail = spec.rpartition(":")
    if sep and head:
        try:
            weight = float(tail)
        except ValueError:
            return Path(spec), 1.0  # a ':' that is part of the file name
        if not math.isfinite(weight) or weight <= 0:
            raise ChatDataError(f"{spec!r}: the weight after ':' must be a positive number")
        return Path(head), weight
    return Path(spec), 1.0


# -- tokenization ------------------------------------------------------------------------


def require_chat_template(tokenizer: Tokenizer) -> None:
    if not tokenizer.chat_template:
        raise ChatDataError(
            "the model's tokenizer has no chat template, so conversations cannot be rendered"
        )


@dataclass
class TokenizedChat:
    ids: list[int]
    mask: list[int]  # 1 where the token trains the model
    where: str


@dataclass
class LengthReport:
    """How over-long conversations were handled: truncated at the context, or dropped when
    truncation would leave no token to train on."""

    total: int = 0
    truncated: int = 0
    dropped: int = 0
    examples: list[str] = field(default_factory=list)  # a few FILE:LINE of affected records

    def note(self, where: str) -> None:
        if len(self.examples) < 5:
            self.examples.append(where)

    def summary(self) -> str:
        s = f"{self.total} conversations"
        if self.truncated or self.dropped:
            s += (
                f"; {self.truncated} longer than the context were truncated and "
                f"{self.dropped} dropped (nothing to train on after truncation), "
                f"e.g. {', '.join(self.examples)}"
            )
        return s


def render(
    tokenizer: Tokenizer,
    messages: Sequence[Mapping[str, Any]],
    where: str,
    *,
    tools: Sequence[Mapping[str, Any]] | None = None,
    last_only: bool = False,
) -> list[tuple[list[int], list[int]]]:
    """Training sequences (ids, mask on the assistant's answers) of one conversation.

    A template's own `{% generation %}` blocks mark the answers where it has them (as
    transformers reads them); otherwise rendering turn by turn finds them, which may split a
    conversation whose history renders differently (`fireside.model.answers`)."""
    try:
        if has_generation_blocks(tokenizer.chat_template or ""):
            r = tokenizer.render_chat(messages, tools=tools)
            mask = last_run(r.assistant_mask) if last_only else r.assistant_mask
            return [(r.ids, mask)]
        found = tokenizer.render_answers(messages, tools=tools, last_only=last_only)
    except ChatTemplateError as e:
        raise ChatDataError(f"{where}: {e}") from None
    return [(r.ids, r.assistant_mask) for r in found]


def load_sft_file(
    path: Path, tokenizer: Tokenizer, max_len: int, report: LengthReport
) -> list[TokenizedChat]:
    """`{"messages": [...], "tools": [...]?}` per line; the loss covers assistant tokens only.

    A line `{"text": "..."}` is a document of plain text, as pretraining reads it: every token
    trains, in pieces of the context's length. Mixed into SFT by weight, such lines keep the
    chat model a language model (fine-tuning on templated conversations alone makes it forget
    how to model text)."""
    out = []
    for where, obj in read_jsonl(path):
        if "text" in obj and "messages" not in obj:
            pieces = text_pieces(obj["text"], tokenizer, max_len, where)
            out += pieces
            report.total += 1
            continue
        messages = check_messages(obj.get("messages"), where)
        if not any(m["role"] == "assistant" for m in messages):
            raise ChatDataError(f"{where}: the conversation has no assistant turn to learn from")
        tools = obj.get("tools")
        if tools is not None and not isinstance(tools, list):
            raise ChatDataError(f"{where}: 'tools' must be a list")
        sequences = render(tokenizer, messages, where, tools=tools)
        if not any(any(mask) for _, mask in sequences):
            raise ChatDataError(f"{where}: the chat template marked no assistant tokens")
        report.total += 1
        kept, cut = 0, False
        for ids, mask in sequences:
            if len(ids) > max_len:
                ids, mask = ids[:max_len], mask[:max_len]
                cut = True
                # The first token is never a target, so a mask with 1s only there trains nothing.
                if not any(mask[1:]):
                    continue
            out.append(TokenizedChat(ids, mask, where))
            kept += 1
        if cut:
            report.note(where)
            if kept:
                report.truncated += 1
            else:
                report.dropped += 1
    if not out and report.total == 0:
        raise ChatDataError(f"{str(path)!r} holds no conversations")
    return out


def text_pieces(
    text: object, tokenizer: Tokenizer, max_len: int, where: str
) -> list[TokenizedChat]:
    """A plain-text document as pretraining sees it (the document separator, then its
    tokens), cut into pieces of at most `max_len` tokens that each train on every token."""
    if not isinstance(text, str) or not text.strip():
        raise ChatDataError(f"{where}: 'text' must be a non-empty string")
    sep = tokenizer.bos_id if tokenizer.bos_id is not None else tokenizer.eos_id
    if sep is None:
        raise ChatDataError("the tokenizer has no bos_token or eos_token to start a document")
    ids = [sep, *tokenizer.encode_plain(text)]
    # A one-token tail trains nothing (the first token is never a target): leave it out.
    return [
        TokenizedChat(ids[i : i + max_len], [1] * len(ids[i : i + max_len]), where)
        for i in range(0, len(ids), max_len)
        if len(ids[i : i + max_len]) > 1
    ]


@dataclass
class TokenizedPair:
    """One preference: the same prompt with the chosen and with the rejected answer."""

    chosen_ids: list[int]
    chosen_mask: list[int]  # 1 on the final answer's tokens only
    rejected_ids: list[int]
    rejected_mask: list[int]
    where: str


def last_run(mask: list[int]) -> list[int]:
    """Keep only the final contiguous run of 1s: the answer, not earlier assistant turns."""
    out = [0] * len(mask)
    i = len(mask) - 1
    while i >= 0 and not mask[i]:
        i -= 1
    while i >= 0 and mask[i]:
        out[i] = 1
        i -= 1
    return out


def _answer(value: Any, where: str, key: str) -> dict[str, Any]:
    if isinstance(value, dict) and "role" not in value:
        value = {"role": "assistant", **value}
    msg = check_message(value, where, repr(key))
    if msg["role"] != "assistant":
        raise ChatDataError(f"{where}: {key!r} must be an assistant message, not {msg['role']!r}")
    return msg


def load_dpo_file(path: Path, tokenizer: Tokenizer, max_len: int) -> list[TokenizedPair]:
    """`{"prompt": [messages], "chosen": message, "rejected": message}` per line.

    A pair longer than the context is an error: cutting an answer would compare two different
    lengths of text, and which answer is preferred may hinge on the part cut off.
    """
    out = []
    for where, obj in read_jsonl(path):
        for key in ("prompt", "chosen", "rejected"):
            if key not in obj:
                raise ChatDataError(f"{where}: missing {key!r}")
        prompt = check_messages(obj["prompt"], where, "prompt")
        chosen = _answer(obj["chosen"], where, "chosen")
        rejected = _answer(obj["rejected"], where, "rejected")
        pair = []
        for answer in (chosen, rejected):
            [(ids, mask)] = render(tokenizer, [*prompt, answer], where, last_only=True)
            if not any(mask[1:]):
                raise ChatDataError(f"{where}: the chat template marked no answer tokens")
            if len(ids) > max_len:
                raise ChatDataError(
                    f"{where}: {len(ids)} tokens, longer than the context ({max_len}); "
                    "shorten the conversation or raise --max-len"
                )
            pair.append((ids, mask))
        out.append(TokenizedPair(pair[0][0], pair[0][1], pair[1][0], pair[1][1], where))
    if not out:
        raise ChatDataError(f"{str(path)!r} holds no preference pairs")
    return out


# -- mixing ------------------------------------------------------------------------------


def mixture_order(
    sizes: Sequence[int], weights: Sequence[float], epoch: int, seed: int
) -> list[tuple[int, int]]:
    """One epoch of (file, record) indices: file i contributes weight_i x its size records
    (whole repeats, then a random subset for the fraction), all shuffled together.

    Deterministic in (epoch, seed), so a resumed run replays the same order.
    """
    rng = random.Random(f"{seed}:{epoch}")
    order: list[tuple[int, int]] = []
    for f, (n, w) in enumerate(zip(sizes, weights, strict=True)):
        whole, frac = divmod(w, 1.0)
        for _ in range(int(whole)):
            order.extend((f, i) for i in range(n))
        order.extend((f, i) for i in rng.sample(range(n), round(frac * n)))
    rng.shuffle(order)
    return order


class MixtureSampler:
    """The records of step `s`: a pure function of (step, seed), so resuming needs no state."""

    def __init__(
        self, sizes: Sequence[int], weights: Sequence[float], batch_size: int, seed: int
    ) -> None:
        self.sizes, self.weights = list(sizes), list(weights)
        self.batch_size, self.seed = batch_size, seed
        self.epoch_len = len(mixture_order(self.sizes, self.weights, 0, seed))
        if self.epoch_len == 0:
            raise ChatDataError("the data mixture is empty: no record to train on")
        self._epoch: int | None = None
        self._order: list[tuple[int, int]] = []

    def steps_per_epoch(self) -> int:
        return math.ceil(self.epoch_len / self.batch_size)

    def batch(self, step: int) -> list[tuple[int, int]]:
        out = []
        for pos in range(step * self.batch_size, (step + 1) * self.batch_size):
            epoch, offset = divmod(pos, self.epoch_len)
            if epoch != self._epoch:
                self._epoch, self._order = (
                    epoch,
                    mixture_order(self.sizes, self.weights, epoch, self.seed),
                )
            out.append(self._order[offset])
        return out
