"""The definitions file (operators/definitions.py, SPEC §6): the SPEC's example loads as written,
broken files report every error at once with its line and column, audiences come in dependency
order, digests detect a changed trait. (``liveprofile definitions check``:
tests/admin/test_definitions_check.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from operators.definitions import DAY_MS, HOUR_MS, SPEC_EXAMPLE, DefinitionsErrors, load_definitions

SPEC = Path(__file__).resolve().parents[3] / "shared" / "SPEC.md"


def test_the_spec_example_is_the_spec_text_and_loads_as_written() -> None:
    if SPEC.exists():  # /work/shared/SPEC.md: the example block of §6, verbatim
        block = SPEC.read_text().split("## 6.", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
        assert block == SPEC_EXAMPLE
    d = load_definitions(SPEC_EXAMPLE)
    views, orders, spend = d.computed_traits
    assert (views.kind, views.event, views.window_ms, str(views.where)) == ("count", "Product Viewed", 7 * DAY_MS, 'properties.category == "shoes"')
    assert (orders.kind, orders.value, orders.where) == ("count", None, None)
    assert (spend.kind, spend.value, spend.window_ms) == ("sum", ("properties", "revenue"), 90 * DAY_MS)
    (aud,) = d.audiences
    assert aud.name == "shoe_browsers_no_order" and aud.traits == {"shoe_views_7d", "orders_7d"} and aud.depends_on == frozenset()
    assert d.memberships({}, {"shoe_views_7d": 3, "orders_7d": 0}) == ("shoe_browsers_no_order",)
    assert d.memberships({}, {"shoe_views_7d": 3, "orders_7d": 1}) == ()


def errors_of(text: str) -> list[tuple[int, int, str]]:
    with pytest.raises(DefinitionsErrors) as info:
        load_definitions(text, "f.yaml")
    return [(e.line, e.column, e.message) for e in info.value.errors]


BROKEN = """\
version: 1
computed_traits:
  - name: Views
    kind: count
    event: Product Viewed
    widow: 7d
  - name: spend
    kind: sum
    event: Order Completed
    window: 500d
  - name: spend
    kind: average
    event: X
  - name: x
    kind: count
    event: Y
    where: properties.a == == 3
  - name: y
    kind: count
    event: Y
    value: properties.revenue
    window: 7w
audiences:
  - name: a
    when: audience.b and computed.nope > 1
  - name: b
    when: audience.a
  - name: c
"""


def test_a_broken_file_reports_every_error_with_its_line_and_column() -> None:
    got = errors_of(BROKEN)
    want = [
        (3, 11, "name 'Views' must match"),
        (6, 5, "unknown key 'widow'"),
        (7, 5, "kind sum needs a value"),
        (10, 13, "window 500d is longer than 400d"),
        (11, 11, "name 'spend' is already used (line 7)"),
        (12, 11, "unknown kind 'average'"),
        (17, 28, "expected a value, found '=='"),
        (22, 13, "window '7w' must be Nh, Nd or all"),
        (25, 11, "audiences form a cycle: a -> b -> a"),
        (25, 11, "unknown computed trait 'nope'"),
        (28, 5, "missing required key 'when'"),
    ]
    assert len(got) == len(want), got
    for (line, col, msg), (wl, wc, wm) in zip(got, want, strict=True):
        assert (line, col) == (wl, wc) and wm in msg, (line, col, msg)


@pytest.mark.parametrize(
    ("text", "line", "col", "message"),
    [
        ("version: 2\n", 1, 10, "version must be 1"),
        ("computed_traits: []\n", 1, 1, "missing required key 'version'"),
        ("version: 1\naudiences:\n  - {name: a, when: 'computed.x > 1'}\n", 3, 21, "unknown computed trait 'x'"),
        ("version: 1\naudiences:\n  - name: a\n    when: properties.x == 1\n", 4, 11, "an audience reads the profile"),
        ("version: 1\ncomputed_traits:\n  - {name: c, kind: count, event: E, value: properties.v}\n", 3, 45, "kind count takes no value"),
        ("version: 1\ncomputed_traits:\n  - {name: c, kind: sum, event: E, value: 'properties.v + 1'}\n", 3, 57, "unexpected character '+'"),
        ("version: 1\ncomputed_traits:\n  - {name: c, kind: sum, event: E, value: computed.x}\n", 3, 43, "value must be an event field path"),
        ("version: 1\ncomputed_traits:\n  - {name: c, kind: count, event: E, where: computed.x > 1}\n", 3, 45, "computed.x is not an event field"),
        ("version: 1\nversion: 1\n", 2, 1, "duplicate key 'version'"),
        ("version: 1\ncomputed_traits: [\n", 3, 1, "YAML:"),
        ("- 1\n", 1, 1, "must be a mapping"),
        ("version: 1\naudiences:\n  - name: a\n    when: audience.a\n", 4, 11, "cycle: a -> a"),
    ],
)
def test_each_broken_file_names_the_line(text: str, line: int, col: int, message: str) -> None:
    got = errors_of(text)
    assert any((l_, c_) == (line, col) and message in m for l_, c_, m in got), got


def test_audiences_come_in_dependency_order_and_read_each_other() -> None:
    d = load_definitions("""\
version: 1
computed_traits:
  - {name: orders, kind: count, event: Order Completed, window: all}
audiences:
  - name: lapsed_vip
    when: audience.vip and not audience.recent
  - name: vip
    when: computed.orders >= 3 or traits.plan == "gold"
  - name: recent
    when: email_opens >= 1
x-owner: growth team
""")
    assert [a.name for a in d.audiences] == ["vip", "recent", "lapsed_vip"]
    assert d.trait("orders").window_ms is None
    assert d.memberships({"traits": {"plan": "gold"}, "email_opens": 0}, {"orders": 0}) == ("vip", "lapsed_vip")
    assert d.memberships({"email_opens": 2}, {"orders": 5}) == ("vip", "recent")


def test_the_digest_changes_with_what_a_trait_computes_only() -> None:
    base = "version: 1\ncomputed_traits:\n  - {name: t, kind: sum, event: E, value: properties.v, window: 48h%s}\n"
    d0 = load_definitions(base % "").trait("t")
    assert d0.window_ms == 48 * HOUR_MS
    assert load_definitions(base % ", description: spend").trait("t").digest == d0.digest
    assert load_definitions(base % ", where: 'properties.a  ==  1'").trait("t").digest == load_definitions(base % ", where: properties.a == 1").trait("t").digest
    for changed in (base.replace("sum", "max"), base.replace("48h", "3d"), base.replace("event: E", "event: F"), base % ", where: properties.a == 1"):
        assert load_definitions(changed % "" if "%s" in changed else changed).trait("t").digest != d0.digest


def test_digests_are_stable_across_processes_and_versions() -> None:
    """Fixed values: a digest is persisted with the state, so it must not depend on hash seeds
    or dict order (docs/audiences.md shows the same ones)."""
    d = load_definitions(SPEC_EXAMPLE)
    assert [t.digest for t in d.computed_traits] == ["17646f6e5810fc68", "ebbd27ce8a5edb7c", "f77dfd8d5f2190cb"]


KEYS = ["version", "computed_traits", "audiences", "name", "kind", "event", "where", "value", "window", "when", "x-note", "widow"]
scalars = st.one_of(st.none(), st.booleans(), st.integers(-2, 500), st.sampled_from(
    ["count", "sum", "most_frequent", "7d", "48h", "all", "401d", "Product Viewed", "a", "B", "properties.v",
     "computed.a", "audience.a", "properties.v > 1", "a ==", "not", "(", "\"x"]))
docs = st.recursive(scalars, lambda c: st.one_of(st.lists(c, max_size=4), st.dictionaries(st.sampled_from(KEYS), c, max_size=6)), max_leaves=25)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(docs)
def test_any_document_loads_or_reports_errors_with_positions_inside_the_file(doc: object) -> None:
    text = yaml.safe_dump(doc if not isinstance(doc, dict) else {"version": 1, **doc}, sort_keys=False)
    lines = text.count("\n") + 1
    try:
        load_definitions(text)
    except DefinitionsErrors as exc:
        assert exc.errors
        assert all(1 <= e.line <= lines and e.column >= 1 and e.message for e in exc.errors), exc.errors


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.text(alphabet="version: 1\n-{}[]&*!?'\"#%@`|>computed_traits audiences name kind when", max_size=80))
def test_any_text_loads_or_reports_errors(text: str) -> None:
    try:
        load_definitions(text)
    except DefinitionsErrors as exc:
        assert exc.errors and all(e.line >= 1 and e.column >= 1 for e in exc.errors)


def test_audiences_read_profile_fields_rfm_and_model_fields_and_name_their_sync() -> None:
    """An unknown field is an error at its line, not an audience that is silently never true; the
    RFM and model fields (scored after the per-user step) make an audience *late*, and an audience
    that reads a late one is late too (its rule is decided by the profile script)."""
    bad = """\
version: 1
audiences:
  - name: a
    when: rfm_segment == "champions"
  - name: b
    when: cart_valu > 3
  - name: c
    when: suspect.x == true
"""
    with pytest.raises(DefinitionsErrors) as e:
        load_definitions(bad, "d.yaml")
    got = [(x.line, x.message.split(":")[1].strip()) for x in e.value.errors]
    assert got == [(6, "unknown profile field 'cart_valu' (profile fields"), (8, "suspect.x")]
    d = load_definitions("""\
version: 1
audiences:
  - {name: champs, when: rfm_segment == "champions"}
  - {name: risky, when: suspect or anomaly_score > 0.9}
  - {name: likely, when: purchase_propensity >= 0.5 and rfm_r >= 3}
  - {name: champs_with_cart, when: audience.champs and cart_value > 0}
  - {name: carts, when: cart_value > 0}
  - {name: carts_not_risky, when: audience.carts and not audience.risky}
""")
    assert d.late == {"champs", "risky", "likely", "champs_with_cart", "carts_not_risky"}
    ok = load_definitions("""\
version: 1
audiences:
  - name: big_cart
    when: cart_value > 100 and traits.plan == "pro"
    sync:
      klaviyo: {list_id: Y7Qm8F}
      braze: {subscription_group_id: 0f2e-11}
""")
    a = ok.audiences[0]
    assert a.sync_for("klaviyo") == {"list_id": "Y7Qm8F"}
    assert a.sync_for("braze") == {"subscription_group_id": "0f2e-11"}
    assert a.sync_for("webhook") is None
    with pytest.raises(DefinitionsErrors, match="list_id"):
        load_definitions("version: 1\naudiences:\n  - {name: a, when: cart_items > 1, sync: {klaviyo: {}}}\n")
