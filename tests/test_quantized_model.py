"""Quantized weights in the Transformer (fireside.model.quantized): logits near fp32's, the
engine's batching and paged KV unchanged, the fp32 weights released, and clear refusals."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from fireside.cli import main
from fireside.engine import Engine, EngineConfig, SamplingParams
from fireside.engine.kv_cache import KVBlockPool
from fireside.engine.one_row import OneRowDecoder
from fireside.errors import CheckpointError
from fireside.kernels import ggml
from fireside.kernels.ggml import KernelsUnavailableError, QType, QuantMatrix
from fireside.model import Transformer, quantized
from fireside.model.checkpoint import save_model
from fireside.settings import Settings
from tests.conftest import tiny_config
from tests.engine_utils import collect, plain_copy
from tests.kernels_utils import require_kernels

GREEDY = SamplingParams(temperature=0, max_tokens=12)
# Widths where every int4 rule shows: q/k/v/o/gate/up read 256 values (Q4_K), down reads 384
# (Q4_0), the LM head and embeddings Q6_K.
WIDE = {"hidden_size": 256, "intermediate_size": 384, "head_dim": 64}


@pytest.fixture(autouse=True)
def kernels() -> Iterator[None]:
    require_kernels()
    yield


def model(std: float = 0.05, seed: int = 0, **overrides: object) -> Transformer:
    """A random model with moderate weights: large ones (the engine tests' std 0.5) make the
    network chaotic enough that any rounding, quantization's or not, flips most tokens."""
    torch.manual_seed(seed)
    m = Transformer(tiny_config(300, **overrides))
    m.init_weights(std=std)
    return m.eval()


def quantized_copy(m: Transformer, scheme: str) -> Transformer:
    q = plain_copy(m)
    quantized.quantize_model(q, scheme)
    return q


@torch.no_grad()
def own_greedy(m: Transformer, prompt: list[int], n: int) -> list[int]:
    """Greedy by full forward passes, no cache, no engine: the model's own reference."""
    ids = list(prompt)
    for _ in range(n):
        ids.append(int(m(torch.tensor([ids]))[0, -1].argmax()))
    return ids[len(prompt) :]


def engine_greedy(m: Transformer, prompts: list[list[int]]) -> list[list[int]]:
    """All prompts at once through the engine: batched decode over the paged KV cache."""

    async def run() -> list[list[int]]:
        engine = Engine(
            m, None, EngineConfig(max_num_seqs=8, block_size=4, max_num_batched_tokens=16)
        )
        async with engine:
            outs = await asyncio.gather(
                *(collect(engine, p, GREEDY, f"r{i}") for i, p in enumerate(prompts))
            )
        return [o.tokens[0] for o in outs]

    return asyncio.run(run())


PROMPTS = [
    torch.randint(0, 300, (5 + i,), generator=torch.Generator().manual_seed(i)).tolist()
    for i in range(6)
]


@pytest.mark.parametrize(
    "overrides", [{}, {"tie_word_embeddings": True}, WIDE], ids=["llama", "tied", "wide"]
)
def test_int8_logits_are_near_fp32(overrides: dict[str, object]) -> None:
    m = model(**overrides)
    ids = torch.randint(0, 300, (4, 24), generator=torch.Generator().manual_seed(1))
    q = quantized_copy(m, "int8")
    with torch.no_grad():
        want, got = m(ids), q(ids)
        q.fuse_projections()
        fused = q(ids)
    # Q8_0 weights (0.4% rounding) and int8 activations (~0.5%) in each of the 14 matmuls
    # compound to 1.6-2.6% of the largest logit on these models (measured); 4% leaves room.
    assert float((got - want).abs().max() / want.abs().max()) < 0.04
    # The next-token choice at 96 positions: 93-100% agree (measured); ties on random weights
    # are near enough that a few may flip.
    assert float((got.argmax(-1) == want.argmax(-1)).float().mean()) >= 0.85
    # The serving layout (stacked q/k/v and gate/up matrices) computes the same numbers.
    assert torch.allclose(fused, got, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("scheme", ["int8", "int4"])
def test_engine_batches_a_quantized_model(scheme: str) -> None:
    m = model(**WIDE)
    q = quantized_copy(m, scheme)
    # Reference first: the engine fuses the model it is given.
    own = [own_greedy(q, p, GREEDY.max_tokens or 0) for p in PROMPTS]
    got = engine_greedy(q, PROMPTS)
    # Six requests decoding together over paged blocks give exactly the quantized model's own
    # no-cache greedy tokens: batching, the KV cache and the one- and many-row matmuls change
    # nothing beyond float rounding, far from these models' top-2 margins.
    assert got == own
    if scheme == "int8":
        # Against fp32 the tokens mostly agree (66-68 of 72 measured): a flipped near-tie
        # changes the rest of that continuation, so this is a loose floor.
        fp32 = engine_greedy(plain_copy(m), PROMPTS)
        same = sum(
            a == b for x, y in zip(got, fp32, strict=True) for a, b in zip(x, y, strict=True)
        )
        assert same >= 0.75 * sum(len(x) for x in fp32)


def test_quantize_releases_fp32_and_follows_the_int4_rules() -> None:
    m = model(**WIDE)
    fp32_bytes = sum(p.numel() * 4 for p in m.parameters())
    q = quantized_copy(m, "int4")
    names = [n for n, _ in q.named_parameters()]
    assert all(n.endswith("norm.weight") for n in names), names  # no fp32 projection left
    layer = q.model.layers[0]
    types = {
        "q": layer.self_attn.q_proj,
        "down": layer.mlp.down_proj,
        "head": q.lm_head,
    }
    got = {
        k: v.matrix.qtype
        for k, v in types.items()
        if isinstance(v, quantized.QuantLinear) and v.matrix
    }
    assert got == {"q": QType.Q4_K, "down": QType.Q4_0, "head": QType.Q6_K}
    assert isinstance(q.model.embed_tokens, quantized.QuantEmbedding)
    assert q.model.embed_tokens.matrix.qtype == QType.Q6_K and q.model.embed_tokens.matrix.lookup
    quant, dense = quantized.resident_bytes(q)
    assert dense < 0.01 * fp32_bytes and quant < 0.25 * fp32_bytes
    q.fuse_projections()
    # Stacked q/k/v: one matrix, the modules pointing into it, nothing held twice.
    qkv = q.model.layers[0].self_attn.qkv_weight
    assert qkv is not None and len(qkv.quant) == 1 and qkv.quant[0].out_features == 256 + 2 * 128
    assert quantized.resident_bytes(q) == (quant, dense)
    assert "MiB resident" in quantized.describe(q, "int4", fp32_bytes)


def test_tied_head_runs_on_the_embedding_matrix() -> None:
    q = quantized_copy(model(tie_word_embeddings=True), "int8")
    assert isinstance(q.lm_head, quantized.QuantLinear)
    assert q.lm_head.matrix is q.model.embed_tokens.matrix  # type: ignore[union-attr]


def test_mixed_types_run_side_by_side() -> None:
    m = model(**WIDE)
    ref = plain_copy(m)
    attn = m.model.layers[0].self_attn
    parts = {}
    for name, proj, t in [
        ("q", attn.q_proj, QType.Q8_0),
        ("k", attn.k_proj, QType.Q4_0),
        ("v", attn.v_proj, QType.Q6_K),
    ]:
        w = proj.weight.detach()
        raw = ggml.quantize_blocks(w, t)
        parts[f"model.layers.0.self_attn.{name}_proj.weight"] = QuantMatrix.from_blocks(
            raw, t, *w.shape
        )
    quantized.attach(m, parts)
    ids = torch.randint(0, 300, (2, 7))
    with torch.no_grad():
        unfused = m(ids)
        m.fuse_projections()
        fused = m(ids)
        want = ref(ids)
    qkv = m.model.layers[0].self_attn.qkv_weight
    assert qkv is not None and [p.qtype for p in qkv.quant] == [QType.Q8_0, QType.Q4_0, QType.Q6_K]
    assert torch.allclose(fused, unfused, rtol=1e-5, atol=1e-5)
    # Still the fp32 model's logits to within the 4-bit k projection's rounding (7.5% measured).
    assert float((fused - want).abs().max() / want.abs().max()) < 0.15


def test_refusals_name_the_problem(tmp_path: Path) -> None:
    m = model()
    with pytest.raises(CheckpointError, match="unknown quantization 'int3'"):
        quantized.quantize_model(m, "int3")
    with pytest.raises(CheckpointError, match="CPU only"):
        quantized.check_can_quantize("int8", "cuda")
    q = quantized_copy(m, "int8")
    with pytest.raises(CheckpointError, match="fireside quantize"):
        save_model(q, tmp_path / "out")
    fused = plain_copy(m)
    fused.fuse_projections()
    with pytest.raises(CheckpointError, match="before fuse_projections"):
        quantized.quantize_model(fused, "int8")
    w = ggml.quantize_blocks(torch.randn(8, 64), QType.Q8_0)
    with pytest.raises(CheckpointError, match="no weight named"):
        quantized.attach(
            plain_copy(m),
            {"model.layers.9.mlp.up_proj.weight": QuantMatrix.from_blocks(w, QType.Q8_0, 8, 64)},
        )
    with pytest.raises(CheckpointError, match="the matrix is"):
        quantized.attach(
            plain_copy(m), {"lm_head.weight": QuantMatrix.from_blocks(w, QType.Q8_0, 8, 64)}
        )


def test_quantize_flag_without_kernels_is_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setenv(ggml.LIB_ENV, str(tmp_path / "missing.so"))
    ggml.reset()
    try:
        capsys.readouterr()
        assert main(["chat", "hi", "--quantize", "int8", "--device", "cpu"]) == 2
        err = capsys.readouterr().err
        assert "--quantize int8 needs the ggml kernels" in err and "make install" in err
        from fireside.server import build_app

        with pytest.raises(KernelsUnavailableError, match=r"missing\.so"):
            build_app(Settings(quantize="int8", device="cpu", app=False))
    finally:
        monkeypatch.delenv(ggml.LIB_ENV)
        ggml.reset()


def test_chat_answers_quantized(tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    flags = ["--quantize", "int8", "--device", "cpu", "--temperature", "0", "--max-tokens", "4"]
    code = main(["chat", "hello", "--model", str(tiny_model_dir), *flags])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert out.strip()


def test_lora_adapters_run_over_quantized_weights(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from tests.lora_utils import write_adapter

    m = model(**WIDE)
    adapter = write_adapter(tmp_path / "a", m, std=0.1)
    ref = quantized_copy(m, "int8")
    # Reference: the quantized model with each adapted projection's low-rank update added by
    # a hook, straight from the adapter's files (no code shared with fireside.model.adapters).
    tensors = load_file(str(adapter / "adapter_model.safetensors"))
    config = json.loads((adapter / "adapter_config.json").read_text())
    scale = config["lora_alpha"] / config["r"]
    for key, a in tensors.items():
        if ".lora_A." in key:
            b = tensors[key.replace(".lora_A.", ".lora_B.")]
            module = ref.get_submodule(
                key.removeprefix("base_model.model.").removesuffix(".lora_A.weight")
            )

            def hook(
                _: nn.Module, args: tuple[Tensor], y: Tensor, a: Tensor = a, b: Tensor = b
            ) -> Tensor:
                return y + scale * (args[0] @ a.T @ b.T)

            module.register_forward_hook(hook)
    want = [own_greedy(ref, p, GREEDY.max_tokens or 0) for p in PROMPTS[:3]]

    q = quantized_copy(m, "int8")
    assert want != [
        own_greedy(q, p, GREEDY.max_tokens or 0) for p in PROMPTS[:3]
    ]  # it changes them
    engine = Engine(q, None, EngineConfig(max_num_seqs=4, block_size=4))
    engine.adapters.load("a", adapter)
    lora = SamplingParams(temperature=0, max_tokens=GREEDY.max_tokens, lora="a")

    async def run() -> list[list[int]]:
        async with engine:
            outs = await asyncio.gather(
                *(collect(engine, p, lora, f"a{i}") for i, p in enumerate(PROMPTS[:3]))
            )
        return [o.tokens[0] for o in outs]

    assert asyncio.run(run()) == want


@pytest.mark.parametrize("scheme", ["int8", "int4"])
def test_one_row_decoder_runs_quantized_weights(scheme: str) -> None:
    """Single-stream decode of a quantized model takes the numpy one-row path (ggml's kernel per
    matrix) and gives the quantized model's own logits: the same kernels, one row at a time."""
    q = quantized_copy(model(), scheme)
    q.fuse_projections()
    assert OneRowDecoder.applies(q)
    pool = KVBlockPool(q.config, 8, 4, q.device, q.dtype)
    decoder = OneRowDecoder(q, pool)
    tokens = [3, 14, 15, 92, 65, 35, 89, 79, 32, 38, 46]
    with torch.inference_mode():
        got = torch.cat([decoder.decode(t, i, [1, 2, 3]) for i, t in enumerate(tokens)])
        want = torch.cat([q(torch.tensor([tokens[: i + 1]]))[0, -1:] for i in range(len(tokens))])
    # Activations are quantized per row, so one row gives the numbers the batched call gave
    # that row, up to the kernels' summation order (gemv vs gemm tiles).
    torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-3 * float(want.abs().max()))
