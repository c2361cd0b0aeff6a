"""How many threads a one-row decode step runs on, chosen by timing the steps.

A one-row step (single-stream decode, CPU fp32) runs its matmuls on OpenBLAS's own threads
(`fireside.model.serving`), or the whole step on ggml's threadpool (fireside/kernels/step.py);
the count picked here applies to both (the scheduler hands it to `one_row_threads`). Each matmul is split across them and waits for the slowest part.
OpenBLAS's idle threads busy-poll instead of sleeping, so the kernel's scheduler gives them no
wake-up preference: beside one busy process on a 2-core machine, a matmul waits for the worker
that shares its core with the neighbour, for a time slice, some 30 times a token. Measured on
the bundled model with a compile running beside it: 3-11 tokens/s on 2 BLAS threads, 21-53 on
one. On a quiet machine more threads stream the weights faster. Neither count is right
everywhere, and a server's neighbours come and go, so the engine measures: it runs each
candidate count for a few steps, keeps the fastest, and tries them again after a while, or at
once when the steps it holds to slow down.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from threadpoolctl import ThreadpoolController

# A trial runs a candidate this many steps (the first after a switch is not counted: the
# threads may have been asleep); holding, the window that notices a slowdown.
TRIAL_STEPS = 5
# Steps to hold the winner before trying the others again; doubled each time the same count
# wins again, up to the maximum, so a settled machine pays for trials rarely.
HOLD_STEPS = 256
MAX_HOLD_STEPS = 8192
# A trial stops early once a step takes this much longer than the best median so far (a bad
# count costs two slow steps, not a whole trial); holding, a window this much slower than the
# winner's trial starts a new trial.
ABANDON = 2.0
SLOWDOWN = 1.5


class ThreadTuner:
    """Picks one of `candidates` thread counts by the times of the steps run under each.

    `set_threads` applies a count. Wrap each step in `step()`.
    """

    def __init__(
        self,
        candidates: Sequence[int],
        set_threads: Callable[[int], None],
        *,
        trial_steps: int = TRIAL_STEPS,
        hold_steps: int = HOLD_STEPS,
        max_hold_steps: int = MAX_HOLD_STEPS,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.candidates = sorted(set(candidates), reverse=True)
        if not self.candidates or min(self.candidates) < 1:
            raise ValueError(f"thread counts must be at least 1 (got {list(candidates)})")
        self._set_threads = set_threads
        self._trial_steps = trial_steps
        self._base_hold = hold_steps
        self._max_hold = max_hold_steps
        self._clock = clock
        self.current: int | None = None  # the count applied, None before the first step
        self.best: int | None = None  # the last trial's winner
        self._best_time = 0.0
        self._hold = hold_steps
        self._left = 0  # holding: steps until the next trial
        self._queue: list[int] = []  # trial: the counts still to try, `current` first
        self._times: list[float] = []  # of the count being tried, or the holding window
        self._results: dict[int, float] = {}
        self._warm = False  # the current count has run a step since it was applied
        self.trials = 0  # completed trials
        if len(self.candidates) == 1:
            self._apply(self.candidates[0])
        else:
            self._start_trial()

    @property
    def settled(self) -> bool:
        """Whether the tuner is holding a winner (not in a trial)."""
        return not self._queue

    @contextmanager
    def step(self) -> Iterator[None]:
        """Run one step under the count the tuner picks, and time it."""
        start = self._clock()
        yield
        if len(self.candidates) > 1:
            self._record(self._clock() - start)

    def _apply(self, count: int) -> None:
        if count != self.current:
            self._set_threads(count)
            self.current = count
            self._warm = False

    def _start_trial(self) -> None:
        # The last winner first: its fresh time is what the others must beat, so a bad count
        # is dropped after one slow step.
        first = [self.best] if self.best is not None else []
        self._queue = first + [c for c in self.candidates if c != self.best]
        self._results = {}
        self._times = []
        self._apply(self._queue[0])

    def _record(self, seconds: float) -> None:
        if not self._warm:
            self._warm = True
            return
        self._times.append(seconds)
        if self._queue:
            self._trial_step(seconds)
        else:
            self._hold_step()

    def _trial_step(self, seconds: float) -> None:
        best_so_far = min(self._results.values(), default=None)
        too_slow = best_so_far is not None and seconds > ABANDON * best_so_far
        if len(self._times) < self._trial_steps and not too_slow:
            return
        self._results[self._queue.pop(0)] = statistics.median(self._times)
        self._times = []
        if self._queue:
            self._apply(self._queue[0])
            return
        winner = min(self._results, key=lambda c: self._results[c])
        # The same winner again: the machine is steady, so check less often.
        self._hold = min(2 * self._hold, self._max_hold) if winner == self.best else self._base_hold
        self.best, self._best_time = winner, self._results[winner]
        self._left = self._hold
        self.trials += 1
        self._apply(winner)

    def _hold_step(self) -> None:
        self._left -= 1
        window = self._times[-self._trial_steps :]
        self._times = window
        slowed = (
            len(window) == self._trial_steps
            and statistics.median(window) > SLOWDOWN * self._best_time
        )
        if slowed:
            self._hold = self._base_hold
        if slowed or self._left <= 0:
            self._start_trial()


def blas_tuner() -> ThreadTuner | None:
    """A tuner over the BLAS numpy runs on (OpenBLAS), trying its thread count as loaded (the
    machine's cores, or what OPENBLAS_NUM_THREADS says), half that, and one; None where the
    BLAS already runs one thread, which then stays as it is."""
    controller = ThreadpoolController().select(user_api="blas")
    if not controller.lib_controllers:
        return None
    most = max(lib.num_threads for lib in controller.lib_controllers)
    if most <= 1:
        return None
    libs = controller.lib_controllers

    def set_threads(count: int) -> None:
        for lib in libs:
            lib.set_num_threads(count)

    return ThreadTuner(sorted({most, max(1, most // 2), 1}), set_threads)
