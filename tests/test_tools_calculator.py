"""The calculator: exact answers in one short format, clear refusals, nothing but arithmetic."""

from __future__ import annotations

import asyncio

import pytest

from fireside.tools.base import ToolError, call_tool
from fireside.tools.calculator import calculator_tool, evaluate


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("1234 * 56", "69104"),
        ("0.1 + 0.2", "0.3"),
        ("15% of 240", "36"),
        ("12%", "0.12"),
        ("240 * 15%", "36"),
        ("17 % 5", "2"),
        ("2^10", "1024"),
        ("2 ** -2", "0.25"),
        ("10 ÷ 4", "2.5"),
        ("3 × 7", "21"),
        ("12 x 7", "84"),
        ("7 − 10", "-3"),
        ("-(3 + 4) * 2", "-14"),
        ("7 // 2", "3"),
        ("10 / 3 * 3", "10"),
        ("1 / 3", "0.333333333333"),
        ("2 / 3", "0.666666666667"),
        ("1.5e-3", "0.0015"),
        ("-0.05 * 2", "-0.1"),
        ("sqrt(16)", "4"),
        ("sqrt(2.25)", "1.5"),
        ("sqrt(2)", "1.41421356237"),
        ("abs(-4.5)", "4.5"),
        ("round(2.675, 2)", "2.68"),
        ("round(7.5)", "8"),
        ("min(3, 9, 2) + max(1, 5)", "7"),
        ("floor(7.9) + ceil(0.1)", "8"),
        ("log(100, 10)", "2"),
        ("log10(1000)", "3"),
        ("exp(0)", "1"),
        ("sin(pi)", "0"),
        ("cos(0)", "1"),
        ("pi", "3.14159265359"),
        ("factorial(20)", "2432902008176640000"),
        ("(1 + 2) * (3 + 4)", "21"),
        ("12.5 * 8 =", "100"),
        ("1_000 + 1", "1001"),
    ],
)
def test_evaluate(expression: str, expected: str) -> None:
    assert evaluate(expression) == expected


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("1 / 0", "division by zero"),
        ("5 % 0", "division by zero"),
        ("0 ** -1", "division by zero"),
        ("2 ** 100000", "too large"),
        ("10 ** 400", "too large"),
        ("9 ** 9 ** 9", "too large"),
        ("factorial(1000)", "factorial"),
        ("sqrt(-1)", "negative"),
        ("(-8) ** 0.5", "fractional power"),
        ("log(0)", "positive"),
        ("", "empty"),
        ("import os", "cannot read"),
        ("__import__('os').system('true')", "not arithmetic"),
        ("(1).real", "not arithmetic"),
        ("[1, 2]", "not arithmetic"),
        ("'a' * 3", "not arithmetic"),
        ("x + 1", "unknown name"),
        ("open('f')", "unknown function"),
        ("sqrt(1, 2)", "wrong number of arguments"),
        ("1 +", "cannot read"),
        ("1" * 600, "longer than"),
    ],
)
def test_refusals_are_clear(expression: str, message: str) -> None:
    with pytest.raises(ToolError, match=message):
        evaluate(expression)


def test_the_tool_answers_with_the_number_or_an_error_line() -> None:
    tool = calculator_tool()
    assert tool.spec()["function"]["name"] == "calculator"
    assert asyncio.run(call_tool(tool, {"expression": "1234 * 56"})) == ("69104", False)
    assert asyncio.run(call_tool(tool, {"expression": "1/0"})) == ("error: division by zero", True)
    text, failed = asyncio.run(call_tool(tool, {"expr": "1"}))
    assert failed and text.startswith("error: calculator needs the argument 'expression'")
    text, failed = asyncio.run(call_tool(tool, {"expression": 5}))
    assert failed and "must be a string" in text
    text, failed = asyncio.run(call_tool(tool, "1+1"))
    assert failed and "JSON object" in text
