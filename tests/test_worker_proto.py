"""The checked-in gRPC code is what `make proto` makes from worker.proto today."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import gen_proto  # a script (scripts/), not a module of the package  # noqa: E402


def test_generated_code_matches_the_proto(tmp_path: Path) -> None:
    for made in gen_proto.generate(tmp_path):
        checked_in = ROOT / made.relative_to(tmp_path)
        assert checked_in.read_text() == made.read_text(), f"run `make proto`: {checked_in}"


def test_sampling_params_cross_the_wire_whole() -> None:
    # Every field a gateway sets reaches the worker's engine: a dropped banned_token_ids would
    # let a worker sample call markers where no tool was offered.
    from fireside.engine import SamplingParams
    from fireside.worker.convert import params_from_proto, params_to_proto

    sent = SamplingParams(
        max_tokens=9, min_tokens=1, temperature=0.5, top_p=0.9, top_k=4, min_p=0.1,
        repetition_penalty=1.1, presence_penalty=0.2, frequency_penalty=0.3,
        logit_bias={5: -2.0}, seed=7, n=2, stop=["x"], stop_token_ids=[1], ignore_eos=True,
        include_stop_str_in_output=True, skip_special_tokens=False, keep_special_token_ids=[6],
        banned_token_ids=[3, 4], logprobs=2, prompt_logprobs=1, cache_salt="s", lora="a",
    )  # fmt: skip
    assert params_from_proto(params_to_proto(sent)) == sent
