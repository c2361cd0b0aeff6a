"""`fireside eval --programs`: 100 held-out function-writing requests through the tool loop.

Each request (`program_tasks.held_out_tasks`: keys fine-tuning never saw) is asked as a user
turn, greedy, with the built-in tools on, as `--chat-tools` asks its questions. The final
answer's last ```python block runs in the sandbox with the task's hidden tests; the request
passes when every test does. Every answer is kept for the report card.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from fireside.data.program_tasks import ProgramTask, held_out_tasks
from fireside.eval.tool_eval import ask_with_tools
from fireside.model.pretrained import Pretrained
from fireside.sandbox import Limits, run_python
from fireside.sandbox.bwrap import require as require_sandbox

TEST_LIMITS = Limits(timeout_s=10.0, cpu_s=5, memory_bytes=512 << 20)
_PYTHON_BLOCK = re.compile(r"```(?:python|py)[^\n]*\n(.*?)(?:```|$)", re.DOTALL)


@dataclass
class ProgramAnswer:
    family: str
    request: str
    answer: str
    tools_called: list[str]
    status: str  # passed / failed / timeout / memory / no code / prompt too long

    @property
    def passed(self) -> bool:
        return self.status == "passed"


@dataclass
class ProgramEvalResult:
    answers: list[ProgramAnswer]

    def score(self) -> tuple[int, int]:
        return sum(a.passed for a in self.answers), len(self.answers)


def last_python_block(answer: str) -> str | None:
    """The code of the answer's last ```python block (an unclosed last block counts)."""
    blocks = _PYTHON_BLOCK.findall(answer)
    return blocks[-1] if blocks else None


def check_answer(task: ProgramTask, answer: str, limits: Limits = TEST_LIMITS) -> str:
    """`passed` when the answer's code passes the task's hidden tests in the sandbox; else why
    not (`no code`, or the sandbox's status)."""
    code = last_python_block(answer)
    if code is None or not code.strip():
        return "no code"
    return run_python(task.test_program(code), limits).status


def run_programs_eval(
    bundle: Pretrained,
    knowledge_db: Path,
    task_list: Sequence[ProgramTask] | None = None,
    *,
    max_tokens: int = 320,
    workers: int = 2,
) -> ProgramEvalResult:
    """Every request through `run_with_tools` (greedy, all at once: the engine batches them),
    then every answer's code against its hidden tests."""
    require_sandbox()  # the python tool and the tests both need it: say so before generating
    chosen = list(task_list) if task_list is not None else held_out_tasks()
    replies = ask_with_tools(
        bundle,
        knowledge_db,
        [t.request for t in chosen],
        max_tokens=max_tokens,
        request_prefix="programs-eval",
    )

    def score(pair: tuple[ProgramTask, tuple[str, list[str]] | None]) -> ProgramAnswer:
        task, reply = pair
        if reply is None:
            return ProgramAnswer(task.family, task.request, "", [], "prompt too long")
        answer, called = reply
        return ProgramAnswer(task.family, task.request, answer, called, check_answer(task, answer))

    # The tests wait on sandbox subprocesses, so threads overlap them.
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return ProgramEvalResult(list(pool.map(score, zip(chosen, replies, strict=True))))
