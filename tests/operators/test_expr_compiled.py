"""The compiled expressions (operators.expr.to_function / to_predicate / path_getter) against the
tree walker (``Expr.eval`` / ``Expr.holds`` / ``lookup``), the one the SPEC semantics are pinned on
(tests/operators/test_expr.py checks it against an independent reference): equal on generated
expressions and environments, including what only a compiled fast path could get wrong — values of
other types than exactly None/bool/int/float/str (subclasses, NaN, -0.0, huge ints, lists,
mappings that are not dicts, at the top or part-way down a path), callable environments, and
expressions too deep for Python's own parser."""

from __future__ import annotations

import enum
from collections import OrderedDict
from types import MappingProxyType
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from operators.expr import compile_expr, lookup, path_getter, to_function, to_predicate
from tests.operators.test_expr import FIELDS, env_values, get, render, same, trees

SETTINGS = settings(max_examples=500, deadline=None, derandomize=True)


class Num(enum.IntEnum):
    ONE = 1


class Text(str):
    pass


class Flt(float):
    pass


odd_values = st.one_of(
    env_values,
    st.sampled_from([Num.ONE, Text("a"), Text("b"), Flt(0.5), Flt(2.0), -0.0, 0.0, 10**30, -(10**30), (1,), b"a", object()]),
)


def wrap(d: dict[str, Any], how: int) -> Any:
    """The same mapping as a dict (0), a read-only proxy (1) or an OrderedDict (2)."""
    return d if how == 0 else MappingProxyType(d) if how == 1 else OrderedDict(d)


@st.composite
def odd_envs(draw: st.DrawFn) -> Any:
    """Environments over the test_expr fields whose mappings and values need not be plain."""
    inner = {
        "properties": st.dictionaries(st.sampled_from(["a", "b"]), odd_values),
        "context": st.one_of(st.dictionaries(st.just("c"), odd_values), odd_values),
        "computed": st.dictionaries(st.just("n"), odd_values),
        "audience": st.dictionaries(st.just("x"), st.one_of(st.booleans(), odd_values)),
    }
    env: dict[str, Any] = {}
    for k, strat in inner.items():
        if draw(st.booleans()):
            v = draw(strat)
            env[k] = wrap(v, draw(st.integers(0, 2))) if isinstance(v, dict) else v
    if draw(st.booleans()):
        env["rfm_segment"] = draw(odd_values)
    return wrap(env, draw(st.sampled_from([0, 0, 0, 1, 2])))


@SETTINGS
@given(trees(), odd_envs())
def test_the_compiled_function_equals_the_tree_walker(t: tuple[Any, ...], env: Any) -> None:
    e = compile_expr(render(t))
    f, p = to_function(e), to_predicate(e)
    assert same(f(env), e.eval(env)), str(e)
    assert p(env) is e.holds(env), str(e)
    plain = dict(env)
    assert same(f(lambda path: get(plain, path)), e.eval(lambda path: get(plain, path))), "a callable env"


@SETTINGS
@given(st.sampled_from(FIELDS + [("properties",), ("context", "c", "d"), ("a", "b", "c", "d")]), odd_envs())
def test_a_compiled_path_reads_what_lookup_reads(parts: tuple[str, ...], env: Any) -> None:
    assert same(path_getter(parts)(env), lookup(env, parts))


def test_a_raising_env_reads_as_missing_compiled_too() -> None:
    def boom(path: tuple[str, ...]) -> Any:
        raise RuntimeError(path)

    e = compile_expr("properties.a == null and not (properties.b > 1)")
    assert to_function(e)(boom) is True and to_predicate(e)(boom) is True


def test_expressions_too_deep_for_python_still_evaluate() -> None:
    long_chain = " and ".join(f"p.a{i} == {i}" for i in range(200))  # 200 terms, one flat chain
    env: dict[str, Any] = {"p": {f"a{i}": i for i in range(200)}}
    e = compile_expr(long_chain)
    assert to_function(e)(env) is True and to_predicate(e)(env) is True
    env["p"]["a199"] = "x"
    assert to_function(e)(env) is False
    nested = "(" * 60 + "properties.a == 1" + " or properties.b == 2)" * 60  # as deep as the parser allows
    e = compile_expr(nested)
    for env in ({"properties": {"a": 1}}, {"properties": {"b": 2}}, {}):
        assert to_function(e)(env) is e.eval(env)
    deep_not = "not " * 63 + "audience.x"
    e = compile_expr(deep_not)
    for env in ({"audience": {"x": True}}, {}):
        assert to_function(e)(env) is e.eval(env)


def test_strings_and_names_of_the_expression_are_constants_not_source() -> None:
    src = 'properties.a == "\\"); import os; (\\"" or properties.b in ["x\\ny", "\\\\"]'
    e = compile_expr(src)
    f = to_function(e)
    assert f({"properties": {"a": '"); import os; ("'}}) is True
    assert f({"properties": {"b": "x\ny"}}) is True and f({"properties": {"b": "\\"}}) is True
    assert f({"properties": {"b": "xy"}}) is False
