"""operators.audiences: the audience env typed by the schema (contract item 2) and evaluate, and
the per-user step's computed traits and audiences (operators.user: render, step, on_timer,
next_deadline; contract items 1 and 5)."""

from __future__ import annotations

import pickle
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from operators.audiences import _LAST, evaluate, evaluate_reference, profile_env
from operators.computed import ComputedState
from operators.definitions import DAY_MS, HOUR_MS, SPEC_EXAMPLE, load_definitions
from operators.events import Event, Limits, parse_event
from operators.identity import Link, anon_uid
from operators.schema import BY_NAME, FIELDS, Kind
from operators.user import (
    MergeExport,
    MergeIn,
    ProfileUpdate,
    UserConfig,
    UserState,
    next_deadline,
    on_timer,
    render,
    step,
)

LIM = Limits(timestamp_min_ms=0)
DEFS = load_definitions(SPEC_EXAMPLE)
CFG = UserConfig(definitions=DEFS)
T0 = 1_714_564_800_000  # 2024-05-01T12:00:00Z: fixed, never "now"
AUD = "shoe_browsers_no_order"


def ev(i: int, name: str, t: int, uid: str | None = "u1", anon: str | None = None, **props: object) -> Event:
    raw: dict = {"type": "track", "event": name, "messageId": f"m{i}", "timestamp": t / 1000, "receivedAt": t / 1000, "properties": props}
    if uid:
        raw["userId"] = uid
    if anon:
        raw["anonymousId"] = anon
    e = parse_event(raw, LIM)
    assert isinstance(e, Event), e
    return e


def view(i: int, t: int, **kw: object) -> Event:
    return ev(i, "Product Viewed", t, category="shoes", **kw)  # type: ignore[arg-type]


def updates(outs: list) -> list[ProfileUpdate]:
    return [o for o in outs if isinstance(o, ProfileUpdate)]


# -- profile_env / evaluate ------------------------------------------------------------------


def test_profile_env_types_every_kind_as_the_contract_says() -> None:
    env = profile_env({"purchase_count": "3", "revenue_net": "12.50", "anomaly_score": "0.25", "cart_abandoned": "1",
                       "email_unsubscribed": "0", "last_seen_at": "2024-05-01T12:00:00.000Z", "first_purchase_at": "",
                       "traits": '{"plan": "pro", "age": 31}', "top_category": "shoes", "email": "", "no_such_field": "x"})  # fmt: skip
    assert env == {"purchase_count": 3, "revenue_net": 12.5, "anomaly_score": 0.25, "cart_abandoned": True,
                   "email_unsubscribed": False, "last_seen_at": "2024-05-01T12:00:00.000Z",
                   "traits": {"plan": "pro", "age": 31}, "top_category": "shoes", "email": ""}  # fmt: skip


def test_evaluate_reads_profile_fields_traits_computed_and_other_audiences_sorted() -> None:
    defs = load_definitions("""version: 1
computed_traits:
  - {name: views_7d, kind: count, event: Product Viewed, window: 7d}
audiences:
  - {name: zeta_pro, when: 'traits.plan == "pro" and cart_abandoned == true'}
  - {name: alpha_busy, when: 'computed.views_7d >= 2 and last_seen_at > "2024-05-01"'}
  - {name: beta_both, when: 'audience.zeta_pro and audience.alpha_busy'}
  - {name: never_bought, when: 'last_purchase_at == null'}
""")
    fields = {"traits": '{"plan": "pro"}', "cart_abandoned": "1", "last_seen_at": "2024-05-02T00:00:00.000Z", "last_purchase_at": ""}
    assert evaluate(defs, fields, {"views_7d": 2}) == ("alpha_busy", "beta_both", "never_bought", "zeta_pro")
    assert evaluate(defs, {**fields, "cart_abandoned": "0"}, {"views_7d": 1}) == ("never_bought",)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.dictionaries(st.sampled_from([f.name for f in FIELDS] + ["x"]), st.text(max_size=12), max_size=8))
def test_profile_env_never_raises_and_keeps_only_schema_fields_of_their_type(fields: dict[str, str]) -> None:
    env = profile_env(fields)
    types = {Kind.INT: int, Kind.MONEY: float, Kind.FLOAT: float, Kind.FLAG: bool, Kind.TIME: str, Kind.TEXT: str}
    for k, v in env.items():
        kind = BY_NAME[k].kind
        if kind is not Kind.JSON:
            assert type(v) is types[kind], (k, v)
    assert evaluate(DEFS, fields, {"shoe_views_7d": 0, "orders_7d": 0}) == ()


# -- the step ---------------------------------------------------------------------------------


def test_without_definitions_nothing_of_it_exists() -> None:
    s, outs, _ = step(UserConfig(), None, "u1", [view(1, T0), view(2, T0 + 1), view(3, T0 + 2)])
    assert s is not None and s.computed is None and s.audiences == ()
    (u,) = updates(outs)
    assert "computed" not in u.fields and "audiences" not in u.fields
    assert next_deadline(UserConfig(), s) == s.behaviour.deadline(UserConfig().session)  # the session timer only


def test_three_views_enter_and_an_order_exits_with_its_event_time() -> None:
    s, outs, _ = step(CFG, None, "u1", [view(1, T0), view(2, T0 + 60_000)])
    (u,) = updates(outs)
    assert orjson.loads(u.fields["computed"]) == {"shoe_views_7d": 2, "orders_7d": 0, "spend_90d": 0}
    assert u.fields["audiences"] == "[]" and u.event_ms == T0 + 60_000
    s, outs, dups = step(CFG, s, "u1", [view(3, T0 + 120_000), view(3, T0 + 120_000)])  # a duplicate counts once
    (u,) = updates(outs)
    assert dups == 1 and orjson.loads(u.fields["computed"])["shoe_views_7d"] == 3
    assert u.fields["audiences"] == f'["{AUD}"]' and s is not None and s.audiences == (AUD,)
    t_order = T0 + 3_600_000
    s, outs, _ = step(CFG, s, "u1", [ev(4, "Order Completed", t_order, revenue=19.99)])
    (u,) = updates(outs)
    assert u.fields["audiences"] == "[]" and u.event_ms == t_order
    assert orjson.loads(u.fields["computed"]) == {"shoe_views_7d": 3, "orders_7d": 1, "spend_90d": 19.99}


def test_a_window_exits_by_stream_time_alone_one_timer_per_bucket_exit() -> None:
    """No event of the user: the timer at the bucket exit (end of the event's day + 7d) takes them
    out, with event_ms = the exit; a timer earlier than the exit does nothing."""
    s, _, _ = step(CFG, None, "u1", [view(1, T0), view(2, T0 + 1), view(3, T0 + 2)])
    assert s is not None and s.audiences == (AUD,)
    exit_ms = (T0 // DAY_MS + 1) * DAY_MS + 7 * DAY_MS
    assert next_deadline(CFG, s) == min(exit_ms, s.behaviour.deadline(CFG.session))  # type: ignore[type-var]
    assert updates(on_timer(CFG, s, exit_ms - 1)) == []  # (the session closes: no profile change)
    assert next_deadline(CFG, s) == exit_ms
    (u,) = updates(on_timer(CFG, s, exit_ms + 5 * HOUR_MS))  # the clock passed it: rendered at the exit itself
    assert u.event_ms == exit_ms and u.fields["audiences"] == "[]"
    assert u.last_received_ms == 0  # a window exit is no receipt: not a freshness sample
    assert orjson.loads(u.fields["computed"])["shoe_views_7d"] == 0
    assert s.audiences == () and next_deadline(CFG, s) is None  # nothing left in any window: no timer
    assert on_timer(CFG, s, exit_ms + 30 * DAY_MS) == []


def test_an_exit_that_changes_no_value_writes_nothing_and_arms_the_next_exit() -> None:
    defs = load_definitions("version: 1\ncomputed_traits:\n  - {name: top_price, kind: max, event: Product Viewed, value: properties.p, window: 2d}\n")
    cfg = UserConfig(definitions=defs)
    day0 = (T0 // HOUR_MS) * HOUR_MS
    s, _, _ = step(cfg, None, "u1", [ev(1, "Product Viewed", day0, p=5), ev(2, "Product Viewed", day0 + 3 * HOUR_MS, p=5)])
    assert s is not None
    first, second = day0 + HOUR_MS + 2 * DAY_MS, day0 + 4 * HOUR_MS + 2 * DAY_MS  # 2d <= 48h: hour buckets
    assert next_deadline(cfg, s) == min(first, s.behaviour.deadline(cfg.session))  # type: ignore[type-var]
    on_timer(cfg, s, s.behaviour.deadline(cfg.session))  # the session timer first
    assert updates(on_timer(cfg, s, first)) == []  # max is still 5: no write
    assert next_deadline(cfg, s) == second
    (u,) = updates(on_timer(cfg, s, second))
    assert u.event_ms == second and orjson.loads(u.fields["computed"]) == {"top_price": None}


def test_all_time_traits_arm_no_timer() -> None:
    defs = load_definitions("version: 1\ncomputed_traits:\n  - {name: views, kind: count, event: Product Viewed}\n"
                            "audiences:\n  - {name: fans, when: computed.views >= 2}\n")  # fmt: skip
    cfg = UserConfig(definitions=defs)
    s, outs, _ = step(cfg, None, "u1", [view(1, T0), view(2, T0 + 1)])
    assert s is not None and updates(outs)[0].fields["audiences"] == '["fans"]'
    s.behaviour.close_if_idle(cfg.session, T0 + DAY_MS, 0)  # no session timer either
    assert next_deadline(cfg, s) is None


def test_an_anonymous_users_views_merge_into_the_known_user_on_identify() -> None:
    a = anon_uid("a1")
    anon, _, _ = step(CFG, None, a, [view(1, T0, uid=None, anon="a1"), view(2, T0 + 1, uid=None, anon="a1")])
    assert anon is not None and orjson.loads(render(anon, DEFS)["computed"])["shoe_views_7d"] == 2
    _, outs, _ = step(CFG, anon, a, [Link(a, "u1", T0 + 5)])
    (ex,) = [o for o in outs if isinstance(o, MergeExport)]
    known, outs, _ = step(CFG, None, "u1", [view(3, T0 + 2)])
    assert known is not None and updates(outs)[0].fields["audiences"] == "[]"
    known, outs, _ = step(CFG, known, "u1", [MergeIn(ex.merge_id, a, ex.ts, ex.state)])
    (u,) = updates(outs)
    assert orjson.loads(u.fields["computed"])["shoe_views_7d"] == 3 and u.fields["audiences"] == f'["{AUD}"]'
    assert u.event_ms == ex.ts


def test_a_changed_trait_starts_from_its_deployment_and_a_removed_one_is_pruned() -> None:
    s, _, _ = step(CFG, None, "u1", [view(1, T0), view(2, T0 + 1), view(3, T0 + 2), ev(9, "Order Completed", T0 + 3, revenue=5)])
    changed = load_definitions(SPEC_EXAMPLE.replace('properties.category == "shoes"', 'properties.category == "hats"').replace(
        "  - name: spend_90d\n    kind: sum\n    event: Order Completed\n    value: properties.revenue    # the event field aggregated (not for count)\n    window: 90d\n", ""))  # fmt: skip
    assert [t.name for t in changed.computed_traits] == ["shoe_views_7d", "orders_7d"]
    cfg2 = UserConfig(definitions=changed)
    assert s is not None and s.computed is not None and "spend_90d" in s.computed.traits
    s, outs, _ = step(cfg2, s, "u1", [ev(4, "Product Viewed", T0 + 4, category="hats")])
    (u,) = updates(outs)
    assert orjson.loads(u.fields["computed"]) == {"shoe_views_7d": 1, "orders_7d": 1}  # not 3 + 1: a new definition; orders kept
    assert s is not None and s.computed is not None and "spend_90d" not in s.computed.traits and s.audiences == ()


def test_a_version_5_user_state_restores_with_no_computed_state_and_then_counts() -> None:
    """A UserState pickled by the v5 layout (no computed, audiences, computed_at) restores with the
    defaults and the first event under definitions starts its computed traits."""
    old, _, _ = step(UserConfig(), None, "u1", [view(1, T0)])
    assert old is not None
    slots = {k: getattr(old, k) for k in ("profile", "interest", "behaviour", "rfm", "suppressed")}
    st_ = UserState.__new__(UserState)
    st_.__setstate__((None, slots))  # what unpickling a version-5 object does
    assert (st_.computed, st_.audiences) == (None, ())
    assert pickle.loads(pickle.dumps(st_)).computed is None
    s, outs, _ = step(CFG, st_, "u1", [view(2, T0 + 1)])
    assert s is not None and isinstance(s.computed, ComputedState)
    assert orjson.loads(updates(outs)[0].fields["computed"])["shoe_views_7d"] == 1


def test_a_new_users_events_all_count_whatever_their_receipt_order() -> None:
    """A user the flow has never seen has no history it processed before the definitions, so no
    event of theirs is 'history' for the backfill boundary: an event received earlier but processed
    later (another shard, a replay keeping its receivedAt) still counts. On the backfill merge the
    boundary was the first event's receipt, and the earlier-received views were lost."""
    first = view(1, T0 + 3 * HOUR_MS)  # received at T0 + 3h, processed first
    late = [view(2, T0 + HOUR_MS), view(3, T0 + 2 * HOUR_MS)]  # received before it, processed after
    st, outs, _ = step(CFG, None, "u1", [first])
    st, outs, _ = step(CFG, st, "u1", late)
    last = updates(outs)[-1]
    assert orjson.loads(last.fields["computed"])["shoe_views_7d"] == 3
    assert orjson.loads(last.fields["audiences"]) == [AUD]
    # a user the flow knew before the definitions (a v5 state: no computed traits yet) keeps the
    # boundary at the first event since: what it received before is history, for a backfill
    old, _, _ = step(UserConfig(), None, "u2", [ev(9, "Page Viewed", T0)])
    old, outs, _ = step(CFG, old, "u2", [first])
    old, outs, _ = step(CFG, old, "u2", late)
    assert orjson.loads(updates(outs)[-1].fields["computed"])["shoe_views_7d"] == 1


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 6), st.integers(0, 3), st.sampled_from(["", "40.00", "120.00"]),
                          st.sampled_from(['{}', '{"plan": "pro"}', '{"plan": "free"}'])), min_size=1, max_size=12))  # fmt: skip
def test_remembered_evaluation_equals_a_fresh_one(seq: list[tuple[int, int, str, str]]) -> None:
    """evaluate() with a memo (the per-profile remembered inputs and results) gives what a fresh
    evaluation gives, for any sequence of renders of one profile."""
    defs = load_definitions("""\
version: 1
computed_traits:
  - {name: views, kind: count, event: Product Viewed, window: 7d}
  - {name: orders, kind: count, event: Order Completed}
audiences:
  - {name: browsers, when: computed.views >= 3 and computed.orders == 0}
  - {name: buyers, when: computed.orders >= 1}
  - {name: carts, when: cart_value > 50 and not audience.buyers}
  - {name: pros, when: 'traits.plan == "pro" or audience.browsers'}
""")
    memo: dict = {}
    for views, orders, cart, traits in seq:
        fields = {"cart_value": cart, "traits": traits}
        values = {"views": views, "orders": orders}
        assert evaluate(defs, fields, values, memo) == evaluate(defs, fields, values)


_GEN_DEFS = """\
version: 1
computed_traits:
  - {name: views, kind: count, event: Product Viewed, window: 7d}
  - {name: orders, kind: count, event: Order Completed}
  - {name: top, kind: most_frequent, event: Product Viewed, value: properties.category}
audiences:
  - {name: browsers, when: computed.views >= 3 and computed.orders == 0}
  - {name: buyers, when: computed.orders >= 1 or computed.top == true}
  - {name: champs, when: 'rfm_segment == "champions" and audience.buyers'}
  - {name: carts, when: cart_value > 50 and not audience.buyers}
  - {name: pros, when: 'traits.plan == "pro" or audience.browsers'}
  - {name: lapsing, when: 'audience.champs or (rfm_r <= 2 and computed.views > 0)'}
  - {name: everyone, when: 'true'}
"""

_vals = st.one_of(st.none(), st.booleans(), st.integers(0, 4), st.sampled_from([0.0, 1.0, 3.5, "shoes", "1"]))


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.lists(st.tuples(_vals, _vals, _vals, st.sampled_from(["", "40.00", "120.00", "x"]),
                          st.sampled_from(['{}', '{"plan": "pro"}', "not json"]), st.booleans()), min_size=1, max_size=10))  # fmt: skip
def test_generated_evaluation_equals_the_reference(seq: list[tuple[Any, Any, Any, str, str, bool]]) -> None:
    """The generated evaluate (what the step runs) and the reference loop: the same audiences, the
    same late rules appended, the same memo entries, render after render of one profile — values that
    change type but not Python == (true -> 1) included, late audiences with and without ``rules``."""
    defs = load_definitions(_GEN_DEFS)
    memo_a: dict = {}
    memo_b: dict = {}
    for views, orders, top, cart, traits, with_rules in seq:
        fields = {"cart_value": cart, "traits": traits}
        values = {"views": views, "orders": orders, "top": top}
        rules_a: list | None = [] if with_rules else None
        rules_b: list | None = [] if with_rules else None
        assert evaluate(defs, fields, values, memo_a, rules_a) == evaluate_reference(defs, fields, values, memo_b, rules_b)
        assert rules_a == rules_b
        assert memo_a.keys() - {_LAST} == memo_b.keys()  # (evaluate also remembers the whole call)
        for k in memo_b:
            assert memo_a[k][0] is memo_b[k][0] and memo_a[k][1] == memo_b[k][1] and memo_a[k][2] == memo_b[k][2]
            assert [type(x) for x in memo_a[k][1]] == [type(x) for x in memo_b[k][1]]


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.lists(st.tuples(_vals, _vals, st.sampled_from(["", "40.00", "120.00"]), st.sampled_from(['{}', '{"plan": "pro"}']),
                          st.booleans(), st.booleans()), min_size=1, max_size=12))  # fmt: skip
def test_a_whole_evaluation_again_on_the_same_values_dict(seq: list[tuple[Any, Any, str, str, bool, bool]]) -> None:
    """evaluate() remembers its last call: the very same values dict (as ComputedState.values
    returns it while no value changed) with the same profile fields read gives the last result
    and late rules again; anything else evaluates. Checked against a fresh reference evaluation,
    the dict reused whenever its values are unchanged, calls with and without ``rules`` mixed."""
    defs = load_definitions(_GEN_DEFS)
    memo: dict = {}
    values: dict | None = None
    for views, orders, cart, traits, with_rules, reuse in seq:
        new = {"views": views, "orders": orders, "top": "shoes"}
        if values is None or not reuse or orjson.dumps(values) != orjson.dumps(new):
            values = new
        fields = {"cart_value": cart, "traits": traits, "email": "x@example.com"}
        rules: list | None = [] if with_rules else None
        ref_rules: list | None = [] if with_rules else None
        assert evaluate(defs, fields, values, memo, rules) == evaluate_reference(defs, fields, dict(values), None, ref_rules)
        assert rules == ref_rules
