"""The expression language (operators/expr.py, SPEC §6): random expressions evaluated against a
reference evaluator written here independently (over its own tuple trees, printed fully
parenthesized), the canonical printer round trip, never raising on any environment or input,
and precise error columns."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from operators.expr import ExprError, compile_expr

SETTINGS = settings(max_examples=300, deadline=None, derandomize=True)

FIELDS = [("properties", "a"), ("properties", "b"), ("context", "c"), ("computed", "n"), ("audience", "x"), ("rfm_segment",)]
lit_values = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 5), st.sampled_from([0.5, -1.5, 2.0]),
    st.sampled_from(["", "a", "b", 'q"uote', "back\\slash", "new\nline"]),
)
env_values = st.one_of(lit_values, st.lists(st.integers(0, 2), max_size=2), st.dictionaries(st.sampled_from(["a"]), st.integers(0, 1)),
                       st.just(float("nan")), st.just(10**30))


# the reference: tuple trees ("lit", v) ("path", parts) ("cmp", op, l, r) ("in", item, vals) ("not", x) ("and"|"or", l, r)
def trees() -> st.SearchStrategy[tuple[Any, ...]]:
    leaf = st.one_of(lit_values.map(lambda v: ("lit", v)), st.sampled_from(FIELDS).map(lambda p: ("path", p)))

    def extend(children: st.SearchStrategy[tuple[Any, ...]]) -> st.SearchStrategy[tuple[Any, ...]]:
        return st.one_of(
            st.tuples(st.just("cmp"), st.sampled_from(["==", "!=", "<", "<=", ">", ">="]), children, children),
            st.tuples(st.just("in"), children, st.lists(lit_values, max_size=3).map(tuple)),
            st.tuples(st.just("not"), children),
            st.tuples(st.sampled_from(["and", "or"]), children, children),
        )

    return st.recursive(leaf, extend, max_leaves=8)


def lit_src(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        out = ""
        for ch in v:
            out += {'"': '\\"', "\\": "\\\\", "\n": "\\n"}.get(ch, ch)
        return f'"{out}"'
    return repr(v)


def render(t: tuple[Any, ...]) -> str:
    """Fully parenthesized source of a tree."""
    tag = t[0]
    if tag == "lit":
        return lit_src(t[1])
    if tag == "path":
        return ".".join(t[1])
    if tag == "cmp":
        return f"({render(t[2])}) {t[1]} ({render(t[3])})"
    if tag == "in":
        return f"({render(t[1])}) in [{', '.join(lit_src(v) for v in t[2])}]"
    if tag == "not":
        return f"not ({render(t[1])})"
    return f"({render(t[1])}) {tag} ({render(t[2])})"


def typ(v: Any) -> str:
    if v is None:
        return "null"
    if v is True or v is False:
        return "bool"
    if type(v) in (int, float):
        return "number"
    if type(v) is str:
        return "string"
    return "other"


def same_type_compare(op: str, a: Any, b: Any) -> bool:
    ta, tb = typ(a), typ(b)
    if ta != tb or ta in ("null", "other"):
        return False
    if ta == "bool":
        return {"==": a is b, "!=": a is not b}.get(op, False)
    return {"==": a == b, "!=": a != b, "<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op]


def get(env: dict[str, Any], parts: tuple[str, ...]) -> Any:
    cur: Any = env
    for p in parts:
        cur = cur.get(p) if isinstance(cur, dict) else None
    return cur


def ref(t: tuple[Any, ...], env: dict[str, Any]) -> Any:
    tag = t[0]
    if tag == "lit":
        return t[1]
    if tag == "path":
        return get(env, t[1])
    if tag == "cmp":
        op, left, right = t[1], t[2], t[3]
        if right == ("lit", None) or left == ("lit", None):
            other = ref(left if right == ("lit", None) else right, env)
            if op == "==":
                return other is None
            return other is not None if op == "!=" else False
        return same_type_compare(op, ref(left, env), ref(right, env))
    if tag == "in":
        v = ref(t[1], env)
        return any((v is None) if x is None else same_type_compare("==", v, x) for x in t[2])
    if tag == "not":
        return ref(t[1], env) is not True
    a, b = ref(t[1], env) is True, ref(t[2], env) is True
    return (a and b) if tag == "and" else (a or b)


def envs() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({}, optional={
        "properties": st.dictionaries(st.sampled_from(["a", "b"]), env_values),
        "context": st.one_of(st.dictionaries(st.just("c"), env_values), st.integers()),
        "computed": st.dictionaries(st.just("n"), env_values),
        "audience": st.dictionaries(st.just("x"), st.booleans()),
        "rfm_segment": env_values,
    })


def same(a: Any, b: Any) -> bool:
    return (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b)) or (a == b and type(a) is type(b))


@SETTINGS
@given(trees(), envs())
def test_evaluation_matches_the_reference(t: tuple[Any, ...], env: dict[str, Any]) -> None:
    e = compile_expr(render(t))
    assert same(e.eval(env), ref(t, env))
    assert same(e.eval(lambda p: get(env, p)), ref(t, env)), "a callable env reads the same"


@SETTINGS
@given(trees())
def test_the_canonical_form_parses_back_to_the_same_tree(t: tuple[Any, ...]) -> None:
    e = compile_expr(render(t))
    again = compile_expr(str(e))
    assert again == e
    assert str(again) == str(e)


@SETTINGS
@given(trees())
def test_fields_are_exactly_the_paths_read(t: tuple[Any, ...]) -> None:
    def paths(x: tuple[Any, ...]) -> set[tuple[str, ...]]:
        if x[0] == "path":
            return {x[1]}
        return set().union(*(paths(c) for c in x[1:] if isinstance(c, tuple) and c and isinstance(c[0], str) and c[0] in ("lit", "path", "cmp", "in", "not", "and", "or")))

    assert compile_expr(render(t)).fields() == frozenset(paths(t))


@SETTINGS
@given(st.text(alphabet='ab.()[],=!<> "\\ntrueflsnotinad0123-', max_size=40))
def test_any_input_compiles_or_raises_expr_error_with_a_column_inside(src: str) -> None:
    try:
        e = compile_expr(src)
    except ExprError as exc:
        assert 1 <= exc.column <= len(src) + 1
    else:
        e.eval({})


def test_a_raising_env_reads_as_missing() -> None:
    def boom(path: tuple[str, ...]) -> Any:
        raise RuntimeError(path)

    assert compile_expr("properties.a == null and not (properties.b > 1)").eval(boom) is True


@pytest.mark.parametrize(
    ("src", "column", "message"),
    [
        ("a ==", 5, "expected a value, found the end"),
        ("a == == 1", 6, "expected a value, found '=='"),
        ('a == "open', 6, "unterminated string"),
        ("a = 1", 3, "unexpected character '='"),
        ("a == 1 == 2", 8, "comparisons do not chain"),
        ("(a == 1", 8, "expected ')'"),
        ("a in [b]", 7, "expected a literal in the list"),
        ("a in [1, 2", 11, "expected ']'"),
        ("a == 1 b", 8, "unexpected 'b'"),
        ("properties.in == 1", 1, "'in' is a keyword"),
        ('a == "\\q"', 7, "unknown escape"),
        ("", 1, "empty expression"),
        ("a && b", 3, "unexpected character '&'"),
    ],
)
def test_errors_name_the_column(src: str, column: int, message: str) -> None:
    with pytest.raises(ExprError) as info:
        compile_expr(src)
    assert info.value.column == column, str(info.value)
    assert message in info.value.message


def test_deep_nesting_is_an_error_not_a_recursion_crash() -> None:
    with pytest.raises(ExprError, match="nested deeper"):
        compile_expr("(" * 200 + "a" + ")" * 200)
    with pytest.raises(ExprError, match="nested deeper"):
        compile_expr("not " * 200 + "a")


def test_the_spec_semantics_by_example() -> None:
    e = compile_expr
    assert e("properties.x == null").eval({}) is True
    assert e("properties.x != null").eval({"properties": {"x": 0}}) is True
    assert e("properties.x != 5").eval({}) is False, "a missing field: only == null / != null are true"
    assert e("properties.x < 5").eval({}) is False
    assert e('properties.x == "5"').eval({"properties": {"x": 5}}) is False, "mismatched types"
    assert e('properties.x != "5"').eval({"properties": {"x": 5}}) is False, "mismatched types, also !="
    assert e("properties.x == 1").eval({"properties": {"x": True}}) is False, "true is not 1"
    assert e("properties.x == 1").eval({"properties": {"x": 1.0}}) is True
    assert e('properties.category in ["shoes", "boots"]').eval({"properties": {"category": "boots"}}) is True
    assert e("audience.vip").eval({"audience": {"vip": True}}) is True
    assert e("not audience.vip").eval({}) is True
    assert e("a or b and c").eval({"a": True, "b": False}) is True, "and binds tighter than or"
