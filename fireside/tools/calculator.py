"""`calculator`: arithmetic without `eval`, exact where it can be.

The expression is parsed by `ast` and walked over an allow-list of nodes. Numbers are
`Fraction`s, so 0.1 + 0.2 is 3/10 and prints `0.3`; functions without exact answers (sqrt of
2, sin, log) fall back to floats. What comes back is one plain number — `69104`, `0.3`,
`0.333333333333` — because a small model copies it into its answer.
"""

from __future__ import annotations

import ast
import math
import re
from collections.abc import Callable
from fractions import Fraction
from typing import Any

from fireside.tools.base import Tool, ToolError

Number = Fraction | float

MAX_EXPRESSION_CHARS = 500
MAX_MAGNITUDE = Fraction(10) ** 300  # floats end near 1.8e308; integers print every digit
MAX_DIGITS = 300
SIGNIFICANT_DIGITS = 12

# A percentage is `N%` not followed by an operand (then `%` is modulo): "15% of 240", "12%".
_PERCENT_OF = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*%\s*of\b", re.I)
_PERCENT = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*%(?!\s*[\w.(])")
# `x` between numbers is a times sign ("12 x 7"); there are no variables to confuse it with.
_TIMES_X = re.compile(r"(?<=[\d)])\s*[xX]\s*(?=[\d(.])")
_SYMBOLS = {"×": "*", "·": "*", "÷": "/", "−": "-", "–": "-", "^": "**", "**": "**"}


def _exact_sqrt(x: Fraction) -> Number:
    if x < 0:
        raise ToolError("sqrt of a negative number")
    num, den = math.isqrt(x.numerator), math.isqrt(x.denominator)
    if num * num == x.numerator and den * den == x.denominator:
        return Fraction(num, den)
    return math.sqrt(x)


def _log(x: Number, base: Number | None = None) -> float:
    if x <= 0 or (base is not None and (base <= 0 or base == 1)):
        raise ToolError("log is defined for positive numbers (and a positive base other than 1)")
    return math.log(x) if base is None else math.log(x, base)


def _round(x: Number, digits: Number = 0) -> Number:
    if not _is_integer(digits):
        raise ToolError("round's second argument must be a whole number of digits")
    return Fraction(round(Fraction(x), int(digits)))


def _factorial(n: Number) -> Number:
    if not _is_integer(n) or n < 0 or n > 170:
        raise ToolError("factorial takes a whole number from 0 to 170")
    return Fraction(math.factorial(int(n)))


def _float_fn(
    fn: Callable[[float], float], digits: int | None = None
) -> Callable[[Number], Number]:
    def apply(x: Number) -> Number:
        try:
            y = fn(float(x))
            # sin(pi) is 1.2e-16 in floats; trigonometry rounded this far reads as 0.
            return y if digits is None else round(y, digits)
        except (ValueError, OverflowError):
            raise ToolError(f"{fn.__name__} is not defined for {_format(x)}") from None

    return apply


FUNCTIONS: dict[str, Callable[..., Number]] = {
    "sqrt": _exact_sqrt,
    "abs": abs,
    "round": _round,
    "min": min,
    "max": max,
    "floor": lambda x: Fraction(math.floor(x)),
    "ceil": lambda x: Fraction(math.ceil(x)),
    "log": _log,
    "ln": _log,
    "log10": lambda x: _log(x, 10),
    "log2": lambda x: _log(x, 2),
    "exp": _float_fn(math.exp),
    "sin": _float_fn(math.sin, 15),
    "cos": _float_fn(math.cos, 15),
    "tan": _float_fn(math.tan, 15),
    "asin": _float_fn(math.asin),
    "acos": _float_fn(math.acos),
    "atan": _float_fn(math.atan),
    "factorial": _factorial,
}
CONSTANTS: dict[str, Number] = {"pi": math.pi, "e": math.e, "tau": math.tau}


def _is_integer(x: Number) -> bool:
    return x.denominator == 1 if isinstance(x, Fraction) else float(x).is_integer()


def _check(x: Number) -> Number:
    if isinstance(x, float) and not math.isfinite(x):
        raise ToolError("the result is not a finite number")
    if abs(x) > MAX_MAGNITUDE:  # type: ignore[operator]  # typeshed: Fraction vs float
        raise ToolError("the result is too large")
    return x


def _power(base: Number, exp: Number) -> Number:
    if _is_integer(exp) and isinstance(base, Fraction):
        n = int(exp)
        if base == 0 and n < 0:
            raise ToolError("division by zero")
        if abs(base) not in (0, 1):
            size = abs(n) * abs(math.log10(abs(base.numerator)) - math.log10(base.denominator))
            if size > MAX_DIGITS:
                raise ToolError("the result is too large")
        return base**n
    if base < 0:
        raise ToolError("a negative number to a fractional power is not a real number")
    try:
        return float(base) ** float(exp)
    except (OverflowError, ZeroDivisionError):
        raise ToolError("the result is too large") from None


def _binary(op: ast.operator, a: Number, b: Number) -> Number:
    try:
        if isinstance(op, ast.Add):
            return a + b
        if isinstance(op, ast.Sub):
            return a - b
        if isinstance(op, ast.Mult):
            return a * b
        if isinstance(op, ast.Div):
            return a / b
        if isinstance(op, ast.FloorDiv):
            return Fraction(a // b)
        if isinstance(op, ast.Mod):
            return a % b
        if isinstance(op, ast.Pow):
            return _power(a, b)
    except ZeroDivisionError:
        raise ToolError("division by zero") from None
    raise ToolError(f"the operator {type(op).__name__} is not supported")


class _Evaluator:
    def __init__(self, source: str) -> None:
        self.source = source

    def eval(self, node: ast.AST) -> Number:
        return _check(self._eval(node))

    def _eval(self, node: ast.AST) -> Number:
        if isinstance(node, ast.Expression):
            return self.eval(node.body)
        if isinstance(node, ast.Constant) and type(node.value) in (int, float):
            # The literal's own text, so 0.1 is exactly 1/10 (the float 0.1 is not).
            text = ast.get_source_segment(self.source, node) or repr(node.value)
            try:
                return Fraction(text.replace("_", ""))
            except ValueError:
                raise ToolError(f"{text!r} is not a number") from None
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
            value = self.eval(node.operand)
            return -value if isinstance(node.op, ast.USub) else value
        if isinstance(node, ast.BinOp):
            return _binary(node.op, self.eval(node.left), self.eval(node.right))
        if isinstance(node, ast.Name):
            if node.id in CONSTANTS:
                return CONSTANTS[node.id]
            raise ToolError(f"unknown name {node.id!r}")
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not node.keywords:
            fn = FUNCTIONS.get(node.func.id)
            if fn is None:
                raise ToolError(f"unknown function {node.func.id!r}")
            args = [self.eval(a) for a in node.args]
            try:
                return fn(*args)
            except TypeError:
                raise ToolError(f"wrong number of arguments to {node.func.id}") from None
        raise ToolError(f"{ast.get_source_segment(self.source, node)!r} is not arithmetic")


def normalize(expression: str) -> str:
    """Everyday notation as Python's: × ÷ ^, `x` for times, percentages, a trailing `=`."""
    text = expression.strip().rstrip("=?").strip()
    for symbol, python in _SYMBOLS.items():
        text = text.replace(symbol, python)
    text = _TIMES_X.sub("*", text)
    text = _PERCENT_OF.sub(r"(\1/100)*", text)
    return _PERCENT.sub(r"(\1/100)", text)


def _format(x: Number) -> str:
    if isinstance(x, Fraction):
        if x.denominator == 1:
            return str(x.numerator)
        den = x.denominator
        for p in (2, 5):
            while den % p == 0:
                den //= p
        if den == 1:  # a terminating decimal: print it exactly
            digits = max(_exponent(x.denominator, 2), _exponent(x.denominator, 5))
            text = f"{x.numerator * 10**digits // x.denominator:d}"
            sign, text = ("-", text[1:]) if text.startswith("-") else ("", text)
            text = text.rjust(digits + 1, "0")
            return f"{sign}{text[:-digits]}.{text[-digits:]}".rstrip("0").rstrip(".")
        x = float(x)
    if x.is_integer() and abs(x) < 1e15:
        return str(int(x))
    return f"{x:.{SIGNIFICANT_DIGITS}g}"


def _exponent(n: int, p: int) -> int:
    k = 0
    while n % p == 0:
        n //= p
        k += 1
    return k


def evaluate(expression: str) -> str:
    """The value of an arithmetic expression as a short decimal string; ToolError if it is
    not arithmetic or its value is out of range."""
    if not isinstance(expression, str) or not expression.strip():
        raise ToolError("the expression is empty")
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise ToolError(f"the expression is longer than {MAX_EXPRESSION_CHARS} characters")
    source = normalize(expression)
    try:
        tree = ast.parse(source, mode="eval")
    except SyntaxError:
        raise ToolError(f"cannot read {expression!r} as arithmetic") from None
    return _format(_Evaluator(source).eval(tree))


def _run(arguments: dict[str, Any]) -> str:
    return evaluate(arguments["expression"])


def calculator_tool() -> Tool:
    return Tool(
        name="calculator",
        description="Evaluate arithmetic: + - * / ** % and sqrt, log, sin, round, min, max.",
        parameters={
            "type": "object",
            "properties": {"expression": {"type": "string"}},
            "required": ["expression"],
        },
        run=_run,
        timeout_s=5.0,
        max_chars=200,
    )
