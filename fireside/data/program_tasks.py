"""Small function-writing tasks drawn from `program_families`: the request a user writes, the
reference solution, example calls the assistant runs, and hidden tests whose expected values
come from running the reference.

Fine-tuning and the `--programs` evaluation draw from the same families. A task's key is its
family and parameters (function name, argument names, constants); one key in eight is held out,
in every phrasing, and the evaluation's 100 requests come only from held-out keys.

    task = random_task(random.Random(0))
    task.request   # "Write a Python function `count_vowels(word)` that returns how many ..."
    task.test_program(code)  # code + asserts: it passes when the code is right
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import random
import textwrap
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from fireside.data.program_families import FAMILIES, Args, Consts, Family, render
from fireside.errors import FiresideError

ASKS = (
    "Write a Python function `{sig}` that {what}.",
    "Write `{sig}` in Python: it {what}.",
    "I need a Python function `{sig}` that {what}.",
    "Define a function `{sig}` that {what}.",
    "Can you write a Python function `{sig}` that {what}?",
    "Please write `{sig}`, a Python function that {what}.",
)
EXAMPLES = 3  # calls the assistant prints, so the answer shows it ran
HIDDEN = 5  # random hidden tests, besides the family's edge cases
HELD_OUT_ONE_IN = 8
EVAL_SEED = 3_000_017


class TaskError(FiresideError):
    """A family made a task that does not check out (a defect in the family, not in input)."""


@dataclass(frozen=True)
class Params:
    family: Family
    function: str
    args: tuple[str, ...]
    consts: tuple[tuple[str, int | str], ...]

    @property
    def key(self) -> str:
        consts = ",".join(f"{k}={v}" for k, v in self.consts)
        return f"{self.family.name}:{self.function}({','.join(self.args)})[{consts}]"

    def render(self, template: str) -> str:
        names = {"a": self.args[0], "b": self.args[-1]}
        return render(template, names, dict(self.consts))

    def define(self, body: str) -> str:
        code = textwrap.indent(self.render(body), "    ")
        return f"def {self.function}({', '.join(self.args)}):\n{code}"


@dataclass(frozen=True)
class ProgramTask:
    family: str
    key: str
    request: str
    function: str
    solution: str  # the reference: a short, plain function
    examples: tuple[str, ...]  # calls such as "count_vowels('Apple')"
    example_outputs: tuple[str, ...]  # what print() shows for each, run on the reference
    tests: tuple[tuple[str, str], ...]  # (call, repr of the expected value), other inputs
    bugs: tuple[str, ...]  # whole first attempts that are wrong
    what: str = ""  # what the function does, as the request says it ("counts the vowels ...")

    def example_program(self, code: str) -> str:
        """The code and a print of each example: what the assistant runs."""
        prints = "\n".join(f"print({call})" for call in self.examples)
        return f"{code}\n\n{prints}"

    def test_program(self, code: str) -> str:
        """The code and the hidden tests: it exits 0 exactly when every test passes."""
        asserts = "\n".join(f"assert {call} == {want}, {call!r}" for call, want in self.tests)
        return f"{code}\n\n{asserts}\n"


def held_out_key(key: str) -> bool:
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") % HELD_OUT_ONE_IN == 0


def all_params(family: Family) -> Iterator[Params]:
    names = list(family.consts)
    for function, args in itertools.product(family.functions, family.args):
        for values in itertools.product(*(family.consts[n] for n in names)):
            yield Params(family, function, args, tuple(zip(names, values, strict=True)))


def random_params(rng: random.Random, family: Family) -> Params:
    consts = tuple((n, rng.choice(vs)) for n, vs in family.consts.items())
    return Params(family, rng.choice(family.functions), rng.choice(family.args), consts)


def call_text(function: str, args: Args) -> str:
    return f"{function}({', '.join(repr(a) for a in args)})"


def outcomes(source: str, calls: Sequence[str]) -> list[str]:
    """What print() shows for each call of our own (trusted) code, run here: a value's str, or
    the exception's name. Model-written code never comes here: it runs in the sandbox."""
    scope: dict[str, object] = {}
    exec(source, scope)
    out = []
    for call in calls:
        try:
            out.append(str(eval(call, scope)))
        except Exception as e:  # a bug's error is an outcome like any value
            out.append(type(e).__name__)
    return out


def _values(source: str, function: str, inputs: Sequence[Args]) -> list[object]:
    scope: dict[str, object] = {}
    exec(source, scope)
    fn = scope[function]
    assert callable(fn)
    return [fn(*copy.deepcopy(args)) for args in inputs]


def _distinct(
    rng: random.Random, family: Family, consts: Consts, n: int, seen: set[str]
) -> list[Args]:
    out: list[Args] = []
    for _ in range(20 * n):
        args = family.draw(rng, consts)
        if (text := repr(args)) not in seen:
            seen.add(text)
            out.append(args)
            if len(out) == n:
                break
    return out


def request_text(params: Params, ask: int) -> str:
    sig = f"{params.function}({', '.join(params.args)})"
    return ASKS[ask % len(ASKS)].format(sig=sig, what=params.render(params.family.what))


def make_task(params: Params, rng: random.Random, ask: int = 0) -> ProgramTask:
    """A task for these parameters, its examples and hidden inputs drawn with `rng`."""
    family, consts = params.family, dict(params.consts)
    edges = list({repr(e): e for e in family.edges(consts)}.values())
    seen = {repr(e) for e in edges}
    examples = _distinct(rng, family, consts, EXAMPLES, set(seen))
    seen |= {repr(e) for e in examples}
    hidden = edges + _distinct(rng, family, consts, HIDDEN, seen)
    solution = params.define(family.body)
    example_calls = tuple(call_text(params.function, a) for a in examples)
    expected = _values(solution, params.function, hidden)
    for value in expected:
        if eval(repr(value)) != value:
            raise TaskError(f"{params.key}: {value!r} does not read back from its repr")
    shown = outcomes(solution, example_calls)
    if any("\n" in s for s in shown):
        raise TaskError(f"{params.key}: an example prints more than one line")
    return ProgramTask(
        family=family.name,
        key=params.key,
        request=request_text(params, ask),
        function=params.function,
        solution=solution,
        examples=example_calls,
        example_outputs=tuple(shown),
        tests=tuple(
            (call_text(params.function, a), repr(v)) for a, v in zip(hidden, expected, strict=True)
        ),
        bugs=tuple(params.define(b) for b in family.bugs),
        what=params.render(family.what),
    )


def random_task(rng: random.Random) -> ProgramTask:
    """A task for fine-tuning: any family, never a held-out key."""
    while True:
        params = random_params(rng, rng.choice(FAMILIES))
        if not held_out_key(params.key):
            return make_task(params, rng, rng.randrange(len(ASKS)))


def held_out_tasks(n: int = 100) -> list[ProgramTask]:
    """The evaluation's requests: held-out keys, families taken in turn, fixed by a seed."""
    rng = random.Random(EVAL_SEED)
    queues = []
    for family in FAMILIES:
        keys = [p for p in all_params(family) if held_out_key(p.key)]
        rng.shuffle(keys)
        queues.append(keys)
    chosen: list[Params] = []
    while len(chosen) < n and any(queues):
        for queue in queues:
            if queue and len(chosen) < n:
                chosen.append(queue.pop())
    if len(chosen) < n:
        raise TaskError(f"only {len(chosen)} held-out keys exist; {n} were asked for")
    return [make_task(p, random.Random(p.key), i) for i, p in enumerate(chosen)]


def shown_bugs(task: ProgramTask) -> list[str]:
    """The task's bugs whose example run prints something other than the reference's."""
    return [b for b in task.bugs if outcomes(b, task.examples) != list(task.example_outputs)]
