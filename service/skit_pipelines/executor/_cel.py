"""A small, safe evaluator for the CEL subset KFP emits.

The compiler writes `triggerPolicy.condition` strings such as
`!(int(inputs.parameter_values['pipelinechannel--x']) > 0) && ...` and
`parameterExpressionSelector` strings such as `parseJson(string_value)["b"]`. This parses
them into closures over a variables mapping; nothing is handed to `eval`.

Supported: literals (numbers, quoted strings, true/false/null, lists), variables, member
access (`a.b`), indexing (`a['k']`, `a[0]`), `!`, unary `-`, `==`, `!=`, `<`, `<=`, `>`,
`>=`, `in`, `&&`, `||` (short-circuit), parentheses, and the functions `int`, `double`,
`string`, `bool`, `size` and `parseJson`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any

Evaluator = Callable[[Mapping[str, Any]], Any]


class ExpressionError(ValueError):
    """The expression is malformed, unsupported, or fails on the given values."""


_TOKEN = re.compile(
    r"""\s*(?:
    (?P<num>(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?u?)
    |(?P<str>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
    |(?P<op>==|!=|<=|>=|&&|\|\||[<>!()\[\].,\-])
    |(?P<ident>[A-Za-z_][A-Za-z_0-9]*)
    )""",
    re.VERBOSE,
)
_ESCAPE = re.compile(r"\\(.)")


def _tokenize(text: str) -> list[tuple[str, Any]]:
    tokens: list[tuple[str, Any]] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            raise ExpressionError(f"unexpected character at {pos} in {text!r}")
        pos = match.end()
        kind = match.lastgroup
        if kind is None:
            raise ExpressionError(f"unexpected character at {pos} in {text!r}")
        raw = match.group(kind)
        if kind == "num":
            raw = raw.rstrip("u")
            is_float = any(c in raw for c in ".eE")
            tokens.append(("lit", float(raw) if is_float else int(raw)))
        elif kind == "str":
            tokens.append(("lit", _ESCAPE.sub(r"\1", raw[1:-1])))
        elif kind == "ident" and raw in ("true", "false", "null"):
            tokens.append(("lit", {"true": True, "false": False, "null": None}[raw]))
        else:
            tokens.append((kind, raw))
    tokens.append(("end", None))
    return tokens


def _either(left: Evaluator, right: Evaluator) -> Evaluator:
    return lambda v: bool(left(v)) or bool(right(v))


def _both(left: Evaluator, right: Evaluator) -> Evaluator:
    return lambda v: bool(left(v)) and bool(right(v))


def _member(base: Evaluator, key: str) -> Evaluator:
    return lambda v: _index(base(v), key)


def _item(base: Evaluator, key: Evaluator) -> Evaluator:
    return lambda v: _index(base(v), key(v))


def _int(value: Any) -> int:
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ExpressionError(f"int() of {value}")
        return int(value)
    return int(value)


def _string(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, list | dict):
        return json.dumps(value)
    return str(value)


def _bool(value: Any) -> bool:
    if isinstance(value, str):
        if value.lower() not in ("true", "false"):
            raise ExpressionError(f"bool() of {value!r}")
        return value.lower() == "true"
    return bool(value)


_FUNCTIONS: dict[str, Callable[[Any], Any]] = {
    "int": _int,
    "double": float,
    "string": _string,
    "bool": _bool,
    "size": len,
    "parseJson": json.loads,
}


def _compare(op: str, left: Any, right: Any) -> bool:
    # CEL never equates a bool with a number; Python would (True == 1).
    if isinstance(left, bool) != isinstance(right, bool) and op in ("==", "!="):
        return op == "!="
    match op:
        case "==":
            return bool(left == right)
        case "!=":
            return bool(left != right)
        case "<":
            return bool(left < right)
        case "<=":
            return bool(left <= right)
        case ">":
            return bool(left > right)
        case ">=":
            return bool(left >= right)
        case "in":
            return left in right
    raise ExpressionError(f"unknown operator {op}")


class _Parser:
    def __init__(self, text: str) -> None:
        self._text = text
        self._tokens = _tokenize(text)
        self._pos = 0

    def _peek(self) -> tuple[str, Any]:
        return self._tokens[self._pos]

    def _next(self) -> tuple[str, Any]:
        token = self._tokens[self._pos]
        self._pos += 1
        return token

    def _expect(self, value: str) -> None:
        kind, got = self._next()
        if got != value or kind not in ("op", "ident"):
            raise ExpressionError(f"expected {value!r}, got {got!r} in {self._text!r}")

    def parse(self) -> Evaluator:
        node = self._or()
        if self._peek()[0] != "end":
            raise ExpressionError(f"unexpected {self._peek()[1]!r} in {self._text!r}")
        return node

    def _or(self) -> Evaluator:
        node = self._and()
        while self._peek() == ("op", "||"):
            self._next()
            left, right = node, self._and()
            node = _either(left, right)
        return node

    def _and(self) -> Evaluator:
        node = self._relation()
        while self._peek() == ("op", "&&"):
            self._next()
            left, right = node, self._relation()
            node = _both(left, right)
        return node

    def _relation(self) -> Evaluator:
        node = self._unary()
        kind, value = self._peek()
        if (kind == "op" and value in ("==", "!=", "<", "<=", ">", ">=")) or (
            kind == "ident" and value == "in"
        ):
            self._next()
            left, right = node, self._unary()
            return lambda v: _compare(value, left(v), right(v))
        return node

    def _unary(self) -> Evaluator:
        if self._peek() == ("op", "!"):
            self._next()
            inner = self._unary()
            return lambda v: not inner(v)
        if self._peek() == ("op", "-"):
            self._next()
            inner = self._unary()
            return lambda v: -inner(v)
        return self._postfix()

    def _postfix(self) -> Evaluator:
        node = self._primary()
        while True:
            kind, value = self._peek()
            if (kind, value) == ("op", "."):
                self._next()
                kind, member = self._next()
                if kind != "ident":
                    raise ExpressionError(f"expected a member name in {self._text!r}")
                node = _member(node, member)
            elif (kind, value) == ("op", "["):
                self._next()
                key_node = self._or()
                self._expect("]")
                node = _item(node, key_node)
            else:
                return node

    def _primary(self) -> Evaluator:
        kind, value = self._next()
        if kind == "lit":
            return lambda v: value
        if (kind, value) == ("op", "("):
            node = self._or()
            self._expect(")")
            return node
        if (kind, value) == ("op", "["):
            items: list[Evaluator] = []
            while self._peek() != ("op", "]"):
                items.append(self._or())
                if self._peek() == ("op", ","):
                    self._next()
            self._next()
            return lambda v: [item(v) for item in items]
        if kind == "ident":
            if self._peek() == ("op", "("):
                function = _FUNCTIONS.get(value)
                if function is None:
                    raise ExpressionError(f"unsupported function {value}() in {self._text!r}")
                self._next()
                argument = self._or()
                self._expect(")")
                return lambda v: function(argument(v))
            return lambda v: _variable(v, value)
        raise ExpressionError(f"unexpected {value!r} in {self._text!r}")


def _variable(variables: Mapping[str, Any], name: str) -> Any:
    try:
        return variables[name]
    except KeyError:
        raise ExpressionError(f"unknown variable {name!r}") from None


def _index(base: Any, key: Any) -> Any:
    try:
        return base[key]
    except (KeyError, IndexError, TypeError):
        raise ExpressionError(f"no {key!r} in {type(base).__name__} value") from None


@lru_cache(maxsize=256)
def compile_expression(text: str) -> Evaluator:
    """Parses an expression once; the result evaluates it against a variables mapping."""
    return _Parser(text).parse()


def evaluate(text: str, variables: Mapping[str, Any]) -> Any:
    """Evaluates an expression; ExpressionError when it is malformed or fails."""
    try:
        return compile_expression(text)(variables)
    except ExpressionError:
        raise
    except (TypeError, ValueError, ArithmeticError) as exc:
        raise ExpressionError(f"cannot evaluate {text!r}: {exc}") from None


def evaluate_condition(text: str, parameter_values: Mapping[str, Any]) -> bool:
    """Evaluates a task's triggerPolicy.condition over its resolved input parameters."""
    result = evaluate(text, {"inputs": {"parameter_values": parameter_values}})
    if not isinstance(result, bool):
        raise ExpressionError(f"condition {text!r} is not a boolean: {result!r}")
    return result


def select(text: str, value: Any) -> Any:
    """Applies a parameterExpressionSelector to a value (bound to `string_value`)."""
    if not isinstance(value, str):
        # Upstream outputs here are typed values, while KFP's selectors expect the text form.
        value = json.dumps(value)
    return evaluate(text, {"string_value": value})
