"""The expression language of definitions (SPEC §6): ``where`` conditions and audience ``when``.

Contract
--------
``compile_expr(src)`` parses one expression and returns an :class:`Expr`, or raises
:class:`ExprError` (``message``, 1-based ``column``). ``Expr.eval(env)`` evaluates it against an
environment (a ``Mapping`` of nested mappings, or a callable taking a path tuple) and never
raises, whatever the environment holds. ``Expr.fields()`` is the set of paths it reads (the
wiring uses it for dependencies and cycle checks). ``str(expr)`` prints a canonical form that
parses back to the same tree.

``to_function(expr)`` / ``to_predicate(expr)`` compile a tree once into a plain Python function
equal to ``expr.eval`` / ``expr.holds`` on every environment (what the per-event paths call): the
function's source is generated from the tree alone — every name, string and number of the
expression is bound as a constant, never spliced into the source — and specialised for a ``dict``
environment; any other environment (a callable, another ``Mapping``), and any value whose type
is not exactly ``None``/``bool``/``int``/``float``/``str``, goes through the same functions the
tree walker uses. ``path_getter(parts)`` is :func:`lookup` of one path, compiled the same way.

The language:

* field paths: dotted names, ``properties.category``, ``context.page.path``, ``traits.plan``,
  ``computed.orders_7d``, ``audience.vip``, or a profile field by name (``rfm_segment``);
* literals: numbers (``3``, ``-2.5``), ``"strings"`` (``\\"``, ``\\\\``, ``\\n``, ``\\t``
  escapes), ``true``, ``false``, ``null``;
* ``== != < <= > >=`` (non-associative: ``a == b == c`` is an error), ``x in [lit, ...]``,
  ``and``, ``or``, ``not`` (lowest to highest: ``or``, ``and``, ``not``, comparison),
  parentheses.

Values, precisely:

* a missing field is ``null``. A comparison with the literal ``null`` is a presence check:
  ``x == null`` is true only for a missing/null ``x``, ``x != null`` only for a present one
  (and ``null`` in an ``in`` list matches a missing ``x``). Every other comparison involving a
  null value is false — ``properties.x != 5`` is false when ``x`` is missing;
* values compare only within one type: numbers with numbers (``true`` is not a number),
  strings with strings (code-point order), booleans with booleans (``==``/``!=`` only);
  a comparison between mismatched types — including ``!=`` — is false, never an error.
  So ``"a" != 1`` is false while ``not ("a" == 1)`` is true;
* ``x in [a, b]`` is true iff ``x == a or x == b`` by the rule above;
* ``and``/``or``/``not`` take an operand as true iff it is exactly ``true`` (so a bare
  ``audience.vip`` works, and a missing field is false); they always give a boolean.

>>> e = compile_expr('computed.shoe_views_7d >= 3 and computed.orders_7d == 0')
>>> e.eval({"computed": {"shoe_views_7d": 4, "orders_7d": 0}})
True
>>> e.eval({})
False
>>> sorted(e.fields())
[('computed', 'orders_7d'), ('computed', 'shoe_views_7d')]
>>> compile_expr('properties.x == null').eval({"properties": {}})
True
>>> compile_expr('properties.x != 5').eval({})
False
>>> compile_expr('rfm_segment in ["champions", "loyal"]').eval({"rfm_segment": "loyal"})
True
>>> str(compile_expr('not(a==1 or b<"x")'))
'not (a == 1 or b < "x")'
>>> compile_expr('a == ')
Traceback (most recent call last):
...
operators.expr.ExprError: column 6: expected a value, found the end
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from mypy_extensions import mypyc_attr

__all__ = ["Expr", "ExprError", "compile_expr", "Lit", "Path", "Cmp", "In", "Not", "And", "Or", "CMP_OPS", "to_function",
           "to_predicate", "path_getter"]

Env = Callable[[tuple[str, ...]], Any] | Mapping[str, Any]
CMP_OPS = ("==", "!=", "<", "<=", ">", ">=")
KEYWORDS = frozenset({"and", "or", "not", "in", "true", "false", "null"})
MAX_LEN = 4096
MAX_DEPTH = 64


class ExprError(ValueError):
    """A syntax error: ``message`` and the 1-based ``column`` it points at."""

    def __init__(self, message: str, column: int) -> None:
        super().__init__(f"column {column}: {message}")
        self.message = message
        self.column = column


# ---------------------------------------------------------------- values


def _kind(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int | float):
        return "num"
    if isinstance(v, str):
        return "str"
    return "other"


def compare(op: str, a: Any, b: Any) -> bool:
    """``a op b`` between two values (module doc): false whenever either is null or the types
    differ. Never raises. (A comparison with the *literal* ``null`` is :func:`null_check`.)"""
    ka, kb = _kind(a), _kind(b)
    if ka != kb or ka in ("other", "null"):
        return False
    if ka == "bool" and op not in ("==", "!="):
        return False
    if op == "==":
        return a == b
    if op == "!=":
        return a != b
    if op == "<":
        return a < b
    if op == "<=":
        return a <= b
    if op == ">":
        return a > b
    return a >= b


def null_check(op: str, v: Any) -> bool:
    """``v op null``: ``==`` is "missing", ``!=`` is "present", the orderings are false."""
    if op == "==":
        return v is None
    if op == "!=":
        return v is not None
    return False


def lookup(env: Env, path: tuple[str, ...]) -> Any:
    """The value at ``path`` in ``env`` (``None`` when missing). Never raises."""
    if type(env) is dict:  # the common case, without the Mapping ABC checks
        cur: Any = env
        for part in path:
            if type(cur) is not dict and not isinstance(cur, Mapping):
                return None
            cur = cur.get(part)
            if cur is None:
                return None
        return cur
    if callable(env) and not isinstance(env, Mapping):
        try:
            return env(path)
        except Exception:  # an env that fails reads as a missing field
            return None
    return _rest(env, path)


# ---------------------------------------------------------------- the tree


@mypyc_attr(native_class=False)  # the base of frozen, pickled nodes (operators/__init__.py)
class Expr:
    """A compiled expression: ``eval(env)``, ``fields()``, ``str()`` (canonical source)."""

    __slots__ = ()

    def eval(self, env: Env) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def fields(self) -> frozenset[tuple[str, ...]]:  # pragma: no cover - abstract
        raise NotImplementedError

    def holds(self, env: Env) -> bool:
        """True iff the expression evaluates to exactly ``true``."""
        return self.eval(env) is True


def _fmt_lit(v: Any) -> str:
    if v is None:
        return "null"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t") + '"'
    return repr(v)


@mypyc_attr(native_class=False)  # frozen and pickled: a Python class (operators/__init__.py)
@dataclass(frozen=True, slots=True)
class Lit(Expr):
    value: Any

    def eval(self, env: Env) -> Any:
        return self.value

    def fields(self) -> frozenset[tuple[str, ...]]:
        return frozenset()

    def __str__(self) -> str:
        return _fmt_lit(self.value)


@mypyc_attr(native_class=False)  # frozen and pickled: a Python class (operators/__init__.py)
@dataclass(frozen=True, slots=True)
class Path(Expr):
    parts: tuple[str, ...]

    def eval(self, env: Env) -> Any:
        return lookup(env, self.parts)

    def fields(self) -> frozenset[tuple[str, ...]]:
        return frozenset({self.parts})

    def __str__(self) -> str:
        return ".".join(self.parts)


@mypyc_attr(native_class=False)  # frozen and pickled: a Python class (operators/__init__.py)
@dataclass(frozen=True, slots=True)
class Cmp(Expr):
    op: str
    left: Expr
    right: Expr

    def eval(self, env: Env) -> bool:
        if isinstance(self.right, Lit) and self.right.value is None:
            return null_check(self.op, self.left.eval(env))
        if isinstance(self.left, Lit) and self.left.value is None:
            return null_check(self.op, self.right.eval(env))
        return compare(self.op, self.left.eval(env), self.right.eval(env))

    def fields(self) -> frozenset[tuple[str, ...]]:
        return self.left.fields() | self.right.fields()

    def __str__(self) -> str:
        return f"{_operand(self.left)} {self.op} {_operand(self.right)}"


@mypyc_attr(native_class=False)  # frozen and pickled: a Python class (operators/__init__.py)
@dataclass(frozen=True, slots=True)
class In(Expr):
    item: Expr
    values: tuple[Any, ...]

    def eval(self, env: Env) -> bool:
        v = self.item.eval(env)
        return any(v is None if x is None else compare("==", v, x) for x in self.values)

    def fields(self) -> frozenset[tuple[str, ...]]:
        return self.item.fields()

    def __str__(self) -> str:
        return f"{_operand(self.item)} in [{', '.join(_fmt_lit(v) for v in self.values)}]"


@mypyc_attr(native_class=False)  # frozen and pickled: a Python class (operators/__init__.py)
@dataclass(frozen=True, slots=True)
class Not(Expr):
    arg: Expr

    def eval(self, env: Env) -> bool:
        return self.arg.eval(env) is not True

    def fields(self) -> frozenset[tuple[str, ...]]:
        return self.arg.fields()

    def __str__(self) -> str:
        inner = str(self.arg)
        return f"not ({inner})" if isinstance(self.arg, And | Or) else f"not {inner}"


@mypyc_attr(native_class=False)  # frozen and pickled: a Python class (operators/__init__.py)
@dataclass(frozen=True, slots=True)
class And(Expr):
    left: Expr
    right: Expr

    def eval(self, env: Env) -> bool:
        return self.left.eval(env) is True and self.right.eval(env) is True

    def fields(self) -> frozenset[tuple[str, ...]]:
        return self.left.fields() | self.right.fields()

    def __str__(self) -> str:
        lhs = f"({self.left})" if isinstance(self.left, Or) else str(self.left)
        rhs = f"({self.right})" if isinstance(self.right, And | Or) else str(self.right)
        return f"{lhs} and {rhs}"


@mypyc_attr(native_class=False)  # frozen and pickled: a Python class (operators/__init__.py)
@dataclass(frozen=True, slots=True)
class Or(Expr):
    left: Expr
    right: Expr

    def eval(self, env: Env) -> bool:
        return self.left.eval(env) is True or self.right.eval(env) is True

    def fields(self) -> frozenset[tuple[str, ...]]:
        return self.left.fields() | self.right.fields()

    def __str__(self) -> str:
        rhs = f"({self.right})" if isinstance(self.right, Or) else str(self.right)
        return f"{self.left} or {rhs}"


def _operand(e: Expr) -> str:
    """A comparison operand: anything but a literal or a path is parenthesized."""
    return str(e) if isinstance(e, Lit | Path) else f"({e})"


# ---------------------------------------------------------------- tokens and parser

_TOKEN = re.compile(
    r"""(?P<ws>\s+)
      | (?P<num>-?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?)
      | (?P<str>"(?:[^"\\\n]|\\.)*")
      | (?P<name>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)
      | (?P<op>==|!=|<=|>=|<|>|\(|\)|\[|\]|,)
    """,
    re.VERBOSE,
)
_ESCAPES = {'"': '"', "\\": "\\", "n": "\n", "t": "\t"}


@mypyc_attr(native_class=False)  # frozen and pickled: a Python class (operators/__init__.py)
@dataclass(frozen=True, slots=True)
class _Tok:
    kind: str  # num | str | name | kw | op | end
    text: str
    col: int
    value: Any = None


def _tokens(src: str) -> list[_Tok]:
    out: list[_Tok] = []
    pos = 0
    while pos < len(src):
        m = _TOKEN.match(src, pos)
        if m is None:
            ch = src[pos]
            if ch == '"':
                raise ExprError("unterminated string", pos + 1)
            raise ExprError(f"unexpected character {ch!r}", pos + 1)
        kind = m.lastgroup or ""
        text = m.group()
        col = pos + 1
        pos = m.end()
        if kind == "ws":
            continue
        if kind == "num":
            val: float | int = float(text) if any(c in text for c in ".eE") else int(text)
            if isinstance(val, float) and not math.isfinite(val):
                raise ExprError(f"number out of range: {text}", col)
            out.append(_Tok("num", text, col, val))
        elif kind == "str":
            body, chars, i = text[1:-1], [], 0
            while i < len(body):
                c = body[i]
                if c == "\\":
                    esc = body[i + 1]
                    if esc not in _ESCAPES:
                        raise ExprError(f"unknown escape \\{esc}", col + i + 1)
                    chars.append(_ESCAPES[esc])
                    i += 2
                else:
                    chars.append(c)
                    i += 1
            out.append(_Tok("str", text, col, "".join(chars)))
        elif kind == "name":
            parts = text.split(".")
            if len(parts) == 1 and text in KEYWORDS:
                out.append(_Tok("kw", text, col))
            else:
                bad = [p for p in parts if p in KEYWORDS]
                if bad:
                    raise ExprError(f"{bad[0]!r} is a keyword, not a field name", col)
                out.append(_Tok("name", text, col, tuple(parts)))
        else:
            out.append(_Tok("op", text, col))
    out.append(_Tok("end", "", len(src) + 1))
    return out


def _describe(t: _Tok) -> str:
    return "the end" if t.kind == "end" else repr(t.text)


class _Parser:
    def __init__(self, src: str) -> None:
        self.toks = _tokens(src)
        self.i = 0
        self.depth = 0

    def peek(self) -> _Tok:
        return self.toks[self.i]

    def take(self) -> _Tok:
        t = self.toks[self.i]
        self.i += 1
        return t

    def at(self, kind: str, text: str) -> bool:
        t = self.peek()
        return t.kind == kind and t.text == text

    def expect(self, kind: str, text: str) -> _Tok:
        t = self.peek()
        if t.kind != kind or t.text != text:
            raise ExprError(f"expected {text!r}, found {_describe(t)}", t.col)
        return self.take()

    def parse(self) -> Expr:
        e = self.or_()
        t = self.peek()
        if t.kind != "end":
            raise ExprError(f"unexpected {_describe(t)}", t.col)
        return e

    def _nest(self, col: int) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ExprError(f"nested deeper than {MAX_DEPTH}", col)

    def or_(self) -> Expr:
        e = self.and_()
        while self.at("kw", "or"):
            self.take()
            e = Or(e, self.and_())
        return e

    def and_(self) -> Expr:
        e = self.not_()
        while self.at("kw", "and"):
            self.take()
            e = And(e, self.not_())
        return e

    def not_(self) -> Expr:
        if self.at("kw", "not"):
            t = self.take()
            self._nest(t.col)
            e = Not(self.not_())
            self.depth -= 1
            return e
        return self.cmp()

    def cmp(self) -> Expr:
        left = self.primary()
        t = self.peek()
        if t.kind == "op" and t.text in CMP_OPS:
            self.take()
            right = self.primary()
            nxt = self.peek()
            if (nxt.kind == "op" and nxt.text in CMP_OPS) or (nxt.kind == "kw" and nxt.text == "in"):
                raise ExprError("comparisons do not chain: use 'and' or parentheses", nxt.col)
            return Cmp(t.text, left, right)
        if t.kind == "kw" and t.text == "in":
            self.take()
            values = self.list_()
            nxt = self.peek()
            if (nxt.kind == "op" and nxt.text in CMP_OPS) or (nxt.kind == "kw" and nxt.text == "in"):
                raise ExprError("comparisons do not chain: use 'and' or parentheses", nxt.col)
            return In(left, values)
        return left

    def list_(self) -> tuple[Any, ...]:
        self.expect("op", "[")
        values: list[Any] = []
        if self.at("op", "]"):
            self.take()
            return ()
        while True:
            values.append(self.literal())
            if self.at("op", ","):
                self.take()
                continue
            self.expect("op", "]")
            return tuple(values)

    def literal(self) -> Any:
        t = self.peek()
        if t.kind in ("num", "str"):
            self.take()
            return t.value
        if t.kind == "kw" and t.text in ("true", "false", "null"):
            self.take()
            return {"true": True, "false": False, "null": None}[t.text]
        raise ExprError(f"expected a literal in the list, found {_describe(t)}", t.col)

    def primary(self) -> Expr:
        t = self.peek()
        if t.kind == "op" and t.text == "(":
            self.take()
            self._nest(t.col)
            e = self.or_()
            self.depth -= 1
            self.expect("op", ")")
            return e
        if t.kind == "name":
            self.take()
            return Path(t.value)
        if t.kind in ("num", "str") or (t.kind == "kw" and t.text in ("true", "false", "null")):
            return Lit(self.literal())
        raise ExprError(f"expected a value, found {_describe(t)}", t.col)


def compile_expr(src: str) -> Expr:
    """Parse ``src``; raise :class:`ExprError` with a column on any syntax error."""
    if not isinstance(src, str):
        raise ExprError("an expression must be a string", 1)
    if len(src) > MAX_LEN:
        raise ExprError(f"longer than {MAX_LEN} characters", MAX_LEN + 1)
    if not src.strip():
        raise ExprError("empty expression", 1)
    return _Parser(src).parse()


# ---------------------------------------------------------------- compilation to Python functions


def _rest(cur: Any, parts: tuple[str, ...]) -> Any:
    """:func:`lookup`'s loop from a value part-way down a path (``cur`` need not be a mapping)."""
    for part in parts:
        if not isinstance(cur, Mapping):
            return None
        cur = cur.get(part)
        if cur is None:
            return None
    return cur


def _in_slow(v: Any, values: tuple[Any, ...]) -> bool:
    """:meth:`In.eval` for an item value already read."""
    return any(v is None if x is None else compare("==", v, x) for x in values)


_NUM = (int, float)
_PY_OPS = {"==": "==", "!=": "!=", "<": "<", "<=": "<=", ">": ">", ">=": ">="}


def _exact_kind(v: Any) -> str:
    """A literal's kind (literals are exactly None, bool, int, float or str)."""
    return _kind(v)


class _Gen:
    """Python source for one tree: every value of the expression is a named constant."""

    def __init__(self) -> None:
        self.ns: dict[str, Any] = {"_NUM": _NUM, "_cmp": compare, "_in": _in_slow, "_rest": _rest}
        self.n = 0

    def const(self, v: Any) -> str:
        if v is None or v is True or v is False:
            return repr(v)
        name = f"_k{len(self.ns)}"
        self.ns[name] = v
        return name

    def tmp(self) -> str:
        self.n += 1
        return f"_t{self.n}"

    def path(self, parts: tuple[str, ...]) -> str:
        code = f"env.get({self.const(parts[0])})"
        for i in range(1, len(parts)):
            t = self.tmp()
            code = f"({t}.get({self.const(parts[i])}) if type({t} := {code}) is dict else _rest({t}, {self.const(parts[i:])}))"
        return code

    def value(self, e: Expr) -> str:
        """An expression of ``e.eval(env)`` (``env`` a dict)."""
        if isinstance(e, Lit):
            return self.const(e.value)
        if isinstance(e, Path):
            return self.path(e.parts)
        return self.boolean(e)

    def boolean(self, e: Expr) -> str:
        """An expression of ``e.eval(env) is True`` (exactly a bool)."""
        if isinstance(e, Lit):
            return repr(e.value is True)
        if isinstance(e, Path):
            return f"({self.path(e.parts)} is True)"
        if isinstance(e, Not):
            return f"(not {self.boolean(e.arg)})"
        if isinstance(e, And | Or):
            kind = type(e)
            terms: list[Expr] = []
            stack: list[Expr] = [e]
            while stack:  # the chain a and b and c, left to right, without recursion
                x = stack.pop()
                if type(x) is kind:
                    stack.append(x.right)  # type: ignore[attr-defined]
                    stack.append(x.left)  # type: ignore[attr-defined]
                else:
                    terms.append(x)
            word = " and " if kind is And else " or "
            return "(" + word.join(self.boolean(x) for x in terms) + ")"
        if isinstance(e, In):
            return self.in_(e)
        assert isinstance(e, Cmp)
        return self.cmp(e)

    def in_(self, e: In) -> str:
        if isinstance(e.item, Lit):
            return repr(e.eval({}))
        vals = e.values
        nums = tuple(x for x in vals if _exact_kind(x) == "num")
        strs = tuple(x for x in vals if _exact_kind(x) == "str")
        bools = tuple(x for x in vals if _exact_kind(x) == "bool")
        t = self.tmp()

        def member(xs: tuple[Any, ...]) -> str:
            return f"({t} in {self.const(xs)})" if xs else "False"

        return (f"({any(x is None for x in vals)!r} if ({t} := {self.value(e.item)}) is None else {member(nums)} if type({t}) in _NUM "
                f"else {member(strs)} if type({t}) is str else {member(bools)} if type({t}) is bool else _in({t}, {self.const(vals)}))")

    def cmp(self, e: Cmp) -> str:
        op, left, right = e.op, e.left, e.right
        for lit, other in ((right, left), (left, right)):
            if isinstance(lit, Lit) and lit.value is None:  # a presence check
                if isinstance(other, Lit):
                    return repr(null_check(op, other.value))
                if op == "==":
                    return f"({self.value(other)} is None)"
                return f"({self.value(other)} is not None)" if op == "!=" else "False"
        if isinstance(left, Lit) and isinstance(right, Lit):
            return repr(compare(op, left.value, right.value))
        if not isinstance(left, Lit) and not isinstance(right, Lit):
            return f"_cmp({op!r}, {self.value(left)}, {self.value(right)})"
        if isinstance(right, Lit):
            k, other, lit_right = right.value, left, True
        else:
            assert isinstance(left, Lit)  # exactly one side is a literal here
            k, other, lit_right = left.value, right, False
        kind = _exact_kind(k)
        t = self.tmp()
        x = self.value(other)
        if kind == "bool":
            if op == "==":
                return f"({x} is {k!r})"
            return f"({x} is {(not k)!r})" if op == "!=" else "False"
        kc = self.const(k)
        py = _PY_OPS[op]
        fast = f"{t} {py} {kc}" if lit_right else f"{kc} {py} {t}"
        slow = f"_cmp({op!r}, {t}, {kc})" if lit_right else f"_cmp({op!r}, {kc}, {t})"
        test = f"type({t} := {x}) in _NUM" if kind == "num" else f"type({t} := {x}) is str"
        return f"({fast} if {test} else False if {t} is None else {slow})"


def _build(e: Expr, holds: bool) -> Callable[[Env], Any]:
    fallback = e.holds if holds else e.eval
    try:
        g = _Gen()
        body = g.boolean(e) if holds else g.value(e)
        g.ns["_slow"] = fallback
        src = f"def _f(env):\n    if type(env) is not dict:\n        return _slow(env)\n    return {body}\n"
        ns: dict[str, Any] = {"__builtins__": {"type": type, "dict": dict, "str": str, "bool": bool}, **g.ns}
        exec(compile(src, "<expr>", "exec"), ns)  # the source is ours: names and constants only
        return ns["_f"]  # type: ignore[no-any-return]
    except (SyntaxError, RecursionError, MemoryError, ValueError):  # too deep for Python's parser: walk the tree
        return fallback


def to_function(e: Expr) -> Callable[[Env], Any]:
    """A function equal to ``e.eval`` on every environment, compiled once (see the module doc).

    >>> f = to_function(compile_expr('properties.x >= 3 and properties.y in ["a", null]'))
    >>> f({"properties": {"x": 3}}), f({"properties": {"x": 3, "y": "b"}}), f(lambda p: 5 if p[1] == "x" else None)
    (True, False, True)
    """
    return _build(e, False)


def to_predicate(e: Expr) -> Callable[[Env], bool]:
    """A function equal to ``e.holds`` (``eval(env) is True``) on every environment."""
    return _build(e, True)


def path_getter(parts: tuple[str, ...]) -> Callable[[Env], Any]:
    """A function equal to ``lookup(env, parts)`` on every environment.

    >>> path_getter(("properties", "revenue"))({"properties": {"revenue": 5}})
    5
    """
    return _build(Path(parts), False)
