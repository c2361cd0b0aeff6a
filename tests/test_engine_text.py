"""Text out of the engine: UTF-8-safe streaming and stop strings that never leak."""

from __future__ import annotations

import asyncio

import pytest
import torch

from fireside.engine import Engine, SampleDelta, SamplingParams
from fireside.engine.detokenize import StreamDetokenizer
from fireside.model import Tokenizer
from tests.engine_utils import collect, greedy_reference, tiny_model


def test_split_utf8_characters_are_never_emitted_half(tokenizer: Tokenizer) -> None:
    text = "naïve café — 火 🔥 done"
    ids = tokenizer.encode(text)
    # The tiny tokenizer never saw these characters, so they arrive as single bytes.
    assert len(ids) > len(text.split())
    detok = StreamDetokenizer(tokenizer, tokenizer.encode("x = "))
    deltas = [detok.add(t)[0] for t in ids]
    deltas.append(detok.flush())
    assert all("\ufffd" not in d for d in deltas)
    assert "".join(deltas) == text


def test_stop_string_held_back_until_it_is_clearly_not_one(tokenizer: Tokenizer) -> None:
    detok = StreamDetokenizer(tokenizer, [], stop=["STOP"])
    emitted, hits = "", []
    for piece in ["ab", "ST", "O", "x", "yS", "TO", "P", "tail"]:
        for t in tokenizer.encode(piece):
            delta, hit = detok.add(t)
            emitted += delta
            hits.append(hit)
        if piece in ("ST", "O"):
            assert emitted == "ab"  # "ST", "STO" could begin "STOP": held back
        if piece == "x":
            assert emitted == "abSTOx"  # they did not
        if piece == "P":
            assert hits[-1] == "STOP"
            break
    assert emitted == "abSTOxy"
    assert hits.count("STOP") == 1


def _boundary_stop(tokenizer: Tokenizer, tokens: list[int]) -> tuple[str, str]:
    """A stop string made of the end of one token and the start of the next, and the text
    before its first occurrence."""
    pieces = [tokenizer.decode([t]) for t in tokens]
    for i in range(3, len(pieces) - 1):
        left, right = pieces[i].strip(), pieces[i + 1].strip()
        if (
            len(left) >= 2
            and len(right) >= 2
            and pieces[i].endswith(left[-2:])
            and pieces[i + 1].startswith(right[:2])
        ):
            stop = left[-2:] + right[:2]
            full = "".join(pieces)
            return stop, full[: full.find(stop)]
    raise AssertionError("no token boundary to split a stop string over")


def test_stop_string_split_across_tokens_never_leaks(tokenizer: Tokenizer) -> None:
    model = tiny_model(tokenizer.vocab_size, seed=1)
    engine = Engine(model, tokenizer)
    prompt = tokenizer.encode("import json\n\ndef load(path):\n    ")
    reference = greedy_reference(model, prompt, 60)
    stop, before = _boundary_stop(tokenizer, reference)

    async def main() -> None:
        async with engine:
            params = SamplingParams(temperature=0, max_tokens=60, stop=[stop], ignore_eos=True)
            got = await collect(engine, prompt, params, "stop")
            assert got.text[0] == before
            assert stop not in got.text[0]
            assert got.finish[0] == "stop" and got.stop_reason[0] == stop
            # Generation ended at the token that completed the stop string.
            assert len(got.tokens[0]) < 60
            assert got.tokens[0] == reference[: len(got.tokens[0])]

            asked = SamplingParams(
                temperature=0,
                max_tokens=60,
                stop=[stop, "never-generated"],
                include_stop_str_in_output=True,
                ignore_eos=True,
            )
            got = await collect(engine, prompt, asked, "stop2")
            assert got.text[0] == before + stop

    asyncio.run(main())


def test_text_without_stop_equals_decode(tokenizer: Tokenizer) -> None:
    model = tiny_model(tokenizer.vocab_size, seed=2)
    engine = Engine(model, tokenizer)
    prompt = tokenizer.encode("class Decoder:\n")

    async def main() -> None:
        async with engine:
            params = SamplingParams(temperature=0, max_tokens=40, stop=["zzzz"], ignore_eos=True)
            got = await collect(engine, prompt, params, "t")
            assert got.text[0] == tokenizer.decode(got.tokens[0], skip_special_tokens=True)
            assert got.finish[0] == "length"

    asyncio.run(main())


class ForcedTokens:
    """A TokenConstraint that allows exactly one token at each step: `ids`, in order."""

    def __init__(self, ids: list[int]) -> None:
        self.ids = ids
        self.at = 0

    def allowed(self, vocab_size: int) -> torch.Tensor:
        mask = torch.zeros(vocab_size, dtype=torch.bool)
        mask[self.ids[self.at]] = True
        return mask

    def accept(self, token_id: int) -> None:
        assert token_id == self.ids[self.at]
        self.at += 1

    def is_finished(self) -> bool:
        return self.at == len(self.ids)


def test_flush_decodes_a_character_cut_short_as_decode_does(tokenizer: Tokenizer) -> None:
    ids = tokenizer.encode("ok 火")
    assert len(tokenizer.encode("火")) == 3  # one token per UTF-8 byte in the tiny vocabulary
    cut = ids[:-1]  # two of 火's three bytes
    detok = StreamDetokenizer(tokenizer, tokenizer.encode("x = "))
    deltas = [detok.add(t)[0] for t in cut]
    deltas.append(detok.flush())
    assert "".join(deltas) == transformers_decode(tokenizer, cut) == "ok \ufffd"
    assert all("\ufffd" not in d for d in deltas[:-1])  # only the end shows the cut


def transformers_decode(tokenizer: Tokenizer, ids: list[int]) -> str:
    """What `transformers` makes of these tokens: the reference for a whole reply's text."""
    from transformers import PreTrainedTokenizerFast

    return str(PreTrainedTokenizerFast(tokenizer_object=tokenizer.backend).decode(ids))


@pytest.mark.parametrize("end", ["length", "stop_token"])
def test_reply_cut_inside_a_character_ends_like_decode(tokenizer: Tokenizer, end: str) -> None:
    """max_tokens or a stop token that lands inside a multi-byte character: the engine's text
    is the decoding of every generated token, U+FFFD for the cut character."""
    engine = Engine(tiny_model(tokenizer.vocab_size), tokenizer)
    kept = tokenizer.encode("ok 火火")[:-1]  # the last 火 loses its last byte
    (bang,) = tokenizer.encode("!")
    if end == "length":
        params = SamplingParams(max_tokens=len(kept))
    else:
        params = SamplingParams(max_tokens=20, stop_token_ids=[bang])
    params.constraint_factory = lambda: ForcedTokens([*kept, bang])

    async def main() -> list[SampleDelta]:
        async with engine:
            return [
                s
                async for out in engine.generate(tokenizer.encode("print("), params, "cut")
                for s in out.samples
            ]

    deltas = asyncio.run(main())
    tokens = [t for d in deltas for t in d.token_ids]
    assert tokens == (kept if end == "length" else [*kept, bang])
    assert deltas[-1].finish_reason == ("length" if end == "length" else "stop")
    text = "".join(d.text for d in deltas)
    assert text == transformers_decode(tokenizer, kept) == "ok 火\ufffd"
    assert all("\ufffd" not in d.text for d in deltas[:-1])


def test_skipping_special_tokens_keeps_only_those_asked_for(tokenizer: Tokenizer) -> None:
    # The tool loop keeps its call markers to parse them; any other special token is dropped.
    start, end, user = (
        tokenizer.token_id(t) for t in ("<|tool_call|>", "<|/tool_call|>", "<|user|>")
    )
    assert start is not None and end is not None and user is not None
    ids = [*tokenizer.encode("Hi "), user, start, *tokenizer.encode('{"a": 1}'), end, user]
    detok = StreamDetokenizer(tokenizer, tokenizer.encode("x = "), keep_special=[start, end])
    text = "".join(detok.add(i)[0] for i in ids) + detok.flush()
    assert text == 'Hi <|tool_call|>{"a": 1}<|/tool_call|>'
    plain = StreamDetokenizer(tokenizer, [], keep_special=[start, end], skip_special_tokens=False)
    assert "".join(plain.add(i)[0] for i in ids) + plain.flush() == tokenizer.decode(ids)
