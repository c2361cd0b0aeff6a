"""The CUDA path: CPU/CUDA parity of the model, the engine's paged attention and sampling on
the GPU, and a training step there. `pytest -m cuda` selects these; each is skipped where no
CUDA GPU is at hand (the default suite reports them as skips).

FIRESIDE_CUDA_TEST_DEVICE=cpu runs the same tests on the CPU: a check of the tests' own logic
on a machine without a GPU, not of the CUDA path.
"""

from __future__ import annotations

import asyncio
import os

import pytest
import torch

from fireside.engine import Engine, EngineConfig, SamplingParams
from fireside.model import Transformer
from fireside.train.loop import autocast, clip_and_step, lm_loss
from fireside.train.optim import build_optimizers
from tests.engine_utils import collect, greedy_reference, plain_copy, tiny_model

DEVICE = torch.device(os.environ.get("FIRESIDE_CUDA_TEST_DEVICE", "cuda"))
VOCAB = 300

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(
        DEVICE.type == "cuda" and not torch.cuda.is_available(),
        reason="needs a CUDA GPU: torch.cuda.is_available() is False on this machine",
    ),
]


def on_device(model: Transformer, dtype: torch.dtype = torch.float32) -> Transformer:
    """A copy of `model` on the device under test, in `dtype`."""
    return plain_copy(model).to(device=DEVICE, dtype=dtype)


@pytest.mark.parametrize(
    ("dtype", "tolerance"),
    # fp32: the same arithmetic up to the order of its sums (TF32 is off for fp32 matmuls by
    # default). bf16 keeps 8 bits of mantissa: errors of ~1% of the logits' spread.
    [(torch.float32, 1e-3), (torch.bfloat16, 0.05)],
    ids=["fp32", "bf16"],
)
def test_logits_match_the_cpu(dtype: torch.dtype, tolerance: float) -> None:
    model = tiny_model(VOCAB, qk_norm=True, architecture="Qwen3ForCausalLM")
    ids = torch.randint(0, VOCAB, (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = model(ids)
        got = on_device(model, dtype)(ids.to(DEVICE)).float().cpu()
    spread = want.abs().max().item()
    assert (got - want).abs().max().item() <= tolerance * spread
    # What decoding sees: the greedy choice at nearly every position.
    agree = (got.argmax(-1) == want.argmax(-1)).float().mean().item()
    assert agree >= (1.0 if dtype == torch.float32 else 0.9)


def test_engine_paged_attention_matches_cpu_greedy() -> None:
    """Concurrent requests of different lengths over small blocks (so every sequence spans
    several), a repeated prompt (shared prefix blocks) and n = 2 (forked blocks): the engine
    on the device decodes the CPU reference's greedy tokens."""
    model = tiny_model(VOCAB)
    prompts = [list(range(10, 10 + n)) for n in (3, 9, 17)] + [list(range(10, 27))]
    params = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True)
    expected = [greedy_reference(model, p, params.max_tokens) for p in prompts]
    engine = Engine(on_device(model), None, EngineConfig(block_size=4, max_num_batched_tokens=16))
    assert engine.pool.keys[0].device.type == DEVICE.type

    async def run() -> list[list[int]]:
        async with engine:
            outs = await asyncio.gather(
                *(collect(engine, p, params, f"r{i}") for i, p in enumerate(prompts)),
                collect(engine, prompts[1], SamplingParams(**{**vars(params), "n": 2}), "fork"),
            )
        forked = outs[-1].tokens
        assert forked[0] == forked[1] == expected[1]  # greedy: both samples alike
        return [o.tokens[0] for o in outs[:-1]]

    assert asyncio.run(run()) == expected
    assert engine.pool.num_used == 0  # every block handed back


def test_seeded_sampling_repeats_on_the_device() -> None:
    engine = Engine(on_device(tiny_model(VOCAB)), None, EngineConfig(seed=0))

    def sample(seed: int, request_id: str, **kw: float) -> list[int]:
        params = SamplingParams(temperature=1.0, seed=seed, max_tokens=16, **kw)  # type: ignore[arg-type]

        async def run() -> list[int]:
            async with engine:
                return (await collect(engine, [5, 6, 7], params, request_id)).tokens[0]

        return asyncio.run(run())

    first = sample(1, "a")
    assert sample(1, "b") == first  # the same seed, the same tokens
    assert sample(2, "c") != first  # another seed, another draw
    narrowed = sample(3, "d", top_k=1)  # top-k 1 leaves only the greedy token
    greedy = greedy_reference(tiny_model(VOCAB), [5, 6, 7], 16)
    assert narrowed[: len(greedy)] == greedy[: len(narrowed)]


def test_a_training_step_lowers_the_loss() -> None:
    """The pretraining loop's pieces on the device: bf16 autocast (on CUDA), the fp32 loss,
    Muon and AdamW, clipping. A fixed batch is learnt within a few steps."""
    torch.manual_seed(0)
    model = tiny_model(VOCAB).to(DEVICE).train()
    optimizers = build_optimizers(model, lr=3e-3, weight_decay=0.0)
    ids = torch.randint(0, VOCAB, (4, 33), generator=torch.Generator().manual_seed(1)).to(DEVICE)
    losses = []
    for _ in range(12):
        with autocast(DEVICE):
            logits = model(ids[:, :-1])
        loss = lm_loss(logits, ids[:, 1:])
        loss.backward()
        norm = clip_and_step(model, optimizers, max_norm=1.0)
        assert norm > 0 and torch.isfinite(loss)
        losses.append(loss.item())
    assert all(p.device.type == DEVICE.type for p in model.parameters())
    assert losses[-1] < 0.7 * losses[0], losses
