"""Late audiences' rules (:mod:`operators.residual`): filling in what the per-user step knows and
evaluating the rest later gives exactly the full evaluation, for any expression and values."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from operators.expr import compile_expr
from operators.residual import eval_rule, residual

#: early paths (the per-user step knows them) and late ones (RFM and model fields, a late audience)
EARLY = ("computed.a", "computed.b", "cart_value", "traits.plan", "audience.e")
LATE = ("rfm_r", "rfm_segment", "suspect", "anomaly_score", "audience.l")
LATE_AUDIENCES = frozenset({"l"})

values = st.one_of(st.none(), st.booleans(), st.integers(-3, 6), st.sampled_from([0.5, 2.0, -1.5, 4.0]),
                   st.sampled_from(["", "champions", "loyal", "pro", "a"]), st.just({"x": 1}))  # fmt: skip
literal = st.one_of(st.sampled_from(["null", "true", "false", '"champions"', '"pro"', '""', "3", "4.0", "-1", "0.5"]))
operand = st.one_of(st.sampled_from(EARLY + LATE), literal)


def exprs() -> st.SearchStrategy[str]:
    cmp = st.builds(lambda a, op, b: f"{a} {op} {b}", operand, st.sampled_from(["==", "!=", "<", "<=", ">", ">="]), operand)
    inn = st.builds(lambda a, xs: f"{a} in [{', '.join(xs)}]", st.sampled_from(EARLY + LATE), st.lists(literal, min_size=1, max_size=3))
    atom = st.one_of(cmp, inn, st.sampled_from(EARLY + LATE), st.sampled_from(["true", "false"]))
    return st.recursive(atom, lambda inner: st.one_of(
        st.builds(lambda a: f"not ({a})", inner),
        st.builds(lambda a, b: f"({a}) and ({b})", inner, inner),
        st.builds(lambda a, b: f"({a}) or ({b})", inner, inner),
        st.builds(lambda a, op, b: f"({a}) {op} ({b})", inner, st.sampled_from(["==", "!="]), inner),
    ), max_leaves=8)  # fmt: skip


def envs(vals: list[Any]) -> tuple[dict[str, Any], dict[str, Any], dict[str, bool]]:
    a, b, cart, plan, e, r, seg, sus, score, lat = vals
    early: dict[str, Any] = {"computed": {"a": a, "b": b}, "traits": {"plan": plan}, "audience": {"e": e is True}}
    if cart is not None:
        early["cart_value"] = cart
    late = {k: v for k, v in (("rfm_r", r), ("rfm_segment", seg), ("suspect", sus), ("anomaly_score", score)) if v is not None}
    return early, late, {"l": lat is True}


@settings(max_examples=1500, deadline=None)
@given(exprs(), st.lists(values, min_size=10, max_size=10))
def test_the_rule_evaluated_later_equals_the_full_evaluation(src: str, vals: list[Any]) -> None:
    e = compile_expr(src)
    early, late, late_auds = envs(vals)
    full = {**early, **late, "audience": {**early["audience"], **late_auds}}
    rule = residual(e, early, LATE_AUDIENCES)
    assert eval_rule(rule, late, late_auds) == e.holds(full), (src, rule)


def test_a_rule_reads_only_late_fields_and_late_audiences() -> None:
    e = compile_expr('(rfm_r >= computed.a or suspect) and audience.e and traits.plan in ["pro", null]')
    assert residual(e, {"computed": {"a": 3}, "traits": {}, "audience": {"e": True}}, LATE_AUDIENCES) == \
        ["or", ["cmp", ">=", ["f", "rfm_r"], ["v", 3]], ["f", "suspect"]]
    assert residual(e, {"computed": {"a": 3}, "traits": {}, "audience": {"e": False}}, LATE_AUDIENCES) is False
    # a known null makes a comparison false whatever the late side holds
    assert residual(compile_expr("rfm_r >= computed.a"), {"computed": {}}, frozenset()) is False
    assert residual(compile_expr("audience.l"), {}, LATE_AUDIENCES) == ["and", ["a", "l"], True]
