"""Chat conversations that make the small model useful where it can be and honest where it
cannot: small talk, world-knowledge questions it must decline, "how do I ... in Python" and
definitions answered from the documentation index, and near-miss names it must not pass off.

Right by construction, as in `synth_tools`: every search in them is the real search, its result
is what the model sees, and an answer only ever copies that result or says it found nothing.
The model asks search first for any question of fact, so it learns to tell a result that is
about the question from one that is not, not to guess which questions to skip.
"""

from __future__ import annotations

import contextlib
import hashlib
import random
import re
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from fireside.data import chat_phrases as phrases
from fireside.data.synth import Conversation, assistant, user
from fireside.data.synth_tools import Entity, RunTool, _call, _tool, gist
from fireside.tools.knowledge import query_terms, result_hits

# None names the subject: a small model that copies a name can miscopy it, and a miscopied
# name is an invented fact.
IDK_WORLD = [
    "I don't know. I'm a small offline model, and searching this computer's documentation "
    "found nothing about it. An admin can connect a larger model in the app's connections.",
    "Sorry, I don't know that. The local documentation has nothing on it, and I am a "
    "small model that runs offline. An administrator can connect a bigger model under the "
    "app's connections.",
    "I don't know: my search found nothing about that. I am a small offline model; for "
    "questions like this an admin can connect a larger model in the app's connections.",
]
NEAR_MISS = [
    "I found nothing on `{asked}`; the closest is `{found}`: {gist}",
    "There is nothing on `{asked}` in the documentation. The closest is `{found}`: {gist}",
    "I found nothing on `{asked}`. The closest name I found is `{found}`, which is not the "
    "same thing: {gist}",
]
WHAT_DOES = [
    "What does the {n} function do?",
    "What is {n} used for in Python?",
    "Can you tell me what `{n}` does?",
    "what is {n} in python",
]
HOWTO_REPEATS = 24  # each how-do-I row's most conversations: every template, four times
_NEAR_SYLLABLES = ["frob", "zen", "quux", "blam", "dro", "kex", "wub", "plon", "trel", "snar"]
_TITLE_SECTION = re.compile(r"\([^()]*\)$")


def key_words(text: str) -> str:
    """The search query for a question: its content words, as the search tool keeps them."""
    return " ".join(query_terms(text))


def base_name(title: str) -> str:
    """`tar(1)` -> `tar`; a Python title is its own name."""
    return _TITLE_SECTION.sub("", title)


def top_hit(result: str) -> tuple[str, str] | None:
    """(name, snippet) of the first hit of a search result, or None for `no results`."""
    hits = result_hits(result)
    if not hits:
        return None
    title, sep, snippet = hits[0].partition(": ")
    return (base_name(title), snippet.strip()) if sep else None


def is_about(result: str, subject: str) -> bool:
    """Whether any hit is named like the subject or one of its longer words: then the index may
    know something about it, and a "does not know" lesson would be a lie."""
    words = {w.lower() for w in re.findall(r"\w+", subject) if len(w) > 3} | {subject.lower()}
    for line in result_hits(result):
        title, sep, _ = line.partition(": ")
        if sep and base_name(title).lower() in words:
            return True
    return False


def held_out_task(task: str) -> bool:
    """One how-do-I row in six is kept for the conversation eval."""
    return int.from_bytes(hashlib.blake2b(task.encode(), digest_size=8).digest(), "little") % 6 == 0


def _vary(rng: random.Random, said: str) -> str:
    """A user's line as people type it: any casing, with or without punctuation."""
    question = bool(set(said.lower().replace(",", " ").split()) & {"how", "what", "are", "how's"})
    said = rng.choice([said, said.capitalize(), said.lower(), said.capitalize()])
    ends = ["", "?", "??"] if question else ["", "!", ".", " :)", "!!"]
    return said + rng.choice(ends) if said[-1].isalnum() else said


def small_talk(rng: random.Random, n: int) -> Iterator[Conversation]:
    kinds = list(phrases.SMALL_TALK.items())
    for i in range(n):
        kind, (said, answers) = kinds[i % len(kinds)]
        line = rng.choice(said)
        # "hi, what can you do"; not before thanks or goodbye, where a greeting is rarely said
        # and would teach that a line opening with one may not be a greeting.
        if rng.random() < 0.3 and kind in ("how_are_you", "what_can_you_do"):
            line = f"{rng.choice(phrases.HELLOS)}, {line}"
        yield {"messages": [user(_vary(rng, line)), assistant(rng.choice(answers))]}


def world_questions() -> list[tuple[str, str]]:
    """(question, subject) for every template and subject of the training lists."""
    out = []
    for kind, templates in phrases.WORLD_TEMPLATES.items():
        for template in templates:
            for subject in phrases.WORLD_SUBJECTS.get(kind, ["that"]):
                out.append((template.format(s=subject), subject))
    return out


def declined(run: RunTool, questions: Sequence[tuple[str, str]]) -> list[tuple[str, str, str]]:
    """(question, subject, search result) for the questions the index knows nothing about."""
    kept = []
    for question, subject in questions:
        result = run("search", {"query": key_words(question)})
        if not is_about(result, subject):
            kept.append((question, subject, result))
    return kept


def world_idk(
    rng: random.Random, asked: Sequence[tuple[str, str, str]], n: int
) -> Iterator[Conversation]:
    for _ in range(n if asked else 0):
        question, _, result = rng.choice(asked)
        yield {
            "messages": [
                user(question),
                _call("search", {"query": key_words(question)}),
                _tool(result),
                assistant(rng.choice(IDK_WORLD)),
            ]
        }


def found_tasks(run: RunTool, rows: Sequence[tuple[str, str]]) -> list[tuple[str, str, str, str]]:
    """(task, name, search result, snippet) for the rows whose key words find that name first."""
    kept = []
    for task, name in rows:
        result = run("search", {"query": key_words(task)})
        hit = top_hit(result)
        if hit is not None and hit[0] == name:
            kept.append((task, name, result, hit[1]))
    return kept


def howtos(
    rng: random.Random, found: Sequence[tuple[str, str, str, str]], n: int
) -> Iterator[Conversation]:
    # The table has a row per task, and only rows the real search answers are kept; drilling
    # each one hundreds of times would teach those answers by heart, not the habit, so each
    # row is asked a few times only.
    for _ in range(min(n, HOWTO_REPEATS * len(found))):
        task, name, result, snippet = rng.choice(found)
        yield {
            "messages": [
                user(rng.choice(phrases.HOWTO_TEMPLATES).format(t=task)),
                _call("search", {"query": key_words(task)}),
                _tool(result),
                assistant(f"Use `{name}`: {gist(snippet)}"),
            ]
        }


def what_does(
    rng: random.Random, run: RunTool, entities: Sequence[Entity], n: int
) -> Iterator[Conversation]:
    """ "What does the X function do?" for Python names the search finds first by name."""
    names = [e.name for e in entities if e.kind == "function"]
    rng.shuffle(names)
    made = 0
    for name in names:
        if made == n:
            return
        result = run("search", {"query": name})
        hit = top_hit(result)
        if hit is None or hit[0] != name:
            continue
        made += 1
        yield {
            "messages": [
                user(rng.choice(WHAT_DOES).format(n=name)),
                _call("search", {"query": name}),
                _tool(result),
                assistant(f"`{name}`: {gist(hit[1])}"),
            ]
        }


def definition_answer(rng: random.Random, term: str, result: str) -> str:
    """From the top hit when it is named like the term, else "I don't know"."""
    hit = top_hit(result)
    if hit is not None and hit[0].lower() == term.lower():
        return f"`{hit[0]}`: {gist(hit[1])}"
    return rng.choice(IDK_WORLD)


def definitions(
    rng: random.Random, run: RunTool, terms: Sequence[str], n: int
) -> Iterator[Conversation]:
    results = {t: run("search", {"query": key_words(t)}) for t in terms}
    for _ in range(n if terms else 0):
        term = rng.choice(terms)
        yield {
            "messages": [
                user(rng.choice(phrases.DEFINITION_TEMPLATES).format(t=term)),
                _call("search", {"query": key_words(term)}),
                _tool(results[term]),
                assistant(definition_answer(rng, term, results[term])),
            ]
        }


def index_names(knowledge_db: str | Path) -> set[str]:
    """Every name the index answers to, lower-cased: titles without sections, and aliases."""
    with contextlib.closing(sqlite3.connect(f"file:{knowledge_db}?mode=ro", uri=True)) as db:
        titles = {base_name(t).lower() for (t,) in db.execute("SELECT title FROM entries")}
        return titles | {n.lower() for (n,) in db.execute("SELECT name FROM names")}


def perturb(rng: random.Random, name: str) -> str:
    """A name that looks like a real one: a syllable added before or after, or in place of
    a dotted name's last part."""
    syllable = rng.choice(_NEAR_SYLLABLES)
    head, dot, last = name.rpartition(".")
    choice = rng.randrange(3)
    if dot and choice == 0:
        return f"{head}.{syllable}{last}"
    return f"{syllable}-{name}" if choice == 1 else f"{name}-{syllable}"


def near_misses(
    rng: random.Random,
    run: RunTool,
    entities: Sequence[Entity],
    known: set[str],
    n: int,
    exclude: frozenset[str] = frozenset(),
) -> Iterator[Conversation]:
    """Questions about a made-up name whose search finds a different, real name first."""
    made = tries = 0
    while made < n and entities and tries < 20 * n:
        tries += 1
        entity = rng.choice(entities)
        asked = perturb(rng, entity.name)
        if asked.lower() in known or asked in exclude:
            continue
        result = run("search", {"query": asked})
        hit = top_hit(result)
        if hit is None or hit[0].lower() == asked.lower():
            continue
        made += 1
        question = rng.choice(phrases_for(entity)).format(n=asked)
        answer = rng.choice(NEAR_MISS).format(asked=asked, found=hit[0], gist=gist(hit[1]))
        yield {
            "messages": [
                user(question),
                _call("search", {"query": asked}),
                _tool(result),
                assistant(answer),
            ]
        }


def phrases_for(entity: Entity) -> list[str]:
    from fireside.data.synth_tools import COMMAND_QUESTIONS, FUNCTION_QUESTIONS

    return COMMAND_QUESTIONS if entity.kind == "command" else FUNCTION_QUESTIONS


def chat_kinds(
    rng: random.Random,
    run: RunTool,
    knowledge_db: str | Path,
    taught: Sequence[Entity],
    counts: Mapping[str, int],
) -> dict[str, list[Conversation]]:
    """Every chat kind, as many of each as `counts` asks (a kind it omits: none)."""
    from fireside.eval.conversation_eval import eval_near_miss_names

    taught_rows = [r for r in phrases.HOWTO if not held_out_task(r[0])]
    exclude = frozenset(eval_near_miss_names(knowledge_db, run))
    return {
        "small_talk_chat": list(small_talk(rng, counts.get("small_talk_chat", 0))),
        "world_idk": list(
            world_idk(rng, declined(run, world_questions()), counts.get("world_idk", 0))
        ),
        "howto": list(howtos(rng, found_tasks(run, taught_rows), counts.get("howto", 0))),
        "what_does": list(what_does(rng, run, taught, counts.get("what_does", 0))),
        "definition": list(definitions(rng, run, phrases.TERMS, counts.get("definition", 0))),
        "near_miss": list(
            near_misses(
                rng, run, taught, index_names(knowledge_db), counts.get("near_miss", 0), exclude
            )
        ),
    }
