"""Fine-tuning conversations that write a small function, run it with the `python` tool, and
answer with the code: the `functions` kind of `synth_tools.synthesize`.

    user: Write a Python function `count_vowels(word)` that ...
    assistant -> python: the function and a print of three example calls
    tool: what the sandbox printed (the real run)
    assistant: the code in a ```python block, and one line saying what the run printed

The `docstrings` kind asks the other way code is asked for, with no tools offered (the way
HumanEval asks): a signature and a docstring with two doctests, to be completed; the answer is
the reference function in a code block.

In about a quarter, the first attempt has a realistic bug (off by one, a wrong comparison, a
missing return) whose run prints a wrong value or an error; the assistant says which call went
wrong, runs the fixed version and answers with it. Three generations: inside the tool loop's
default of five steps.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fireside.data.program_tasks import ProgramTask, random_task, shown_bugs
from fireside.data.synth import Conversation, assistant, user
from fireside.data.synth_tools import RunTool, python_stdout

BUG_SHARE = 0.25
COMPLETE_ASKS = [
    "Complete the following Python function. Reply with the whole function in a ```python "
    "code block.\n\n```python\n{stub}```",
    "Complete this function:\n\n```python\n{stub}```",
    "Finish the Python function below and give me all of it.\n\n```python\n{stub}```",
    "```python\n{stub}```\nWrite the body of this function.",
]
_ERROR_LINE = re.compile(r"^(\w+(?:Error|Exception))\b", re.MULTILINE)


def _python_call(code: str, content: str = "") -> dict[str, Any]:
    call = {"type": "function", "function": {"name": "python", "arguments": {"code": code}}}
    return {"role": "assistant", "content": content, "tool_calls": [call]}


def _tool(content: str) -> dict[str, str]:
    return {"role": "tool", "content": content}


def what_went_wrong(task: ProgramTask, result: str) -> str | None:
    """What the assistant says on reading a buggy run's result, or None when the run printed
    exactly what the reference prints (the bug did not show)."""
    printed = python_stdout(result)
    if printed is None:
        errors = _ERROR_LINE.findall(result)
        return (
            f"That raised {errors[-1]}. Let me fix it." if errors else "That failed. Let me fix it."
        )
    for call, got, want in zip(
        task.examples, printed.splitlines(), task.example_outputs, strict=False
    ):
        if got != want:
            return f"{call} printed {got}, but it should be {want}. Let me fix it."
    return None


def said_printed(outputs: tuple[str, ...]) -> str:
    sep = "; " if any("," in o for o in outputs) else ", "
    return f"Running it printed {sep.join(outputs)}."


def conversation(task: ProgramTask, run: RunTool, bug: str | None) -> Conversation | None:
    """The conversation for `task` (first trying `bug`, when given), every tool result a real
    run; None when a run disagrees with what the task says it prints."""
    messages: list[dict[str, Any]] = [user(task.request)]
    note = ""
    if bug is not None:
        code = task.example_program(bug)
        result = run("python", {"code": code})
        said = what_went_wrong(task, result)
        if said is None:
            return None
        messages += [_python_call(code), _tool(result)]
        note = said
    code = task.example_program(task.solution)
    result = run("python", {"code": code})
    if python_stdout(result) != "\n".join(task.example_outputs):
        return None
    answer = f"```python\n{task.solution}\n```\n{said_printed(task.example_outputs)}"
    messages += [_python_call(code, note), _tool(result), assistant(answer)]
    return {"messages": messages}


def _plan(rng: random.Random) -> tuple[ProgramTask, str | None]:
    """A task, and the bug its first attempt has (None for most): one whose run shows it."""
    if rng.random() >= BUG_SHARE:
        return random_task(rng), None
    while True:
        task = random_task(rng)
        if bugs := shown_bugs(task):
            return task, rng.choice(bugs)


def function_conversations(
    rng: random.Random, run: RunTool, n: int, workers: int = 4
) -> Iterator[Conversation]:
    """About `n` conversations (a run that disagrees drops one). The plan is drawn first, so
    the output depends on the seed alone; the sandbox runs overlap in threads."""
    plans = [_plan(rng) for _ in range(n)]
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for made in pool.map(lambda p: conversation(p[0], run, p[1]), plans):
            if made is not None:
                yield made


def stub(task: ProgramTask) -> str:
    """The task as a signature and a docstring with two of its hidden calls as doctests."""
    doctests = "".join(f"    >>> {call}\n    {want}\n" for call, want in task.tests[:2])
    what = task.what[:1].upper() + task.what[1:]
    signature = task.solution.splitlines()[0]
    return f'{signature}\n    """{what}.\n{doctests}    """\n'


def docstring_conversations(rng: random.Random, n: int) -> Iterator[Conversation]:
    """`n` requests to complete a stub, answered with the reference; no tools offered."""
    for _ in range(n):
        task = random_task(rng)
        ask = rng.choice(COMPLETE_ASKS).format(stub=stub(task))
        answer = f"```python\n{task.solution}\n```"
        yield {"messages": [user(ask), assistant(answer)], "tools": []}
