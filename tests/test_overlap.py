"""Honest held-out sets: the 50-character span index, de-duplicated held-out text, the eval
sets' overlap table, and no special-token text in any answer."""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fireside.data import overlap
from fireside.data.held_out import dedup_held_out, drop_shared, jsonl_texts
from fireside.data.overlap import SPAN, SpanIndex, summarize
from fireside.eval.overlap import EvalContext, markdown, overlap_rows
from fireside.eval.special_tokens import count_special, special_texts_in
from fireside.model import Tokenizer

# Training text from lower-case letters, candidate filler from upper-case: the filler never
# shares a span with training, so only what a test plants can. No line breaks: the tests
# of dropping lines say where those are.
_rng = random.Random(7)
TRAIN = ["".join(_rng.choice("abcdefgh ijklmnop") for _ in range(3000)) for _ in range(8)]
INDEX = SpanIndex(TRAIN)


def filler(n: int, seed: int) -> str:
    rng = random.Random(seed)
    # No space: training text has spaces, and one beside a planted span would lengthen it.
    return "".join(rng.choice("ABCDEFGHIJKLMNOP") for _ in range(n))


def shared_by_brute_force(text: str, train: list[str], span: int = SPAN) -> list[int]:
    return [s for s in range(len(text) - span + 1) if any(text[s : s + span] in t for t in train)]


@settings(max_examples=60, deadline=None)
@given(
    doc=st.integers(0, len(TRAIN) - 1),
    start=st.integers(0, 2800),
    before=st.integers(0, 40),
    length=st.sampled_from([SPAN - 1, SPAN, SPAN + 1, 2 * SPAN + 7]),
)
def test_a_planted_span_is_found_at_any_alignment_and_49_characters_are_not(
    doc: int, start: int, before: int, length: int
) -> None:
    planted = TRAIN[doc][start : start + length]
    text = filler(before, start) + planted + filler(13, doc)
    expected = [(before, before + length)] if length >= SPAN else []
    assert INDEX.spans_shared(text) == expected


def test_every_alignment_of_the_stride_finds_a_50_character_span() -> None:
    # Hypothesis samples; this walks every start modulo the index's stride, in one batch.
    texts = [filler(5, s) + TRAIN[2][1000 + s : 1000 + s + SPAN] for s in range(overlap.STRIDE)]
    assert INDEX.spans_shared_many(texts) == [[(5, 5 + SPAN)]] * overlap.STRIDE


def test_a_span_across_two_training_documents_is_not_shared() -> None:
    joined = TRAIN[0][-30:] + TRAIN[1][:30]  # in no one document
    assert INDEX.spans_shared(joined) == []
    assert INDEX.spans_shared(TRAIN[0][-50:]) == [(0, 50)]


def test_results_match_brute_force_even_when_every_hash_collides(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With base 0 a hash is the window's last character, so nearly every lookup is a false
    candidate: only the character-by-character check keeps the answer right."""
    rng = random.Random(3)
    train = ["".join(rng.choice("ab") for _ in range(400)) for _ in range(3)]
    text = "".join(rng.choice("ab") for _ in range(300)) + train[1][100:170]
    for base in (overlap._BASE, np.uint64(0)):
        monkeypatch.setattr(overlap, "_BASE", base)
        windows = shared_by_brute_force(text, train)
        got = SpanIndex(train).spans_shared(text)
        covered = sorted({i for s in windows for i in range(s, s + SPAN)})
        assert [i for a, b in got for i in range(a, b)] == covered


def test_longer_spans_and_bad_lengths() -> None:
    text = TRAIN[4][10:110]
    assert INDEX.spans_shared(text, span=100) == [(0, 100)]
    assert INDEX.spans_shared(text[:-1] + "Z", span=100) == []
    with pytest.raises(ValueError, match="50 characters or more"):
        INDEX.spans_shared(text, span=40)
    assert SpanIndex([]).spans_shared(text) == []


def test_the_summary_counts_items_any_of_whose_texts_share_a_span() -> None:
    items = [
        (filler(80, 1),),
        (filler(20, 2), TRAIN[3][5:70]),  # the answer is training text
        (TRAIN[3][5:54],),  # 49 characters
    ]
    summary = summarize(INDEX, items)
    assert (summary.items, summary.sharing) == (3, 1)


def test_dedup_drops_exactly_the_lines_that_share_a_span() -> None:
    fresh = [filler(70, i) for i in range(5)]
    lines = [
        fresh[0],
        "intro " + TRAIN[1][200:260],  # shares 60 characters
        fresh[1],
        TRAIN[2][0:30],  # these two share a span only together, across the newline,
        TRAIN[2][31:60],  # so both go
        fresh[2],
        TRAIN[5][100:149],  # 49 characters: stays
    ]
    # The newline joining the pair must be training text too: put one there.
    train = [*TRAIN, TRAIN[2][0:30] + "\n" + TRAIN[2][31:60]]
    kept, dropped = drop_shared(SpanIndex(train), "\n".join(lines), unit="line")
    assert kept == "\n".join([fresh[0], fresh[1], fresh[2], TRAIN[5][100:149]])
    assert dropped == 3


def test_dedup_by_paragraph_and_the_files_it_writes(tmp_path: Path) -> None:
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps({"text": t}) + "\n" for t in TRAIN))
    paragraphs = [filler(90, 1), "x\n" + TRAIN[6][7:107], filler(90, 2)]
    held = tmp_path / "held-out-prose.txt"
    held.write_text("\n\n".join(paragraphs))
    [report] = dedup_held_out([train], [held], report=tmp_path / "dedup.json")
    out = tmp_path / "held-out-prose.dedup.txt"
    assert out.read_text() == paragraphs[0] + "\n\n" + paragraphs[2]
    assert report.units_dropped == 1 and report.characters_shared_after == 0
    assert report.bytes_after == len(out.read_bytes())
    assert report.spans_in_training_after[0] == 0 < report.spans_in_training_before[0]
    assert json.loads((tmp_path / "dedup.json").read_text())["files"][0]["output"] == str(out)


def test_jsonl_texts_reads_documents_and_every_message_apart(tmp_path: Path) -> None:
    path = tmp_path / "sft.jsonl"
    call = {"function": {"name": "calculator", "arguments": {"expression": "2+2"}}}
    rows = [
        {"text": "plain"},
        {
            "messages": [
                {"role": "user", "content": "q"},
                {"role": "assistant", "tool_calls": [call]},
            ]
        },
        {"messages": [{"role": "user", "content": [{"type": "text", "text": "part"}]}]},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    assert list(jsonl_texts(path)) == ["plain", "q", '{"expression": "2+2"}', "part"]
    path.write_text("{not json\n")
    with pytest.raises(Exception, match="malformed JSON"):
        list(jsonl_texts(path))


def test_the_overlap_table_counts_each_set_against_each_text() -> None:
    sets = {
        "planted": lambda ctx: [(TRAIN[0][:60],), (filler(60, 9),)],
        "clean": lambda ctx: [(filler(60, 3),)],
    }
    rows = overlap_rows([INDEX, None], EvalContext(Path("none.db")), sets)
    table = markdown(rows, ["pretraining", "SFT"])
    assert "| planted | 2 | 1/2 | not checked |" in table
    assert "| clean | 1 | 0/1 | not checked |" in table


def test_the_cli_dedups_and_reports_overlap(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from fireside.cli import main

    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps({"text": t}) + "\n" for t in TRAIN))
    held = tmp_path / "held.txt"
    held.write_text(filler(120, 4) + "\n\n" + TRAIN[7][:120])
    out = tmp_path / "out.txt"
    argv = ["data", "dedup", "--train", str(train), "--held-out", str(held), "--output", str(out)]
    assert main(argv) == 0
    assert out.read_text() == filler(120, 4)
    assert "dropped 1 paragraphs" in capsys.readouterr().out
    table = tmp_path / "overlap.md"
    argv = ["data", "overlap", "--train", str(train), "--sft", str(train), "--output", str(table)]
    argv += ["--knowledge-db", str(tmp_path / "missing.db")]
    assert main(argv) == 0
    text = table.read_text()
    assert "| arithmetic (tool eval) | 100 | 0/100 | 0/100 |" in text
    assert "skipped: no knowledge index" in text
    assert text == capsys.readouterr().out


def test_the_special_token_scan_flags_a_planted_token_and_passes_clean_text(
    tokenizer: Tokenizer,
) -> None:
    specials = tokenizer.special_token_texts()
    assert specials, "the test tokenizer has special tokens"
    marker = specials[0]
    assert special_texts_in(f"The answer is 4.{marker}", specials) == [marker]
    assert special_texts_in("The answer is 4. <| not a token |>", specials) == []
    count = count_special(["clean", f"x{marker}y", "also clean"], specials)
    assert (count.answers, count.with_special, count.example) == (3, 1, marker)


def test_no_special_token_text_reaches_the_tool_loops_answer(
    api_model_dir: Path, one_thread: None
) -> None:
    """A tiny random model pushed (by logit bias) towards every special token and towards the
    ordinary tokens that spell them out: the loop's answers still hold no special token's
    text. The same push without the loop does produce special tokens, so the check can fail."""
    from fireside.engine import Engine, EngineConfig, SamplingParams
    from fireside.model.pretrained import load_pretrained
    from fireside.tools import builtin_tools
    from fireside.tools.loop import Done, TextDelta, final_text, run_with_tools

    bundle = load_pretrained(api_model_dir)
    tok = bundle.tokenizer
    specials = tok.special_token_texts()
    push = {tok.token_id(t): 4.0 for t in specials}
    for text in specials:
        push.update({i: 3.0 for i in tok.encode_plain(text)})
    bias = {i: b for i, b in push.items() if i is not None}
    tools = builtin_tools(knowledge_db=api_model_dir / "none.db", names=("calculator",))
    questions = ["What is 2 + 2?", "hello", "Say <|end|> please.", "Who are you?"]

    async def go() -> tuple[list[str], list[str], list[int]]:
        engine = Engine.from_pretrained(bundle, EngineConfig(max_num_seqs=4))
        async with engine:
            answers, streamed = [], []
            for seed, q in enumerate(questions):
                params = SamplingParams(max_tokens=24, temperature=1.0, seed=seed, logit_bias=bias)
                loop = run_with_tools(engine, tok, [{"role": "user", "content": q}], tools, params)
                async for event in loop:
                    if isinstance(event, TextDelta):
                        streamed.append(event.text)
                    elif isinstance(event, Done):
                        answers.append(final_text(event.messages))
            raw = SamplingParams(
                max_tokens=24, temperature=1.0, seed=0, logit_bias=bias, skip_special_tokens=False
            )
            prompt = tok.render_chat(
                [{"role": "user", "content": "hi"}], add_generation_prompt=True
            )
            ids: list[int] = []
            async for out in engine.generate(prompt.ids, raw, "raw"):
                ids += out.samples[0].token_ids
            return answers, streamed, ids

    answers, streamed, raw_ids = asyncio.run(go())
    special_ids = {tok.token_id(t) for t in specials}
    assert special_ids & set(raw_ids), "the push makes the bare model write special tokens"
    assert len(answers) == len(questions)
    assert count_special(answers, specials).with_special == 0
    assert special_texts_in("".join(streamed), specials) == []
