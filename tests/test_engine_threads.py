"""The BLAS thread tuner: it keeps the count whose steps run fastest, and notices a change."""

from __future__ import annotations

import asyncio

import pytest
import torch
from threadpoolctl import ThreadpoolController

from fireside.engine import Engine, EngineConfig, SamplingParams
from fireside.engine.threads import ThreadTuner, blas_tuner
from fireside.model import ModelConfig, Transformer


class FakeMachine:
    """Step times by thread count, and a clock the tuner reads: each step takes the time
    its count costs now."""

    def __init__(self, cost: dict[int, float]) -> None:
        self.cost = cost
        self.now = 0.0
        self.threads: int | None = None
        self.applied: list[int] = []

    def set_threads(self, count: int) -> None:
        self.threads = count
        self.applied.append(count)

    def clock(self) -> float:
        return self.now

    def run(self, tuner: ThreadTuner, steps: int) -> list[int]:
        """The count each step ran under."""
        used = []
        for _ in range(steps):
            with tuner.step():
                assert self.threads is not None
                used.append(self.threads)
                self.now += self.cost[self.threads]
        return used


def make(cost: dict[int, float], **kw: int) -> tuple[FakeMachine, ThreadTuner]:
    machine = FakeMachine(cost)
    kw.setdefault("hold_steps", 40)
    tuner = ThreadTuner(sorted(cost), machine.set_threads, clock=machine.clock, **kw)
    return machine, tuner


def test_keeps_the_fastest_count() -> None:
    machine, tuner = make({1: 0.010, 2: 0.006})
    machine.run(tuner, 20)
    assert tuner.settled and tuner.best == 2
    assert machine.run(tuner, 30) == [2] * 30  # held, no trials in between


def test_a_neighbour_moves_it_to_one_thread_within_a_few_steps() -> None:
    machine, tuner = make({1: 0.010, 2: 0.006})
    machine.run(tuner, 20)
    assert tuner.best == 2
    machine.cost = {1: 0.012, 2: 0.080}  # a busy process arrives on one core
    used = machine.run(tuner, 40)
    assert tuner.best == 1 and tuner.current == 1
    # The slowdown is seen within one window and the bad count is dropped after one slow
    # step of its trial: few steps run on 2 threads.
    assert used.count(2) <= 10
    machine.cost = {1: 0.010, 2: 0.006}  # it leaves again: the next scheduled trial sees it
    machine.run(tuner, 200)
    assert tuner.best == 2


def test_a_bad_count_costs_few_steps_when_tried_again() -> None:
    machine, tuner = make({1: 0.010, 2: 0.050}, hold_steps=16, max_hold_steps=1000)
    used = machine.run(tuner, 2000)
    assert tuner.best == 1
    # Holds double while the same count keeps winning: the slow count is retried rarely and
    # each time for two steps (one not counted after the switch, one too slow).
    assert used.count(2) < 40, used.count(2)


def test_one_candidate_never_switches() -> None:
    machine, tuner = make({1: 0.01})
    machine.run(tuner, 50)
    assert machine.applied == [1]


def test_rejects_counts_below_one() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        ThreadTuner([0, 2], lambda _: None)


def test_engine_single_stream_runs_under_the_tuner() -> None:
    """An engine on CPU fp32 tunes the BLAS's threads over its one-row steps (where the BLAS
    runs more than one thread), and its greedy output does not depend on the count."""
    controller = ThreadpoolController().select(user_api="blas")
    if max((lib.num_threads for lib in controller.lib_controllers), default=1) < 2:
        pytest.skip("the BLAS runs one thread here: nothing to tune")
    cfg = ModelConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=8,
    )  # fmt: skip
    torch.manual_seed(0)
    model = Transformer(cfg)
    model.init_weights()
    engine = Engine(model, None, EngineConfig(max_num_seqs=1))
    tuner = engine.scheduler.blas_threads
    assert tuner is not None and tuner.candidates[-1] == 1

    async def greedy() -> list[int]:
        out: list[int] = []
        params = SamplingParams(temperature=0, max_tokens=40, ignore_eos=True)
        async with engine:
            async for o in engine.generate([1, 2, 3], params, "r"):
                out += o.samples[0].token_ids
        return out

    with controller.limit(limits=1):  # the tuner restores nothing; this block does
        first = asyncio.run(greedy())
        assert tuner.trials >= 1  # 40 steps: a whole trial of every candidate
        tuner._start_trial()  # a second run starting from the other counts
        assert asyncio.run(greedy()) == first
    assert blas_tuner() is not None
