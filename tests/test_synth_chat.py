"""Chat conversations (small talk, honest "I don't know", how-do-I, definitions, near misses)
right by construction, and the conversation eval: rules that pass good answers and fail bad
ones, prompts held out of training, and a run end to end on a tiny random model."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Any

import pytest

from fireside.data import chat_phrases as phrases
from fireside.data.synth_chat import (
    declined,
    definitions,
    found_tasks,
    howtos,
    index_names,
    key_words,
    near_misses,
    small_talk,
    top_hit,
    world_idk,
    world_questions,
)
from fireside.data.synth_tools import Entity, gist, index_entities, synthesize
from fireside.eval.conversation_eval import (
    ConversationTask,
    invented,
    names_near_miss,
    run_conversation_eval,
    says_dont_know,
    small_talk_tasks,
    states_snippet,
    tasks,
)
from fireside.eval.report import EvalResults, write_report
from fireside.model import load_pretrained
from fireside.tools import builtin_tools
from fireside.tools.base import run_tool
from fireside.tools.extract import python_source_entries
from fireside.tools.knowledge import build_index

CHAT_ONLY = {
    "calculator": 0,
    "lookup": 0,
    "unknown": 0,
    "python": 0,
    "identity": 0,
    "small_talk_passes": 0,
    "small_talk_chat": 400,
    "world_idk": 60,
    "howto": 10,
    "what_does": 10,
    "definition": 20,
    "near_miss": 20,
}


@pytest.fixture(scope="module")
def knowledge(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """300 documented widget functions (some held out by hash) and one to polish widgets."""
    source = (
        '"""Tools for widgets."""\n'
        'def polish(x):\n    """Polish a widget until it shines. Takes a while."""\n'
        + "".join(
            f'def part{i}(x):\n    """Return widget number {i} for x. It is never empty."""\n'
            for i in range(300)
        )
    )
    db = tmp_path_factory.mktemp("kb") / "k.db"
    build_index(db, {"python": python_source_entries("widgets", source, "widgets.py")})
    return db


@pytest.fixture(scope="module")
def run(knowledge: Path) -> Any:
    tools = {t.name: t for t in builtin_tools(knowledge)}
    return lambda name, arguments: run_tool(tools[name], arguments)[0]


def _turns(conversation: dict[str, Any]) -> tuple[str, str, str, str]:
    """(question, search query, tool result, answer) of a one-search conversation."""
    q, call, result, answer = conversation["messages"]
    query = call["tool_calls"][0]["function"]["arguments"]["query"]
    return q["content"], query, result["content"], answer["content"]


def test_small_talk_answers_in_kind() -> None:
    answers = {kind: set(a) for kind, (_, a) in phrases.SMALL_TALK.items()}
    every = set().union(*answers.values())
    said = set()
    for c in small_talk(random.Random(0), 200):
        [question, answer] = c["messages"]
        assert question["role"] == "user" and question["content"].strip()
        assert answer["content"] in every
        said.add(question["content"])
    assert len(said) > 100  # paraphrases, not one line repeated


def test_world_questions_are_declined_only_when_search_knows_nothing(
    knowledge: Path, run: Any
) -> None:
    asked = declined(run, world_questions())
    assert asked  # the widget index knows no capitals
    assert not declined(run, [("What does widgets.polish do?", "widgets.polish")])
    for c in world_idk(random.Random(1), asked, 30):
        question, query, result, answer = _turns(c)
        assert query == key_words(question) and result == run("search", {"query": query})
        assert says_dont_know(question)(answer, ["search"]), answer
        assert "admin" in answer and "offline" in answer


def test_how_to_and_definitions_copy_the_snippet_or_decline(run: Any) -> None:
    rows = [("polish a widget until it shines", "widgets.polish"), ("fly to Mars", "widgets")]
    found = found_tasks(run, rows)
    assert [f[1] for f in found] == ["widgets.polish"]  # the second finds nothing by that name
    for c in howtos(random.Random(2), found, 5):
        question, query, result, answer = _turns(c)
        assert result == run("search", {"query": query}) and "polish" in question.lower()
        assert (
            answer
            == f"Use `widgets.polish`: {gist('Polish a widget until it shines. Takes a while.')}"
        )
    for c in definitions(random.Random(3), run, ["widgets", "linked list"], 20):
        question, query, result, answer = _turns(c)
        assert result == run("search", {"query": query})
        if "widgets" in question:
            assert answer.startswith("`widgets`: Tools for widgets")
        else:
            assert says_dont_know(question)(answer, ["search"]), answer


def test_near_misses_name_both_and_never_pass_one_off_as_the_other(
    knowledge: Path, run: Any
) -> None:
    known = index_names(knowledge)
    entities = [e for e in index_entities(knowledge) if e.kind == "function"]
    made = list(near_misses(random.Random(4), run, entities, known, 15))
    assert len(made) == 15
    for c in made:
        question, asked, result, answer = _turns(c)
        hit = top_hit(result)
        assert hit is not None and asked.lower() not in known and hit[0] != asked
        assert f"`{asked}`" in question or asked in question
        assert names_near_miss(asked, hit[0])(answer, ["search"]), answer


def test_rules_pass_good_answers_and_fail_bad_ones() -> None:
    q = "What is the capital of France?"
    honest = "I don't know. I'm a small offline model; my search found nothing about France."
    dont_know = says_dont_know(q)
    assert dont_know(honest, ["search"])
    assert not dont_know(honest, [])  # it must have looked
    assert not dont_know("I don't know, but probably Paris.", ["search"])
    assert not dont_know("I don't know; it became the capital in 987.", ["search"])
    assert not dont_know("The capital of France is Paris.", ["search"])
    assert invented("Napoleon was born in 1769.", "Who was Napoleon?") == ["1769"]
    snippet = states_snippet("widgets.polish", "Polish a widget until it shines. Takes a while.")
    assert snippet("Use `widgets.polish`: Polish a widget until it shines.", ["search"])
    assert not snippet("Use `widgets.polish`: it paints things.", ["search"])
    assert not snippet("Polish a widget until it shines.", ["search"])
    near = names_near_miss("frob-tar", "tar")
    assert near("I found nothing on `frob-tar`; the closest is `tar`: an archiver.", ["search"])
    assert not near("`frob-tar` is `tar`: an archiver.", ["search"])
    assert not near("I found nothing on `frob-tar`.", ["search"])
    by_prompt = {t.prompt: t for t in small_talk_tasks()}
    assert len(by_prompt) == 15
    hello = by_prompt["Hello, Fireside!"].check
    assert hello("Hi! What can I do for you?", []) and not hello("Of what?", [])
    assert not hello("Hello!", ["search"])
    can = by_prompt["What are you good at?"].check
    assert can(phrases.WHAT_CAN_YOU_DO_ANSWERS[0], []) and not can("I can chat.", [])


def _normal(text: str) -> str:
    return re.sub(r"[^\w ]", "", text.lower()).strip()


def test_eval_prompts_are_held_out_of_training(knowledge: Path, tmp_path: Path) -> None:
    out = tmp_path / "sft.jsonl"
    counts = synthesize(out, knowledge, counts=CHAT_ONLY)
    assert counts["small_talk_chat"] == 400 and counts["near_miss"] == 20
    trained = {json.loads(line)["messages"][0]["content"] for line in out.read_text().splitlines()}
    asked = tasks(knowledge)
    groups = {t.group for t in asked}
    assert groups == {"small_talk", "world", "answerable", "near_miss"}
    assert not {t.prompt for t in asked} & trained
    # Nor the same words with other casing or punctuation.
    assert not {_normal(t.prompt) for t in asked} & {_normal(p) for p in trained}
    subjects = {s for ss in phrases.WORLD_SUBJECTS.values() for s in ss}
    assert not any(s in q for s in subjects for q in phrases.EVAL_WORLD)
    assert not set(phrases.EVAL_TERMS) & set(phrases.TERMS)


def test_the_conversation_eval_runs_end_to_end_and_reports(
    tiny_model_dir: Path, knowledge: Path, tmp_path: Path
) -> None:
    bundle = load_pretrained(tiny_model_dir)
    every = tasks(knowledge)
    chosen = [next(t for t in every if t.group == g) for g in ("small_talk", "world", "near_miss")]
    chosen.append(
        ConversationTask(
            "answerable", "What does widgets.polish do?", "names it", lambda a, t: False
        )
    )
    result = run_conversation_eval(bundle, knowledge, chosen)
    assert [a.prompt for a in result.answers] == [t.prompt for t in chosen]
    for task, answer in zip(chosen, result.answers, strict=True):
        assert answer.correct == task.check(answer.answer, answer.tools_called)
    assert not result.passed()  # a random model passes nothing
    report = write_report(
        tmp_path, tiny_model_dir, bundle.model.config, EvalResults(conversation=result)
    )
    text = report.read_text()
    assert "Conversations, every answer" in text and chosen[0].prompt in text
    saved = json.loads((tmp_path / "eval.json").read_text())["conversation"]
    assert [a["rule"] for a in saved["answers"]] == [t.rule for t in chosen]


def test_entities_without_functions_give_no_what_does(run: Any) -> None:
    from fireside.data.synth_chat import what_does

    assert not list(what_does(random.Random(5), run, [Entity("tar", "command")], 3))
