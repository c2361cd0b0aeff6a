"""Eval generation: HumanEval prompts through the engine (batched) vs the reference decoder.

    .venv/bin/python bench/eval.py [--depth 4] [--problems 16] [--new-tokens 64] [--repeats 3]

A random model of the given depth (the pretraining dial) with a tokenizer trained on the
standard library; both sides decode the same prompts greedily (checked to give the same
text). Prints the median seconds of each side and their ratio, measured in this run.
"""

from __future__ import annotations

import argparse
import statistics
import sysconfig
import tempfile
import time
from pathlib import Path

import torch

from fireside.eval.generate import generate_all, greedy_generate
from fireside.eval.humaneval import load_problems
from fireside.model import ModelConfig, Transformer, load_pretrained, save_pretrained
from fireside.model import train_tokenizer as train


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--problems", type=int, default=16)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    stdlib = Path(sysconfig.get_paths()["stdlib"])
    texts = [f.read_text(encoding="utf-8") for f in sorted(stdlib.glob("*.py"))[:80]]
    tokenizer = train(texts, vocab_size=4096)
    torch.manual_seed(0)
    model = Transformer(ModelConfig.from_depth(args.depth, tokenizer.vocab_size, 2048))
    model.init_weights(std=0.5)  # far from argmax ties, so both sides give the same text
    with tempfile.TemporaryDirectory() as tmp:
        save_pretrained(model, tokenizer, tmp)
        bundle = load_pretrained(tmp)
    prompts = [
        [tokenizer.bos_id or 0, *tokenizer.encode(p["prompt"])]
        for p in load_problems(args.problems)
    ]

    stops = bundle.stop_token_ids

    def reference() -> list[str | None]:
        return [
            greedy_generate(bundle.model, tokenizer, p, args.new_tokens, stops) for p in prompts
        ]

    def engine() -> list[str | None]:
        return generate_all(bundle, prompts, args.new_tokens)

    # Same greedy text on both sides, so both do the same decoding work. (The engine's streaming
    # detokenizer holds back a UTF-8 character cut at the length limit; the reference shows it
    # as U+FFFD.)
    same = [(r or "").rstrip("\ufffd") == e for r, e in zip(reference(), engine(), strict=True)]
    assert all(same), "the engine and the reference decoder disagree"

    times: dict[str, list[float]] = {"reference": [], "engine": []}
    for _ in range(args.repeats):
        for name, fn in (("reference", reference), ("engine", engine)):
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    ref, eng = (statistics.median(times[k]) for k in ("reference", "engine"))
    params = bundle.model.config.num_parameters() / 1e6
    print(
        f"depth {args.depth} ({params:.1f}M params), {len(prompts)} HumanEval prompts x "
        f"{args.new_tokens} new tokens, torch threads {torch.get_num_threads()}, "
        f"median of {args.repeats}"
    )
    print(f"  reference decoder (one at a time): {ref:7.2f} s")
    print(f"  engine (batched):                  {eng:7.2f} s   {ref / eng:.2f}x the reference")


if __name__ == "__main__":
    main()
