"""lm-evaluation-harness runs end to end against the server (`local-completions`, remote
tokenizer), on two small tasks defined here from local JSON files: a multiple-choice
(loglikelihood) task and a `generate_until` task. Its numbers are checked against the API."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api_utils import run_server

MC_DOCS = [
    {"question": "import json\nd = json.", "choices": ["loads", "dumps", "banana"], "answer": 0},
    {"question": "def main():\n    return", "choices": [" None", " 1", " 42"], "answer": 1},
    {"question": "class Parser(", "choices": ["object", "Base", "dict"], "answer": 2},
]
GEN_DOCS = [
    {"question": "from email import", "answer": " message"},
    {"question": "for key in", "answer": " range"},
]


def write_tasks(root: Path) -> None:
    (root / "mc.json").write_text("\n".join(json.dumps(d) for d in MC_DOCS))
    (root / "gen.json").write_text("\n".join(json.dumps(d) for d in GEN_DOCS))
    common = "dataset_path: json\ntest_split: train\n"
    (root / "fireside_mc.yaml").write_text(
        "task: fireside_mc\n"
        + common
        + f"dataset_kwargs:\n  data_files: {json.dumps(str(root / 'mc.json'))}\n"
        "output_type: multiple_choice\n"
        'doc_to_text: "{{question}}"\n'
        'doc_to_choice: "{{choices}}"\n'
        'doc_to_target: "{{answer}}"\n'
        'target_delimiter: ""\n'
        "metric_list:\n  - metric: acc\n"
    )
    (root / "fireside_gen.yaml").write_text(
        "task: fireside_gen\n"
        + common
        + f"dataset_kwargs:\n  data_files: {json.dumps(str(root / 'gen.json'))}\n"
        "output_type: generate_until\n"
        'doc_to_text: "{{question}}"\n'
        'doc_to_target: "{{answer}}"\n'
        'target_delimiter: ""\n'
        "generation_kwargs:\n"
        '  until: ["\\n"]\n'
        "  max_gen_toks: 8\n"
        "  do_sample: false\n"
        "metric_list:\n  - metric: exact_match\n"
    )


def loglikelihood(url: str, context: str, continuation: str) -> float:
    """The continuation's log-probability, straight from the API (echo + logprobs)."""
    ctx = httpx.post(f"{url}/tokenize", json={"prompt": context}).json()["tokens"]
    whole = httpx.post(f"{url}/tokenize", json={"prompt": context + continuation}).json()["tokens"]
    body = {
        "model": "tiny",
        "prompt": whole,
        "max_tokens": 1,
        "echo": True,
        "logprobs": 1,
        "temperature": 0,
    }
    choice = httpx.post(f"{url}/v1/completions", json=body).json()["choices"][0]
    return sum(choice["logprobs"]["token_logprobs"][len(ctx) : len(whole)])


def test_lm_eval_local_completions(
    api_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    write_tasks(tmp_path)
    with run_server(api_model_dir) as s:
        results: dict[str, Any] = simple_evaluate(  # type: ignore[assignment]
            model="local-completions",
            model_args=(
                f"model=tiny,base_url={s.base_url}/completions,tokenizer_backend=remote,"
                "num_concurrent=1,max_retries=1,tokenized_requests=True"
            ),
            tasks=["fireside_mc", "fireside_gen"],
            task_manager=TaskManager(include_path=str(tmp_path), include_defaults=False),
            log_samples=True,
            random_seed=0,
        )
        assert 0.0 <= results["results"]["fireside_mc"]["acc,none"] <= 1.0
        assert 0.0 <= results["results"]["fireside_gen"]["exact_match,none"] <= 1.0
        mc = results["samples"]["fireside_mc"]
        assert len(mc) == len(MC_DOCS)
        for sample in mc:
            doc = sample["doc"]
            for choice, (ll, _greedy) in zip(doc["choices"], sample["filtered_resps"], strict=True):
                expected = loglikelihood(s.url, doc["question"], choice)
                assert math.isclose(ll, expected, rel_tol=1e-4, abs_tol=1e-3)
        gen = results["samples"]["fireside_gen"]
        assert len(gen) == len(GEN_DOCS)
        for sample in gen:
            body = {
                "model": "tiny",
                "prompt": sample["doc"]["question"],
                "max_tokens": 8,
                "temperature": 0,
                "stop": ["\n"],
            }
            text = httpx.post(f"{s.base_url}/completions", json=body).json()["choices"][0]["text"]
            assert sample["filtered_resps"][0] == text
