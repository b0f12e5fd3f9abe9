"""Late audiences: what is left of a ``when`` once everything the per-user step knows is filled in.

Contract
--------
Some profile fields are scored *after* the per-user step: the RFM scores and segment (against
the whole population, by the sinks and the RFM refresher) and the models' outputs
(``anomaly_score``, ``suspect``, ``purchase_propensity``, written as patches). They are
:data:`LATE_FIELDS`. An audience is **late** when its ``when`` reads one of them, directly or
through ``audience.x`` of a late audience (:attr:`operators.definitions.Definitions.late`).

The per-user step cannot decide a late audience, but it knows everything else its ``when``
reads. :func:`residual` evaluates the expression *partially*: every computed trait, trait,
profile field and early audience is replaced by its value and folded, and what is left reads
only late fields and late audiences — ``true``, ``false`` or a small tree (the **rule**). The
profile script (``liveprofile/store/lua/profile.lua``) stores the rules in the profile's
``audience_rules`` field and evaluates them, atomically with the write, whenever the rules or a
late field change — so membership has one writer (the script) and a late audience follows an
RFM rescore or a model patch at once, with no event from the user.

A rule is JSON (arrays, so it survives Lua's cjson), mirroring :mod:`operators.expr` exactly:

* ``true`` / ``false``; ``["f", name]`` a late field (typed by its schema kind as
  :func:`operators.audiences.profile_env` types it: missing or unparsable is null);
  ``["a", name]`` a late audience (decided earlier in the same pass; dependency order);
  ``["v", value]`` a known value (a number, string or boolean: a known null or object makes its
  comparison false already, so it never appears);
* ``["cmp", op, l, r]`` :func:`operators.expr.compare`; ``["nul", op, x]`` the comparison with the
  *literal* ``null`` (:func:`operators.expr.null_check`); ``["in", x, [values]]`` with ``null`` in
  the list matching a missing ``x``; ``["not", x]``, ``["and", l, r]``, ``["or", l, r]``
  (an operand counts iff it is exactly ``true``).

:func:`eval_rule` is the reference evaluator of a rule (the Lua one is checked against it by
``tests/store/test_late_audiences.py``); the property ``eval_rule(residual(e, known), late) ==
e.eval(known | late)`` is ``tests/operators/test_residual.py``'s. Pure: no clock, no I/O.

>>> from operators.expr import compile_expr
>>> e = compile_expr('rfm_segment == "champions" and computed.orders_90d >= 2')
>>> residual(e, {"computed": {"orders_90d": 3}}, frozenset())
['cmp', '==', ['f', 'rfm_segment'], ['v', 'champions']]
>>> residual(e, {"computed": {"orders_90d": 1}}, frozenset())
False
>>> eval_rule(residual(e, {"computed": {"orders_90d": 3}}, frozenset()), {"rfm_segment": "champions"}, {})
True
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from operators.definitions import LATER_FIELDS as LATE_FIELDS
from operators.expr import And, Cmp, Expr, In, Lit, Not, Or, Path, compare, lookup, null_check

__all__ = ["LATE_FIELDS", "Rule", "residual", "eval_rule"]


Rule = Any  # bool | list (see the module doc)
_UNKNOWN = object()


class _Sym:
    """A value the step does not know: a late field or a late audience, as its rule node."""

    __slots__ = ("node",)

    def __init__(self, node: list[Any]) -> None:
        self.node = node


def _known_node(v: Any) -> Any:
    """A known operand as a rule node, or :data:`_UNKNOWN` when no comparison with it can hold."""
    if isinstance(v, bool | str | int) or (isinstance(v, float) and math.isfinite(v)):
        return ["v", v]
    return _UNKNOWN  # null, an object, or a float JSON cannot carry (computed values are never NaN/inf)


def residual(e: Expr, env: Mapping[str, Any], late_audiences: frozenset[str]) -> Rule:
    """``e`` with everything ``env`` holds filled in (``env``: the early environment, as
    :func:`operators.audiences.evaluate` builds it — profile fields, ``traits``, ``computed``,
    ``audience`` with the early audiences decided); late fields and ``audience.x`` for ``x`` in
    ``late_audiences`` stay symbolic. Returns ``True``, ``False`` or a rule (module doc)."""
    r = _part(e, env, late_audiences)
    if isinstance(r, _Sym):
        return _truth(r.node)
    return r is True


def _truth(node: list[Any]) -> list[Any]:
    """``node`` as "is exactly true": a comparison or connective already is a boolean; a bare
    field or audience is wrapped (``["and", node, true]``)."""
    return ["and", node, True] if node[0] in ("f", "a", "v") else node


def _part(e: Expr, env: Mapping[str, Any], late: frozenset[str]) -> Any:
    """A value (what ``e.eval`` would give) or a :class:`_Sym` holding the rule node."""
    t = type(e)
    if t is Lit:
        return e.value  # type: ignore[attr-defined]
    if t is Path:
        parts = e.parts  # type: ignore[attr-defined]
        if parts[0] in LATE_FIELDS:
            return _Sym(["f", parts[0]])  # late fields are scalars (validation refuses a.b on them)
        if len(parts) == 2 and parts[0] == "audience" and parts[1] in late:
            return _Sym(["a", parts[1]])
        return lookup(env, parts)
    if t is Cmp:
        op, left, right = e.op, e.left, e.right  # type: ignore[attr-defined]
        if type(right) is Lit and right.value is None:
            return _null(op, _part(left, env, late))
        if type(left) is Lit and left.value is None:
            return _null(op, _part(right, env, late))
        a, b = _part(left, env, late), _part(right, env, late)
        if not isinstance(a, _Sym) and not isinstance(b, _Sym):
            return compare(op, a, b)
        na = a.node if isinstance(a, _Sym) else _known_node(a)
        nb = b.node if isinstance(b, _Sym) else _known_node(b)
        if na is _UNKNOWN or nb is _UNKNOWN:
            return False  # a known null or object: compare() is false whatever the other side is
        return _Sym(["cmp", op, na, nb])
    if t is In:
        x = _part(e.item, env, late)  # type: ignore[attr-defined]
        values = e.values  # type: ignore[attr-defined]
        if not isinstance(x, _Sym):
            return any(x is None if v is None else compare("==", x, v) for v in values)
        return _Sym(["in", x.node, list(values)])
    if t is Not:
        x = _part(e.arg, env, late)  # type: ignore[attr-defined]
        if not isinstance(x, _Sym):
            return x is not True
        return _Sym(["not", x.node])
    if t is And or t is Or:
        a, b = _part(e.left, env, late), _part(e.right, env, late)  # type: ignore[attr-defined]
        if t is And:
            if (not isinstance(a, _Sym) and a is not True) or (not isinstance(b, _Sym) and b is not True):
                return False
        elif (not isinstance(a, _Sym) and a is True) or (not isinstance(b, _Sym) and b is True):
            return True
        if not isinstance(a, _Sym) and not isinstance(b, _Sym):
            return a is True and b is True if t is And else a is True or b is True
        if not isinstance(a, _Sym):
            return _Sym(_truth(b.node))  # the other side decides, as "exactly true"
        if not isinstance(b, _Sym):
            return _Sym(_truth(a.node))
        return _Sym(["and" if t is And else "or", a.node, b.node])
    return e.eval(env)  # pragma: no cover - every node type is above


def _null(op: str, x: Any) -> Any:
    if isinstance(x, _Sym):
        return _Sym(["nul", op, x.node]) if op in ("==", "!=") else False
    return null_check(op, x)


def eval_rule(rule: Rule, late: Mapping[str, Any], audiences: Mapping[str, bool]) -> bool:
    """The reference evaluation of a rule: ``late`` holds the typed late fields (missing = null),
    ``audiences`` the late audiences decided so far. True iff the rule holds (exactly ``true``)."""
    return _ev(rule, late, audiences) is True


def _ev(n: Any, late: Mapping[str, Any], auds: Mapping[str, bool]) -> Any:
    if n is True or n is False:
        return n
    tag = n[0]
    if tag == "f":
        return late.get(n[1])
    if tag == "a":
        return auds.get(n[1]) is True
    if tag == "v":
        return n[1]
    if tag == "cmp":
        return compare(n[1], _ev(n[2], late, auds), _ev(n[3], late, auds))
    if tag == "nul":
        return null_check(n[1], _ev(n[2], late, auds))
    if tag == "in":
        x = _ev(n[1], late, auds)
        return any(x is None if v is None else compare("==", x, v) for v in n[2])
    if tag == "not":
        return _ev(n[1], late, auds) is not True
    if tag == "and":
        return _ev(n[1], late, auds) is True and _ev(n[2], late, auds) is True
    if tag == "or":
        return _ev(n[1], late, auds) is True or _ev(n[2], late, auds) is True
    raise ValueError(f"unknown rule node {tag!r}")
