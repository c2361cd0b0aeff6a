"""The serving weight layout (fused q/k/v and gate/up) and the CPU kernels for one row and for
batches change no result."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fireside.engine import Engine, EngineConfig, SamplingParams
from fireside.model import load_model, serving
from fireside.model.checkpoint import save_model
from fireside.model.transformer import RMSNorm
from tests.conftest import tiny_config
from tests.engine_utils import collect, greedy_reference, plain_copy, tiny_model

GREEDY = SamplingParams(temperature=0, max_tokens=12)


@pytest.mark.parametrize("pack_batch", [None, 16])
@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"attention_bias": True, "architecture": "Qwen2ForCausalLM"},
        {"tie_word_embeddings": True},
        {"qk_norm": True, "architecture": "Qwen3ForCausalLM"},
    ],
)
def test_fused_layout_gives_the_same_logits(
    overrides: dict[str, object], pack_batch: int | None
) -> None:
    model = tiny_model(300, **overrides)
    if overrides.get("attention_bias"):
        for block in model.model.layers:
            torch.nn.init.normal_(block.self_attn.q_proj.bias, std=0.5)  # type: ignore[union-attr]
    ids = torch.randint(0, 300, (2, 9))
    with torch.no_grad():
        before = model(ids)
        params_before = sum(p.numel() for p in model.parameters())
        model.fuse_projections(pack_batch)
        after = model(ids)
    assert model.fused
    assert torch.allclose(before, after, atol=1e-5)
    attn = model.model.layers[0].self_attn
    assert attn.qkv_weight is not None
    # The weights are views of the fused matrices, not copies.
    q_storage = attn.q_proj.weight.untyped_storage().data_ptr()
    assert q_storage == attn.qkv_weight.dense.untyped_storage().data_ptr()
    assert (attn.qkv_weight.packed is not None) == (pack_batch is not None)
    assert sum(p.numel() for p in model.parameters()) == params_before


@pytest.mark.parametrize("pack_batch", [None, 16])
def test_every_kernel_computes_the_same_product(pack_batch: int | None) -> None:
    """One row (numpy's BLAS sgemv), several rows (oneDNN, packed or dense), and training
    (F.linear) all give x @ W.T."""
    weight = torch.randn(48, 32)
    served = serving.serving_weight([weight.clone()], pack_batch)
    for shape in [(32,), (1, 1, 32), (1, 32), (3, 32), (2, 5, 32)]:
        x = torch.randn(shape)
        with torch.inference_mode():
            out = serving.linear(x, served)
        assert out.shape == (*shape[:-1], 48)
        assert torch.allclose(out, x @ weight.T, atol=1e-5)
    row = torch.randn(1, 64)[:, ::2]  # a strided view: the one-row path copies it
    with torch.inference_mode():
        assert torch.allclose(serving.linear(row, served), row @ weight.T, atol=1e-5)
    x = torch.randn(1, 32, requires_grad=True)
    serving.linear(x, serving.ServingWeight(weight.requires_grad_())).sum().backward()
    assert x.grad is not None


def test_rms_norm_of_one_row_equals_the_batched_formula() -> None:
    """Single-stream decode normalises one row with a Python-float scale; a row of a batch,
    and training (gradients flow through the scale), take the tensor formula."""
    norm = RMSNorm(64, 1e-6)
    torch.nn.init.normal_(norm.weight)
    batch = torch.randn(3, 1, 64) * torch.tensor([1e-4, 1.0, 1e3])[:, None, None]
    with torch.inference_mode():
        together = norm(batch)
        for i in range(3):
            assert torch.allclose(norm(batch[i : i + 1]), together[i : i + 1], rtol=1e-6)
    x, ref = batch[1:2].clone().requires_grad_(), batch[1:2].clone().requires_grad_()
    upstream = torch.randn(1, 1, 64)
    (norm(x) * upstream).sum().backward()
    scale = torch.rsqrt(ref.square().mean(-1, keepdim=True) + norm.eps)
    (ref * scale * norm.weight * upstream).sum().backward()
    assert x.grad is not None and ref.grad is not None
    assert torch.allclose(x.grad, ref.grad, atol=1e-5)


def test_a_one_row_step_runs_torch_on_one_thread_and_restores_it() -> None:
    threads = torch.get_num_threads()
    cpu = torch.device("cpu")
    with serving.one_row_threads(1, cpu, torch.float32):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == threads
    for rows, dtype in [(2, torch.float32), (1, torch.bfloat16)]:
        with serving.one_row_threads(rows, cpu, dtype):
            assert torch.get_num_threads() == threads
    with pytest.raises(RuntimeError), serving.one_row_threads(1, cpu, torch.float32):
        raise RuntimeError("a failed step")
    assert torch.get_num_threads() == threads


@pytest.mark.parametrize(("given", "seen"), [(None, "20"), ("10", "10")])
def test_import_fireside_shortens_openblas_spinning_unless_set(
    given: str | None, seen: str
) -> None:
    """OpenBLAS reads its spin timeout when numpy loads it, so `import fireside` sets it first
    (a user's own value wins)."""
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    if given is not None:
        env["OPENBLAS_THREAD_TIMEOUT"] = given
    probe = "import fireside, numpy, os; print(os.environ['OPENBLAS_THREAD_TIMEOUT'])"
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == seen


def test_fused_layout_in_bf16_matches_the_plain_model() -> None:
    """bf16 on CPU takes the F.linear path of the serving layout (as CUDA does)."""
    model = tiny_model(300).to(torch.bfloat16)
    reference = plain_copy(model).to(torch.bfloat16)
    ids = torch.randint(0, 300, (2, 9))
    with torch.no_grad():
        model.fuse_projections(16)  # packing applies to fp32 only: ignored here
        assert model.model.layers[0].self_attn.qkv_weight.packed is None  # type: ignore[union-attr]
        after, before = model(ids).float(), reference(ids).float()
    assert torch.allclose(before, after, atol=0.05 * before.abs().max().item())


def test_fused_model_saves_and_reloads(tmp_path: Path) -> None:
    model = tiny_model(300)
    reference = plain_copy(model)
    model.fuse_projections()
    save_model(model, tmp_path)
    loaded = load_model(tmp_path)
    ids = torch.randint(0, 300, (1, 7))
    with torch.no_grad():
        assert torch.allclose(loaded(ids), reference(ids), atol=1e-6)
    assert loaded.config.num_hidden_layers == tiny_config(300).num_hidden_layers


@pytest.mark.parametrize("tied", [False, True])
def test_an_engine_decodes_one_row_and_batches_alike(tied: bool) -> None:
    """Alone, a request's decode steps are one row (BLAS sgemv on the dense weights); beside
    others they are batched (oneDNN on the packed copy): the greedy tokens are the same."""
    model = tiny_model(300, tie_word_embeddings=tied)
    prompts = [[5, 6, 7, 8, 9], [3, 1, 4], [2, 7, 1, 8, 2, 8]]
    expected = [greedy_reference(model, p, GREEDY.max_tokens) for p in prompts]
    sizes = {k: v.numel() for k, v in model.state_dict().items()}
    engine = Engine(model, None, EngineConfig(pack_weights_for_batch=16))
    attn = model.model.layers[0].self_attn
    assert attn.qkv_weight is not None and attn.qkv_weight.packed is not None
    # The model stays whole: it can still be saved or trained.
    assert {k: v.numel() for k, v in model.state_dict().items()} == sizes

    async def run() -> tuple[list[int], list[list[int]]]:
        async with engine:
            alone = (await collect(engine, prompts[0], GREEDY, "alone")).tokens[0]
            together = await asyncio.gather(
                *(collect(engine, p, GREEDY, f"r{i}") for i, p in enumerate(prompts))
            )
        return alone, [out.tokens[0] for out in together]

    alone, together = asyncio.run(run())
    assert alone == expected[0]
    assert together == expected


def test_an_engine_for_one_sequence_does_not_pack() -> None:
    model = tiny_model(300)
    Engine(model, None, EngineConfig(max_num_seqs=1, pack_weights_for_batch=16))
    assert model.model.layers[0].self_attn.qkv_weight.packed is None  # type: ignore[union-attr]
