"""`fireside train recipe small|gpu`: the bundled model from nothing but this machine, resumable.

    corpus (`data sources`) → mix (prose and code, held-out slices) → held-out slices without
    what training shares (`data dedup`) → tokenizer → token shards → pretrain → knowledge index
    → tool-use conversations → eval sets' overlap with training (`data overlap`) → SFT → bf16
    model directory

Each stage leaves a file that says it is done, so re-running the recipe after an interruption
carries on where it stopped; pretraining and SFT resume from their last checkpoint. Nothing is
downloaded: the corpus is what the installed packages carry, the conversations are made with
the real tools.
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fireside.errors import FiresideError

if TYPE_CHECKING:
    from fireside.train.finetune import FinetuneOptions
    from fireside.train.pretrain import PretrainConfig


@dataclass(frozen=True)
class Recipe:
    depth: int
    vocab_size: int
    # Characters of each `fireside data sources` recipe in the pretraining mix.
    shares: dict[str, int]
    pretrain_steps: int
    pretrain_batch_tokens: int
    seq_len: int
    device_batch: int  # rows per forward pass: the whole step in one pass on a CPU
    sft_steps: int
    sft_batch: int
    sft_lr: float
    device: str = "auto"
    # Checkpoints: often on a CPU, where a run spans hours and gets interrupted; rarely on a GPU,
    # where writing the optimizer state would cost more than the steps between two saves.
    save_every: int = 500
    sft_counts: dict[str, int] = field(default_factory=dict)  # empty: synth_tools' defaults
    # Plain text from the mix, mixed into SFT (passes of sft-text.jsonl per pass of the
    # conversations) so the chat model keeps the base's bits per byte; 0 leaves it out.
    sft_text_chars: int = 14_000_000
    sft_text_weight: float = 0.2


RECIPES = {
    # 11.6M parameters; on a 2-core CPU about an hour of pretraining (2.5M tokens) and a few
    # hours of SFT, in the background.
    "small": Recipe(
        depth=5,
        vocab_size=8192,
        shares={
            "debian-docs": 30_000_000,
            "man-pages": 30_000_000,
            "python-stdlib": 20_000_000,
            "python-packages": 20_000_000,
        },
        pretrain_steps=300,
        pretrain_batch_tokens=8192,
        seq_len=512,
        device_batch=16,
        sft_steps=3000,
        sft_batch=16,
        sft_lr=3e-4,
        device="cpu",
        save_every=10,
    ),
    # The bundled model, trained on one GPU in minutes: as large as the 50 MB of bf16 weights the
    # repository carries allow (24.4M parameters), on 73x the small recipe's pretraining tokens.
    "gpu-small": Recipe(
        depth=7,
        vocab_size=8192,
        shares={
            "debian-docs": 30_000_000,
            "man-pages": 50_000_000,
            "python-stdlib": 25_000_000,
            "python-packages": 55_000_000,
        },
        # What the bundled model's H200 run fitted into 270 s and 120 s (scripts/train_gpu.py).
        pretrain_steps=1398,
        pretrain_batch_tokens=131072,
        seq_len=1024,
        device_batch=64,
        sft_steps=518,
        sft_batch=64,
        # 1e-3 on conversations alone took validation from 0.617 to 2.00 bits per byte.
        sft_lr=3e-4,
    ),
    # ~100M parameters for one GPU: the same data, 40x the pretraining tokens.
    "gpu": Recipe(
        depth=12,
        vocab_size=16384,
        shares={
            "debian-docs": 60_000_000,
            "man-pages": 110_000_000,
            "python-stdlib": 35_000_000,
            "python-packages": 200_000_000,
        },
        pretrain_steps=5000,
        pretrain_batch_tokens=131072,
        seq_len=1024,
        device_batch=32,
        sft_steps=4000,
        sft_batch=64,
        sft_lr=3e-4,
    ),
}


def _stage(command: str) -> None:
    """Says which stage runs, as the command a person would type for it."""
    print(f"$ fireside {command}", file=sys.stderr, flush=True)


def run_recipe(
    name: str,
    work: Path,
    output: Path,
    knowledge_db: Path | None = None,
    *,
    data_only: bool = False,
) -> Path:
    """Run (or resume) the recipe; with `data_only`, stop once everything training reads is in
    `work` (token shards, tokenizer, knowledge index, conversations), for a machine without the
    corpus (a rented GPU) to train from. Returns the model directory, or `work` when data_only."""
    from fireside.data.mix import mix
    from fireside.data.synth_tools import DEFAULT_COUNTS, synthesize

    if name not in RECIPES:
        raise FiresideError(f"unknown recipe {name!r}; known: {', '.join(RECIPES)}")
    r = RECIPES[name]
    work.mkdir(parents=True, exist_ok=True)
    (work / "recipe.json").write_text(json.dumps({"name": name, **asdict(r)}, indent=2))
    corpus, mixed, tok, data = work / "corpus", work / "mix", work / "tokenizer", work / "data"
    if not (corpus / "sources.json").is_file():
        from fireside.data.sources import gather

        _stage(f"data sources --output {corpus} --recipe {' '.join(r.shares)}")
        gather(corpus, names=list(r.shares))
    if not (mixed / "mix.json").is_file():
        mix(corpus, mixed, r.shares)
    if not (mixed / "dedup.json").is_file():
        # Reads the mix, writes beside it: the training side (and shards made from it) stays.
        from fireside.data.held_out import dedup_held_out

        held = [mixed / "held-out-prose.txt", mixed / "held-out-code.txt"]
        _stage(f"data dedup --train {mixed / 'train.jsonl'} --held-out {' '.join(map(str, held))}")
        for dedup in dedup_held_out([mixed / "train.jsonl"], held, report=mixed / "dedup.json"):
            print(dedup.line(), file=sys.stderr)
    if not (tok / "tokenizer.json").is_file():
        from fireside.train.tokenizer import train_and_report

        _stage(f"train tokenizer --input {mixed / 'train.jsonl'} --vocab-size {r.vocab_size}")
        report = train_and_report([mixed / "train.jsonl"], r.vocab_size, tok, max_chars=40_000_000)
        print("\n".join(report.lines()), file=sys.stderr)
    if not (data / "manifest.json").is_file():
        from fireside.data.prepare import prepare
        from fireside.model.tokenizer import Tokenizer

        _stage(f"data prepare --input {mixed / 'train.jsonl'} --tokenizer {tok} --output {data}")
        prepare([mixed / "train.jsonl"], Tokenizer.from_dir(tok), data, progress=False)
    chats, db = work / "sft.jsonl", knowledge_db or work / "knowledge.db"
    if not chats.is_file():
        # The index is needed to make the conversations only: a machine given a finished
        # sft.jsonl (a GPU box fed by --data-only) needs no copy of it.
        if not db.is_file():
            from fireside.tools.knowledge import build_index, default_sources

            _stage(f"knowledge build --db {db}")
            build_index(db, default_sources())
        counts = synthesize(chats, db, counts=r.sft_counts or DEFAULT_COUNTS)
        print(f"{chats}: {json.dumps(counts)}", file=sys.stderr)
    text = work / "sft-text.jsonl"
    if r.sft_text_weight > 0 and not text.is_file():
        from fireside.data.text_sample import write_text_sample

        written = write_text_sample(mixed / "train.jsonl", text, chars=r.sft_text_chars)
        print(f"{text}: {written:,} characters of the mix as plain-text SFT lines", file=sys.stderr)
    overlap = work / "overlap.md"
    # Needs the index (the look-up eval's questions) and the mix: on a GPU box fed by
    # --data-only neither is there, and the data machine has already written it.
    if not overlap.is_file() and db.is_file() and (mixed / "train.jsonl").is_file():
        _stage(f"data overlap --train {mixed / 'train.jsonl'} --sft {chats} --output {overlap}")
        write_overlap(mixed / "train.jsonl", chats, db, overlap)
    if data_only:
        return work
    from fireside.train.pretrain import pretrain
    from fireside.train.sft import train_sft

    _stage(" ".join(pretrain_argv(r, work, work / "pretrain", steps=r.pretrain_steps)))
    pretrain(pretrain_config(r, work, work / "pretrain", steps=r.pretrain_steps))
    # The base model is an output too: the chat model's bits per byte are judged against it.
    export(work / "pretrain", work / "base", tools=False)
    _stage(" ".join(sft_argv(r, work, work / "pretrain", work / "sft", steps=r.sft_steps)))
    train_sft(sft_options(r, work, work / "pretrain", work / "sft", steps=r.sft_steps))
    return export(work / "sft", output, loss_plot=work / "pretrain" / "loss.png")


def write_overlap(train: Path, sft: Path, knowledge_db: Path, output: Path) -> None:
    """The eval sets' overlap with the pretraining text and the conversations, as markdown
    (the report card includes it)."""
    from fireside.data.held_out import training_texts
    from fireside.data.overlap import SpanIndex
    from fireside.eval.overlap import EvalContext, markdown, overlap_rows

    indexes = [SpanIndex(training_texts([train])), SpanIndex(training_texts([sft]))]
    table = markdown(overlap_rows(indexes, EvalContext(knowledge_db)), ["pretraining", "SFT"])
    tmp = output.with_name(output.name + ".tmp")
    tmp.write_text(table, encoding="utf-8")
    tmp.replace(output)
    print(table, file=sys.stderr)


def pretrain_config(
    r: Recipe,
    work: Path,
    output: Path,
    *,
    steps: int,
    eval_every: int = 100,
    eval_tokens: int = 65536,
    save_every: int | None = None,
    keep_last: int = 2,
    device: str | None = None,
) -> PretrainConfig:
    """Pretraining on a recipe's work directory (shards and tokenizer), as the recipe runs it
    and (through pretrain_argv) as scripts/train_gpu.py runs it with its own steps."""
    from fireside.train.pretrain import PretrainConfig

    return PretrainConfig(
        data=work / "data", tokenizer=work / "tokenizer", output=output, depth=r.depth,
        steps=steps, seq_len=r.seq_len, batch_tokens=r.pretrain_batch_tokens,
        device_batch=r.device_batch, eval_every=eval_every, eval_tokens=eval_tokens,
        sample_every=0, save_every=save_every or r.save_every, keep_last=keep_last,
        device=device or r.device, progress=False,
    )  # fmt: skip


def sft_options(
    r: Recipe,
    work: Path,
    base: Path,
    output: Path,
    *,
    steps: int,
    save_every: int | None = None,
    keep_last: int = 2,
    device: str | None = None,
) -> FinetuneOptions:
    """SFT of `base` on the work directory's conversations (sft.jsonl)."""
    from fireside.train.finetune import FinetuneOptions

    data = [str(work / "sft.jsonl")]
    if r.sft_text_weight > 0:
        data.append(f"{work / 'sft-text.jsonl'}:{r.sft_text_weight}")
    return FinetuneOptions(
        model=base, data=data, output=output, steps=steps,
        batch_size=r.sft_batch, lr=r.sft_lr, max_len=r.seq_len,
        save_every=save_every or r.save_every, keep_last=keep_last, device=device or r.device,
        progress=False,
    )  # fmt: skip


def _flags(options: object, names: tuple[str, ...]) -> list[str]:
    """The command-line flags that give `options` these fields' values (None: left out)."""
    argv: list[str] = []
    for name in names:
        value = getattr(options, name)
        if isinstance(value, list):  # repeated flags (`--data A --data B:0.2`)
            for item in value:
                argv += [f"--{name.replace('_', '-')}", str(item)]
        elif value is not None:
            argv += [f"--{name.replace('_', '-')}", str(value)]
    return [*argv, *([] if getattr(options, "progress", True) else ["--no-progress"])]


PRETRAIN_FLAGS = ("data", "tokenizer", "depth", "output", "steps", "seq_len", "batch_tokens",
                  "device_batch", "eval_every", "eval_tokens", "sample_every", "save_every",
                  "keep_last", "device")  # fmt: skip
SFT_FLAGS = ("model", "data", "output", "steps", "batch_size", "lr", "max_len", "save_every",
             "keep_last", "device")  # fmt: skip


def pretrain_argv(r: Recipe, work: Path, output: Path, **kwargs: Any) -> list[str]:
    """`fireside train pretrain` with pretrain_config's settings (scripts/train_gpu.py runs
    each stage as its own process)."""
    return [
        "train",
        "pretrain",
        *_flags(pretrain_config(r, work, output, **kwargs), PRETRAIN_FLAGS),
    ]


def sft_argv(r: Recipe, work: Path, base: Path, output: Path, **kwargs: Any) -> list[str]:
    """`fireside train sft` with sft_options' settings."""
    return ["train", "sft", *_flags(sft_options(r, work, base, output, **kwargs), SFT_FLAGS)]


def export(model: Path, output: Path, loss_plot: Path | None = None, *, tools: bool = True) -> Path:
    """The fine-tuned model in bf16 (half the bytes in git; Fireside loads it as fp32 on CPU),
    marked as trained with the built-in tools (`tools`) so `fireside chat` and the app turn them
    on."""
    import torch

    from fireside.files import swap_dir
    from fireside.model import load_pretrained, save_pretrained

    bundle = load_pretrained(model, dtype=torch.bfloat16)
    generation = {**bundle.generation_config, "fireside_tools": tools}
    staging = output.with_name(output.name + ".new")
    shutil.rmtree(staging, ignore_errors=True)
    save_pretrained(bundle.model, bundle.tokenizer, staging, generation)
    if loss_plot is not None and loss_plot.is_file():
        shutil.copy(loss_plot, staging / "pretrain-loss.png")
    swap_dir(staging, output, output.with_name(output.name + ".old"))
    return output
