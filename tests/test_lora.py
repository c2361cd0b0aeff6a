"""LoRA fine-tuning: adapters in PEFT's format that transformers + PEFT load with the same
logits, merged and unmerged models that agree, SFT and DPO that learn and resume, clear
errors for bad flags."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from fireside.cli import main
from fireside.errors import CheckpointError, RunConfigMismatchError
from fireside.model import Tokenizer, Transformer, load_pretrained, save_pretrained
from fireside.model.lora import add_adapter, load_adapter, lora_settings
from fireside.train.checkpoint import checkpoint_dirs
from fireside.train.dpo import train_dpo
from fireside.train.finetune import FinetuneOptions
from fireside.train.losses import masked_lm_loss, pad_batch
from fireside.train.metrics import read_metrics
from fireside.train.sft import train_sft
from tests.conftest import tiny_config

pytestmark = pytest.mark.usefixtures("one_thread")

CHAT_ROWS = [
    {
        "messages": [
            {"role": "user", "content": f"What is {a} + {b}?"},
            {"role": "assistant", "content": f"{a + b}"},
        ]
    }
    for a in range(1, 5)
    for b in range(1, 4)
]
PAIRS = [
    {
        "prompt": [{"role": "user", "content": f"Tell me about {topic}."}],
        "chosen": {"role": "assistant", "content": f"Here is a short note on {topic}."},
        "rejected": {"role": "assistant", "content": "No."},
    }
    for topic in ("rivers", "stars", "bread", "trains", "moss", "clocks")
]


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def base_model(tmp_path: Path, tokenizer: Tokenizer) -> Path:
    torch.manual_seed(0)
    model = Transformer(tiny_config(tokenizer.vocab_size))
    # LoRA leaves the embeddings and the output head frozen: at the usual std (0.02) the head
    # gives near-uniform logits whatever the hidden state, leaving an adapter little to move.
    model.init_weights(std=0.1)
    path = tmp_path / "base"
    save_pretrained(model, tokenizer, path)
    return path


def lora_options(base: Path, data: Path, out: Path, **kw: Any) -> FinetuneOptions:
    values: dict[str, Any] = dict(
        steps=20,
        batch_size=4,
        lr=1e-2,
        progress=False,
        device="cpu",
        save_every=10,
        lora=lora_settings(8, 16, "q,k,v,o,gate,up,down"),
    )
    values.update(kw)
    return FinetuneOptions(model=base, data=[str(data)], output=out, **values)


@pytest.fixture
def sft_adapter(tmp_path: Path, base_model: Path) -> Path:
    data = write_jsonl(tmp_path / "chat.jsonl", CHAT_ROWS)
    out = tmp_path / "lora"
    train_sft(lora_options(base_model, data, out))
    return out


def ids_of(base: Path) -> torch.Tensor:
    tok = Tokenizer.from_dir(base)
    return torch.tensor([tok.render_chat(CHAT_ROWS[0]["messages"]).ids])


def test_lora_sft_learns_and_writes_a_peft_adapter(sft_adapter: Path, base_model: Path) -> None:
    losses = [r["loss"] for r in read_metrics(sft_adapter)]
    assert sum(losses[-3:]) / 3 < 0.5 * sum(losses[:3]) / 3
    config = json.loads((sft_adapter / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA"
    assert config["base_model_name_or_path"] == str(base_model.resolve())
    assert (config["r"], config["lora_alpha"]) == (8, 16)
    assert sorted(config["target_modules"]) == sorted(
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )
    weights = load_file(str(sft_adapter / "adapter_model.safetensors"))
    assert "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight" in weights
    assert "base_model.model.model.layers.1.mlp.down_proj.lora_B.weight" in weights
    assert len(weights) == 2 * 7 * 2  # A and B, 7 projections, 2 layers: nothing else
    assert not (sft_adapter / "model.safetensors").exists()  # no copy of the base


def test_transformers_and_peft_load_the_adapter_with_the_same_logits(
    sft_adapter: Path, base_model: Path
) -> None:
    transformers = pytest.importorskip("transformers", reason="transformers (dev extra) missing")
    from peft import PeftModel

    hf = transformers.LlamaForCausalLM.from_pretrained(base_model)
    hf = PeftModel.from_pretrained(hf, sft_adapter).eval()
    ours = load_adapter(load_pretrained(base_model).model, sft_adapter).eval()
    ids = ids_of(base_model)
    with torch.no_grad():
        want, got = hf(ids).logits, ours(ids)
        base = load_pretrained(base_model).model(ids)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    assert (got - base).abs().max() > 1e-2  # the adapter changed something


def test_merged_and_unmerged_agree_and_serving_needs_the_merge(
    sft_adapter: Path, base_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    merged_dir = tmp_path / "merged"
    args = ["merge", "--model", str(base_model), "--adapter", str(sft_adapter)]
    assert main([*args, "--output", str(merged_dir)]) == 0
    merged = load_pretrained(merged_dir)
    adapted = load_adapter(load_pretrained(base_model).model, sft_adapter).eval()
    ids = ids_of(base_model)
    with torch.no_grad():
        torch.testing.assert_close(merged.model(ids), adapted(ids), atol=1e-5, rtol=1e-5)
        # The merged model is an ordinary one: the serving layout takes it, and agrees.
        unfused = merged.model(ids)
        merged.model.fuse_projections()
        torch.testing.assert_close(merged.model(ids), unfused, atol=1e-5, rtol=1e-5)
    with pytest.raises(CheckpointError, match="unmerged LoRA adapter"):
        adapted.base_model.model.fuse_projections()
    assert merged.tokenizer.chat_template == Tokenizer.from_dir(base_model).chat_template

    capsys.readouterr()
    assert main([*args, "--output", str(base_model)]) == 2
    assert "is an input directory" in capsys.readouterr().err
    other = ["merge", "--model", str(base_model), "--adapter", str(base_model)]
    assert main([*other, "--output", str(tmp_path / "x")]) == 2
    assert "is not a LoRA adapter" in capsys.readouterr().err


def test_only_the_adapter_trains(base_model: Path) -> None:
    bundle = load_pretrained(base_model)
    before = {k: v.clone() for k, v in bundle.model.state_dict().items()}
    model = add_adapter(bundle.model, lora_settings(4, 8, "q,v,down"), base_model)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    assert all("q_proj" in n or "v_proj" in n or "down_proj" in n for n in trainable)
    ids, mask = pad_batch([ids_of(base_model)[0].tolist()], [[1] * ids_of(base_model).shape[1]], 0)
    loss, _ = masked_lm_loss(model, ids, mask)
    loss.backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    # B starts at zero, so A's first gradient is zero too; both get one.
    assert with_grad == trainable
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.1)
    optimizer.step()
    after = model.get_base_model().state_dict()
    for name, tensor in before.items():
        peft_name = (
            name.replace("q_proj.", "q_proj.base_layer.")
            .replace("v_proj.", "v_proj.base_layer.")
            .replace("down_proj.", "down_proj.base_layer.")
        )
        torch.testing.assert_close(after[peft_name], tensor, msg=name)


def test_lora_sft_resumes_exactly_from_adapter_only_checkpoints(
    tmp_path: Path, base_model: Path
) -> None:
    data = write_jsonl(tmp_path / "chat.jsonl", CHAT_ROWS)
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    for out in (straight, resumed):
        train_sft(lora_options(base_model, data, out, steps=8, save_every=4))
    ckpt = checkpoint_dirs(resumed)[-1]
    saved = load_file(str(ckpt / "model.safetensors"))
    assert saved and all(".lora_A." in k or ".lora_B." in k for k in saved)
    [adamw] = torch.load(ckpt / "optimizers.pt", weights_only=False)
    assert len(adamw["state"]) == len(saved)  # an optimizer state per adapter weight only
    shutil.rmtree(ckpt)  # killed between step 4 and step 8
    (resumed / "adapter_model.safetensors").unlink()
    train_sft(lora_options(base_model, data, resumed, steps=8, save_every=4))
    a, b = read_metrics(straight), read_metrics(resumed)
    assert [r["step"] for r in b] == list(range(1, 9))
    assert [r["loss"] for r in b] == pytest.approx([r["loss"] for r in a], rel=1e-5, abs=1e-6)
    torch.testing.assert_close(
        load_file(str(resumed / "adapter_model.safetensors")),
        load_file(str(straight / "adapter_model.safetensors")),
    )
    with pytest.raises(RunConfigMismatchError, match="lora_rank"):
        opts = lora_options(base_model, data, resumed, steps=8, save_every=4)
        opts.lora = lora_settings(4)
        train_sft(opts)
    with pytest.raises(RunConfigMismatchError):  # nor a full fine-tune on a LoRA run
        train_sft(lora_options(base_model, data, resumed, steps=8, save_every=4, lora=None))


def test_lora_dpo_learns_against_the_base_with_the_adapter_off(
    tmp_path: Path, base_model: Path
) -> None:
    data = write_jsonl(tmp_path / "pairs.jsonl", PAIRS)
    out = tmp_path / "dpo"
    train_dpo(lora_options(base_model, data, out, steps=15, batch_size=3, lr=5e-3), beta=0.5)
    rows = read_metrics(out)
    assert rows[0]["chosen_logratio"] == pytest.approx(0.0, abs=1e-4)  # B = 0: the base
    assert rows[-1]["loss"] < rows[0]["loss"]
    assert rows[-1]["reward_margin"] > rows[0]["reward_margin"] + 0.5
    assert (out / "adapter_config.json").is_file()
    # Resumed from the last checkpoint (the adapter trained), the reference is still the base.
    shutil.rmtree(checkpoint_dirs(out)[-1])
    train_dpo(lora_options(base_model, data, out, steps=15, batch_size=3, lr=5e-3), beta=0.5)
    again = read_metrics(out)
    assert [r["loss"] for r in again] == pytest.approx([r["loss"] for r in rows], rel=1e-5)


@pytest.mark.parametrize(
    ("flags", "complaint"),
    [
        (["--lora-rank", "0"], "--lora-rank must be a positive integer"),
        (["--lora-rank", "4", "--lora-targets", "q,attn"], "unknown 'attn'; choose from q,k,v"),
        (["--lora-rank", "4", "--lora-targets", "q,q"], "names a projection twice"),
        (["--lora-rank", "4", "--lora-alpha", "0"], "--lora-alpha must be a positive integer"),
        (["--lora-alpha", "16"], "need --lora-rank"),
        (["--lora-rank", "4", "--optimizer", "muon"], "LoRA trains with AdamW"),
    ],
)
def test_bad_lora_flags_are_clear_errors(
    tmp_path: Path,
    base_model: Path,
    capsys: pytest.CaptureFixture[str],
    flags: list[str],
    complaint: str,
) -> None:
    data = write_jsonl(tmp_path / "chat.jsonl", CHAT_ROWS)
    out = tmp_path / "run"
    for stage in ("sft", "dpo"):
        capsys.readouterr()
        args = ["train", stage, "--model", str(base_model), "--data", str(data)]
        code = main([*args, "--output", str(out), "--device", "cpu", "--no-progress", *flags])
        err = capsys.readouterr().err
        assert code == 2 and complaint in err, err
        assert not (out / "checkpoints").exists()


def test_lora_flags_train_through_the_cli(tmp_path: Path, base_model: Path) -> None:
    data = write_jsonl(tmp_path / "chat.jsonl", CHAT_ROWS)
    out = tmp_path / "run"
    args = ["train", "sft", "--model", str(base_model), "--data", str(data), "--output", str(out)]
    args += ["--steps", "2", "--device", "cpu", "--no-progress"]
    assert main([*args, "--lora-rank", "2", "--lora-targets", "q,v"]) == 0
    config = json.loads((out / "adapter_config.json").read_text())
    assert (config["r"], config["lora_alpha"]) == (2, 4)
    assert sorted(config["target_modules"]) == ["q_proj", "v_proj"]
