"""`fireside eval --conversation`: 60 held-out prompts on being useful or honest.

Four groups of (up to) 15, none of whose prompts fine-tuning saw:
- small talk: a greeting, thanks, goodbye, "how are you", "what can you do" answered in kind;
- world knowledge the index cannot answer: "I don't know" with no invented fact;
- how-do-I / what-is questions the index can answer: the name found and words of its snippet;
- near-miss names: the answer says it found nothing on the asked name and names the closest.
Each prompt carries its rule, as a predicate and as text for the report. Pass: 85% of group 1
and 85% of groups 2-4 together.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from fireside.data import chat_phrases as phrases
from fireside.data.synth_chat import (
    declined,
    found_tasks,
    held_out_task,
    index_names,
    perturb,
    top_hit,
)
from fireside.data.synth_tools import RunTool, gist, index_entities, split_entities
from fireside.eval.tool_eval import ask_with_tools
from fireside.model.pretrained import Pretrained
from fireside.tools import builtin_tools
from fireside.tools.base import run_tool

GROUPS = ("small_talk", "world", "answerable", "near_miss")
PASS_RATE = 0.85
NEAR_MISS_SEED = 3_000_017
Check = Callable[[str, list[str]], bool]  # (final answer, tools called) -> right

_DONT_KNOW = re.compile(r"\b(don't know|do not know|not sure|found nothing|no idea)\b", re.I)
_NEAR = re.compile(r"\b(nothing on|closest|no entry|not the same|did not find|didn't find)\b", re.I)
# Capitalised words an honest "I don't know" may use without stating a fact.
_PLAIN_CAPITALS = frozenset(
    [
        "i",
        "i'm",
        "i've",
        "sorry",
        "my",
        "the",
        "this",
        "that",
        "it",
        "it's",
        "an",
        "a",
        "but",
        "however",
        "unfortunately",
        "fireside",
        "python",
        "you",
        "your",
        "please",
        "there",
        "no",
        "nothing",
        "if",
        "so",
        "search",
        "here",
        "maybe",
        "perhaps",
        "not",
        "as",
        "since",
        "yes",
        "ok",
        "for",
        "ask",
    ]
)
_SMALL_TALK_RULES: dict[str, tuple[str, re.Pattern[str]]] = {
    "hello": ("greets back", re.compile(r"\b(hello|hi|hey|good (morning|day|evening))\b", re.I)),
    "thanks": ("says you're welcome", re.compile(r"welcome|glad|happy to help|any ?time", re.I)),
    "bye": ("says goodbye", re.compile(r"\b(bye|goodbye|see you|take care)\b", re.I)),
    "how_are_you": ("says how it is", re.compile(r"\b(well|fine|good|great)\b", re.I)),
    "what_can_you_do": (
        "names its tools",
        re.compile(r"calculat.*(search|documentation).*python|search.*calculat", re.I | re.S),
    ),
}


@dataclass
class ConversationTask:
    group: str  # one of GROUPS
    prompt: str
    rule: str  # the check, in words, for the report
    check: Check = field(repr=False)


@dataclass
class ConversationAnswer:
    group: str
    prompt: str
    rule: str
    answer: str
    tools_called: list[str]
    correct: bool


@dataclass
class ConversationEvalResult:
    answers: list[ConversationAnswer]

    def score(self, *groups: str) -> tuple[int, int]:
        mine = [a for a in self.answers if a.group in groups]
        return sum(a.correct for a in mine), len(mine)

    def passed(self) -> bool:
        def rate(*groups: str) -> float:
            right, n = self.score(*groups)
            return right / n if n else 0.0

        return rate("small_talk") >= PASS_RATE and rate(*GROUPS[1:]) >= PASS_RATE


def invented(answer: str, question: str) -> list[str]:
    """Capitalised words and numbers in the answer that the question did not hold: facts an
    "I don't know" must not carry."""
    asked = {w.lower() for w in re.findall(r"[\w']+", question)}
    out = []
    for word in re.findall(r"[A-Za-z][\w']*|\d+(?:[.,]\d+)*", answer):
        if word.lower() in asked or word.lower() in _PLAIN_CAPITALS:
            continue
        if word[0].isdigit() or word[0].isupper():
            out.append(word)
    return out


def says_dont_know(question: str) -> Check:
    return lambda a, tools: (
        "search" in tools and bool(_DONT_KNOW.search(a)) and not invented(a, question)
    )


def states_snippet(name: str, snippet: str) -> Check:
    """The name found, and at least half of its gist's longer words."""
    words = {w.lower() for w in re.findall(r"[A-Za-z]{4,}", gist(snippet))}
    need = max(1, len(words) // 2)

    def check(answer: str, tools: list[str]) -> bool:
        said = {w.lower() for w in re.findall(r"[A-Za-z]{4,}", answer)}
        return "search" in tools and name in answer and len(words & said) >= need

    return check


def names_near_miss(asked: str, found: str) -> Check:
    # The found name must stand apart, not just inside the asked one (`tar` in `frob-tar`).
    alone = re.compile(rf"(?<![\w.-]){re.escape(found)}(?![\w-]|\.\w)")
    return lambda a, tools: (
        "search" in tools
        and asked in a
        and bool(alone.search(a.replace(asked, " ")))
        and bool(_NEAR.search(a))
    )


def small_talk_tasks() -> list[ConversationTask]:
    out = []
    for kind, prompts in phrases.EVAL_SMALL_TALK.items():
        rule, pattern = _SMALL_TALK_RULES[kind]
        for prompt in prompts:

            def check(a: str, tools: list[str], p: re.Pattern[str] = pattern) -> bool:
                return not tools and bool(p.search(a))

            out.append(ConversationTask("small_talk", prompt, f"{rule}; calls no tool", check))
    return out


def eval_near_miss_names(knowledge_db: Path | str, run: RunTool, n: int = 15) -> list[str]:
    """Near-miss names made from held-out index names: (asked) for the eval; fine-tuning
    never asks about them."""
    return [asked for asked, _, _ in _near_miss_cases(knowledge_db, run, n)]


def _near_miss_cases(knowledge_db: Path | str, run: RunTool, n: int) -> list[tuple[str, str, str]]:
    """(asked, found name, found snippet) for up to n made-up names near held-out ones."""
    _, held = split_entities(index_entities(knowledge_db))
    known = index_names(knowledge_db)
    rng = random.Random(NEAR_MISS_SEED)
    out: list[tuple[str, str, str]] = []
    for entity in held:
        asked = perturb(rng, entity.name)
        if asked.lower() in known or any(asked == o[0] for o in out):
            continue
        hit = top_hit(run("search", {"query": asked}))
        if hit is not None and hit[0].lower() != asked.lower():
            out.append((asked, hit[0], hit[1]))
        if len(out) == n:
            break
    return out


def answerable_tasks(knowledge_db: Path, run: RunTool, n: int = 15) -> list[ConversationTask]:
    """Held-out how-do-I rows the search answers, then held-out terms it defines, then
    held-out Python names: up to n."""
    out = []
    held_rows = [r for r in phrases.HOWTO if held_out_task(r[0])]
    for task, name, _, snippet in found_tasks(run, held_rows):
        prompt = phrases.EVAL_HOWTO_TEMPLATE.format(t=task)
        out.append(
            ConversationTask(
                "answerable", prompt, _snippet_rule(name), states_snippet(name, snippet)
            )
        )
    for term in phrases.EVAL_TERMS:
        hit = top_hit(run("search", {"query": term}))
        if hit is not None and hit[0].lower() == term:
            prompt = phrases.EVAL_DEFINITION_TEMPLATE.format(t=term)
            out.append(
                ConversationTask(
                    "answerable", prompt, _snippet_rule(hit[0]), states_snippet(hit[0], hit[1])
                )
            )
    _, held = split_entities(index_entities(knowledge_db))
    for entity in (e for e in held if e.kind == "function"):
        if len(out) >= n:
            break
        hit = top_hit(run("search", {"query": entity.name}))
        if hit is not None and hit[0] == entity.name:
            prompt = f"What's the {entity.name} function for?"
            out.append(
                ConversationTask(
                    "answerable",
                    prompt,
                    _snippet_rule(entity.name),
                    states_snippet(entity.name, hit[1]),
                )
            )
    return out[:n]


def _snippet_rule(name: str) -> str:
    return f"calls search; names `{name}` and half the longer words of its snippet's gist"


def tasks(knowledge_db: Path) -> list[ConversationTask]:
    [search] = builtin_tools(knowledge_db, names=("search",))

    def run(name: str, arguments: dict[str, object]) -> str:
        return run_tool(search, dict(arguments))[0]

    out = small_talk_tasks()
    world = declined(run, [(q, q) for q in phrases.EVAL_WORLD])
    for question, _, _ in world:
        rule = "calls search; says it does not know; no name or number the question lacks"
        out.append(ConversationTask("world", question, rule, says_dont_know(question)))
    out += answerable_tasks(knowledge_db, run)
    for asked, found, _ in _near_miss_cases(knowledge_db, run, 15):
        prompt = f"What does `{asked}` do?"
        rule = f"calls search; names `{asked}` and `{found}` and says the one is not the other"
        out.append(ConversationTask("near_miss", prompt, rule, names_near_miss(asked, found)))
    return out


def run_conversation_eval(
    bundle: Pretrained, knowledge_db: Path, task_list: Sequence[ConversationTask] | None = None
) -> ConversationEvalResult:
    """Every prompt through `run_with_tools`, greedy, all at once (the engine batches them)."""
    chosen = list(task_list) if task_list is not None else tasks(knowledge_db)
    replies = ask_with_tools(
        bundle, knowledge_db, [t.prompt for t in chosen], request_prefix="convo-eval"
    )
    answers = []
    for task, reply in zip(chosen, replies, strict=True):
        answer, called = reply or ("", [])
        answers.append(
            ConversationAnswer(
                task.group, task.prompt, task.rule, answer, called, task.check(answer, called)
            )
        )
    return ConversationEvalResult(answers)
