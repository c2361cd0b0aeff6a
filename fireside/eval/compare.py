"""The new model against the one in service, on what neither trained on: an improve job's
evaluation (`python -m fireside.eval.compare`, run in the job's own process).

- Preference win rate on held-out feedback pairs: the fraction of pairs where the model gives
  the chosen answer more log-probability than the rejected one (a tie counts half). DPO moves
  exactly this; it is the number that says whether the feedback was learnt.
- Bits per byte of the held-out preferred answers' text (each answer a document, BOS first,
  no chat template): whether the model still predicts good answers' text well.
- The built-in tool evals (eval/tool_eval.py), only for a model trained with the tools.

A model is a weights directory, with or without a LoRA adapter; an adapter is merged in memory
first, so every measurement runs the plain Transformer.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from fireside.model.pretrained import Pretrained, load_pretrained, uses_tools
from fireside.train.chat_data import TokenizedPair, load_dpo_file, read_jsonl


@dataclass(frozen=True)
class ModelRef:
    weights: Path  # an HF-format model directory
    adapter: Path | None = None  # a PEFT LoRA adapter over those weights


def load_model(ref: ModelRef, device: str) -> Pretrained:
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    bundle = load_pretrained(ref.weights, device=device, dtype=torch.float32)
    if ref.adapter is not None:
        from fireside.model.lora import load_adapter

        bundle.model = load_adapter(bundle.model, ref.adapter).merge_and_unload()
    bundle.model.eval()
    return bundle


def preference_win_rate(chosen: Tensor, rejected: Tensor) -> float:
    """Of pairs' summed log-probs, the fraction where the chosen answer's is higher (ties
    half: a model that cannot tell them apart scores 0.5)."""
    if chosen.numel() == 0:
        raise ValueError("no pairs to compare")
    wins = (chosen > rejected).float() + 0.5 * (chosen == rejected).float()
    return float(wins.mean())


@torch.inference_mode()
def pair_logprobs_all(
    bundle: Pretrained, pairs: Sequence[TokenizedPair], batch_size: int = 8
) -> tuple[Tensor, Tensor]:
    """Summed log-probs of every pair's chosen and rejected answer."""
    from fireside.train.dpo import pair_logprobs
    from fireside.train.finetune import pad_id

    device = next(bundle.model.parameters()).device
    chosen, rejected = [], []
    for i in range(0, len(pairs), batch_size):
        c, r = pair_logprobs(bundle.model, list(pairs[i : i + batch_size]), pad_id(bundle), device)
        chosen.append(c.float().cpu())
        rejected.append(r.float().cpu())
    return torch.cat(chosen), torch.cat(rejected)


def held_out_texts(pairs_file: Path | None, conversations_file: Path | None) -> list[str]:
    """The preferred answers: each pair's chosen one, each conversation's assistant turns."""
    texts: list[str] = []
    if pairs_file is not None and pairs_file.is_file():
        for _, line in read_jsonl(pairs_file):
            texts.append(line["chosen"].get("content"))
    if conversations_file is not None and conversations_file.is_file():
        for _, line in read_jsonl(conversations_file):
            texts.extend(m.get("content") for m in line["messages"] if m["role"] == "assistant")
    return [t for t in texts if isinstance(t, str) and t.strip()]


def measure(
    bundle: Pretrained,
    pairs_file: Path | None,
    texts: list[str],
    knowledge_db: Path | None,
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if pairs_file is not None and pairs_file.is_file():
        pairs = load_dpo_file(pairs_file, bundle.tokenizer, bundle.context_length)
        if pairs:
            out["win_rate"] = preference_win_rate(*pair_logprobs_all(bundle, pairs))
    if texts:
        from fireside.eval.bpb import bits_per_byte, tokenize_documents

        result = bits_per_byte(bundle.model, tokenize_documents(bundle.tokenizer, texts))
        out["bits_per_byte"] = result.bits_per_byte
    if uses_tools(bundle.generation_config) and knowledge_db is not None:
        from fireside.eval.tool_eval import run_tool_eval

        tools = run_tool_eval(bundle, knowledge_db)
        out["tool_eval"] = {
            c: list(tools.score(c)) for c in ("arithmetic", "lookup", "honesty", "identity")
        }
    return out


def compare(
    served: ModelRef,
    candidate: ModelRef,
    pairs_file: Path | None,
    conversations_file: Path | None,
    knowledge_db: Path | None = None,
    device: str = "cpu",
) -> dict[str, Any]:
    """Both models measured alike: {"served": {...}, "candidate": {...}, "held_out": counts,
    "skipped": {measure: why}}."""
    texts = held_out_texts(pairs_file, conversations_file)
    n_pairs = sum(1 for _ in read_jsonl(pairs_file)) if pairs_file and pairs_file.is_file() else 0
    results: dict[str, Any] = {
        "held_out": {"pairs": n_pairs, "texts": len(texts)},
        "skipped": {},
    }
    for role, ref in (("served", served), ("candidate", candidate)):
        bundle = load_model(ref, device)
        if role == "served" and not uses_tools(bundle.generation_config):
            results["skipped"]["tool_eval"] = (
                "the model is not trained with Fireside's tools "
                '(its generation_config.json has no "fireside_tools": true)'
            )
        elif role == "served" and (knowledge_db is None or not knowledge_db.is_file()):
            results["skipped"]["tool_eval"] = "no knowledge index to look things up in"
            knowledge_db = None
        results[role] = measure(bundle, pairs_file, texts, knowledge_db)
        del bundle
    if not n_pairs:
        results["skipped"]["win_rate"] = "no held-out preference pairs"
    if not texts:
        results["skipped"]["bits_per_byte"] = "no held-out answers' text"
    return results


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m fireside.eval.compare",
        description="a new model against the one in service on held-out feedback (JSON out)",
    )
    p.add_argument("--served", required=True, help="the served version's weights directory")
    p.add_argument("--served-adapter", help="its LoRA adapter, if it is one")
    p.add_argument("--candidate", required=True, help="the new version's weights directory")
    p.add_argument("--candidate-adapter", help="its LoRA adapter, if it is one")
    p.add_argument("--pairs", help="held-out DPO pairs (JSONL)")
    p.add_argument("--conversations", help="held-out SFT conversations (JSONL)")
    p.add_argument("--knowledge-db", help="the search tool's index, for the tool evals")
    p.add_argument("--device", default="cpu")
    p.add_argument("--output", required=True, help="where the comparison's JSON goes")
    args = p.parse_args(argv)

    def ref(weights: str, adapter: str | None) -> ModelRef:
        return ModelRef(Path(weights), Path(adapter) if adapter else None)

    result = compare(
        ref(args.served, args.served_adapter),
        ref(args.candidate, args.candidate_adapter),
        Path(args.pairs) if args.pairs else None,
        Path(args.conversations) if args.conversations else None,
        Path(args.knowledge_db) if args.knowledge_db else None,
        args.device,
    )
    out = Path(args.output)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2))
    tmp.replace(out)  # whole or absent: a resumed job never reads half a comparison
    print(json.dumps(result), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
