"""Constrained decoding with llguidance: JSON schemas and Lark grammars as `TokenConstraint`s.

The grammar is compiled and checked once per request (a bad schema is a 400 before any
token is spent); each sample then gets its own matcher (`fireside.engine.grammar`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import llguidance

from fireside.api.errors import bad_request
from fireside.api.schemas import SamplingFields
from fireside.engine.grammar import GrammarConstraint, GrammarFactory, grammar_error, lark_grammar
from fireside.engine.types import TokenConstraint

__all__ = ["GrammarConstraint", "constraint_factory", "json_schema_grammar", "lark_grammar"]


def json_schema_grammar(schema: dict[str, Any] | None) -> str:
    """`response_format` json_object (schema None: any JSON object) or json_schema."""
    # Compact separators keep outputs short and stop a model from padding with whitespace.
    options = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
    schema = {"type": "object"} if schema is None else schema
    try:
        return str(llguidance.LLMatcher.grammar_from_json_schema(schema, overrides=options))  # type: ignore[arg-type]
    except ValueError as e:
        raise bad_request(f"the JSON schema is not valid: {e}", "response_format") from None


def structured_output_grammar(fields: SamplingFields) -> tuple[str, str] | None:
    """vLLM's structured-output knobs → (grammar, the field it came from), at most one."""
    so = fields.structured_outputs
    asked: list[tuple[str, Any, str]] = [
        ("structured_outputs.json", so and so.json_, "json"),
        ("structured_outputs.regex", so and so.regex, "regex"),
        ("structured_outputs.choice", so and so.choice, "choice"),
        ("structured_outputs.grammar", so and so.grammar, "grammar"),
        ("guided_json", fields.guided_json, "json"),
        ("guided_regex", fields.guided_regex, "regex"),
        ("guided_choice", fields.guided_choice, "choice"),
        ("guided_grammar", fields.guided_grammar, "grammar"),
    ]
    given = [(param, value, kind) for param, value, kind in asked if value is not None]
    if not given:
        return None
    if len(given) > 1:
        names = ", ".join(param for param, _, _ in given)
        raise bad_request(
            f"give one structured-output constraint, not several ({names})", given[1][0]
        )
    param, value, kind = given[0]
    if kind == "json":
        return json_schema_grammar(value), param
    if kind == "regex":
        return str(llguidance.LLMatcher.grammar_from_regex(value)), param
    if kind == "choice":
        # Lark string literals take JSON escapes, so any choice text is spelt exactly.
        return lark_grammar("start: " + " | ".join(json.dumps(c) for c in value)), param
    return lark_grammar(value), param


def constraint_factory(
    tokenizer: llguidance.LLTokenizer, grammar: str, param: str
) -> Callable[[], TokenConstraint]:
    """Checks the grammar now, so a bad one is the client's 400, not a failed generation."""
    error = grammar_error(grammar, tokenizer)
    if error is not None:
        raise bad_request(f"the grammar for {param} does not compile: {error}", param)
    return GrammarFactory(tokenizer, grammar)
