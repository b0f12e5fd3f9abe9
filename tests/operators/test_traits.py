"""Traits: parsing (reserved names, context.traits, bounds, deny list) and the per-trait fold
(last writer by event time, tombstones, order-insensitive, merges)."""

from __future__ import annotations

import random

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from operators.dedupe import DedupeConfig
from operators.events import Event, Limits, Reason, Rejected, parse_event
from operators.profile import ProfileState, to_fields

T0 = 1_714_564_800_000
LIM = Limits(timestamp_min_ms=0, max_traits=8, max_trait_bytes=64, traits_deny=frozenset({"password", "ssn"}))
DD = DedupeConfig()


def ev(i: int, t: int, etype: str = "identify", uid: str = "u1", **kw: object) -> Event | Rejected:
    body = {"type": etype, "userId": uid, "messageId": f"m{i}", "timestamp": t / 1000, "receivedAt": (t + 1) / 1000, **kw}
    return parse_event(body, LIM)


def fields_of(evs: list[Event]) -> dict[str, str]:
    p = ProfileState("u1")
    for e in evs:
        p.apply(e, DD, max_traits=LIM.max_traits)
    return to_fields(p)


def test_reserved_traits_are_snake_case_and_custom_keep_their_spelling() -> None:
    e = ev(1, T0, traits={"email": "ann@example.com", "firstName": "Ann", "lastName": "Lee", "createdAt": "2020-01-01",
                          "planTier": "Pro", "address": {"postalCode": "10017", "city": "NYC"},
                          "company": {"name": "Acme", "employeeCount": 5}})  # fmt: skip
    assert isinstance(e, Event)
    assert e.email == "ann@example.com"
    assert e.user_traits == {"first_name": "Ann", "last_name": "Lee", "created_at": "2020-01-01", "planTier": "Pro",
                             "address": {"postal_code": "10017", "city": "NYC"},
                             "company": {"name": "Acme", "employee_count": 5}}  # fmt: skip
    # email is the profile's own field, not a trait (one rule for it)
    assert "email" not in orjson.loads(fields_of([e])["traits"])


def test_both_spellings_the_snake_case_one_wins_in_any_key_order() -> None:
    a = ev(1, T0, traits={"firstName": "A", "first_name": "B"})
    b = ev(2, T0, traits={"first_name": "B", "firstName": "A"})
    assert isinstance(a, Event) and isinstance(b, Event)
    assert a.user_traits == b.user_traits == {"first_name": "B"}


def test_context_traits_on_any_call_and_identify_traits_over_them() -> None:
    # RudderStack sends identify traits only in context.traits
    t = ev(1, T0, "track", event="Viewed", context={"traits": {"firstName": "Ann", "plan": "free"}})
    i = ev(2, T0, context={"traits": {"plan": "free"}}, traits={"plan": "pro"})
    assert isinstance(t, Event) and isinstance(i, Event)
    assert t.user_traits == {"first_name": "Ann", "plan": "free"}
    assert i.user_traits == {"plan": "pro"}
    # a track's own properties are not traits; an identify with only an email states none
    e = ev(3, T0, traits={"email": "a@b.co"})
    assert isinstance(e, Event) and e.user_traits is None


def test_bounds_are_dead_letters_with_reasons() -> None:
    many = ev(1, T0, traits={f"t{i}": i for i in range(9)})
    big = ev(2, T0, traits={"bio": "x" * 100})
    deep = ev(3, T0, traits={"d": {"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": {"i": 1}}}}}}}}}})
    bad_ctx = ev(4, T0, "track", event="X", context={"traits": ["not", "an", "object"]})
    assert isinstance(many, Rejected) and many.reason == Reason.TOO_MANY_TRAITS
    assert isinstance(big, Rejected) and big.reason == Reason.TRAIT_TOO_LARGE
    assert isinstance(deep, Rejected) and deep.reason == Reason.INVALID_FIELD_TYPE
    assert isinstance(bad_ctx, Rejected) and bad_ctx.reason == Reason.INVALID_FIELD_TYPE
    # exactly at the bounds: accepted
    ok = ev(5, T0, traits={f"t{i}": "y" * 60 for i in range(8)})
    assert isinstance(ok, Event) and len(ok.user_traits or {}) == 8


def test_deny_list_is_never_stored_not_even_in_a_dead_letter() -> None:
    e = ev(1, T0, traits={"firstName": "Ann", "Password": "hunter2"}, context={"traits": {"ssn": "123-45-6789"}})
    assert isinstance(e, Event) and e.user_traits == {"first_name": "Ann"}
    assert "hunter2" not in fields_of([e])["traits"]
    # rejected for another reason: the stored raw copy has the denied traits removed
    r = ev(2, T0, traits={"password": "hunter2", "bio": "x" * 100}, context={"traits": {"SSN": "123-45-6789"}})
    assert isinstance(r, Rejected) and r.reason == Reason.TRAIT_TOO_LARGE
    assert b"hunter2" not in r.raw and b"123-45-6789" not in r.raw and b"bio" in r.raw


def test_last_writer_by_event_time_and_null_tombstones() -> None:
    new = ev(1, T0 + 10, traits={"plan": "pro"})
    old = ev(2, T0, traits={"plan": "free", "first_name": "Ann"})  # arrives later, is older
    unset = ev(3, T0 + 20, traits={"first_name": None})
    older_name = ev(4, T0 + 5, traits={"first_name": "Anne"})  # older than the unset: must not resurrect
    evs = [e for e in (new, old, unset, older_name) if isinstance(e, Event)]
    assert len(evs) == 4
    assert orjson.loads(fields_of(evs)["traits"]) == {"plan": "pro"}


def test_a_merge_folds_traits_by_the_same_rule() -> None:
    a, b = ProfileState("u1"), ProfileState("u2")
    e1 = ev(1, T0 + 10, traits={"plan": "pro", "first_name": None})
    e2 = ev(2, T0, uid="u2", traits={"plan": "free", "first_name": "Ann", "city": "Oslo"})
    assert isinstance(e1, Event) and isinstance(e2, Event)
    a.apply(e1, DD)
    b.apply(e2, DD)
    a2, b2 = ProfileState("u1"), ProfileState("u2")
    a2.apply(e1, DD)
    b2.apply(e2, DD)
    a.merge(b, DD)
    b2.merge(a2, DD)
    assert orjson.loads(to_fields(a)["traits"]) == orjson.loads(to_fields(b2)["traits"]) == {"plan": "pro", "city": "Oslo"}


def test_the_profile_holds_at_most_max_traits_the_oldest_let_go() -> None:
    evs = [ev(i, T0 + i, traits={f"t{i}": i}) for i in range(12)]
    got = orjson.loads(fields_of([e for e in evs if isinstance(e, Event)])["traits"])
    assert got == {f"t{i}": i for i in range(4, 12)}


_VALUES = st.one_of(st.none(), st.integers(-3, 3), st.sampled_from(["a", "b", "Ann"]), st.lists(st.integers(0, 2), max_size=2))
_WRITES = st.lists(st.tuples(st.integers(0, 5), st.dictionaries(st.sampled_from(["firstName", "first_name", "plan", "a", "b", "c", "d", "e", "f", "g"]), _VALUES, max_size=4)),
                   min_size=1, max_size=14)  # fmt: skip


@settings(max_examples=150, deadline=None, derandomize=True)
@given(_WRITES, st.integers(0, 2**32 - 1))
def test_traits_do_not_depend_on_arrival_order(writes: list[tuple[int, dict[str, object]]], seed: int) -> None:
    """Shuffled delivery (ties in event time included, and more names than the cap of 8) gives
    the same traits, and the same as splitting the events over two merged users."""
    evs = [ev(i, T0 + t, traits=tr) for i, (t, tr) in enumerate(writes)]
    evs_ok = [e for e in evs if isinstance(e, Event)]
    base = fields_of(evs_ok)["traits"]
    shuffled = list(evs_ok)
    random.Random(seed).shuffle(shuffled)
    assert fields_of(shuffled)["traits"] == base
    half = len(shuffled) // 2
    a, b = ProfileState("u1"), ProfileState("u1")
    for e in shuffled[:half]:
        a.apply(e, DD, max_traits=8)
    for e in shuffled[half:]:
        b.apply(e, DD, max_traits=8)
    a.merge(b, DD, max_traits=8)
    assert to_fields(a)["traits"] == base


def test_group_calls_list_the_users_groups() -> None:
    g1 = ev(1, T0, "group", groupId="acme", traits={"name": "Acme", "employees": 30})
    g2 = ev(2, T0 + 1, "group", groupId="beta")
    assert isinstance(g1, Event) and isinstance(g2, Event)
    assert g1.group_id == "acme" and g1.group_traits == {"name": "Acme", "employees": 30}
    assert g1.user_traits is None  # group traits are the account's, not the user's
    assert fields_of([g2, g1])["groups"] == '["acme","beta"]'


_JSON = st.recursive(st.none() | st.booleans() | st.integers(-10, 10) | st.text(max_size=12),
                     lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=6), kids, max_size=3),
                     max_leaves=12)  # fmt: skip
_NAMES = st.sampled_from(["firstName", "first_name", "lastName", "email", "Password", "ssn", "createdAt", "plan", "x"]) | st.text(max_size=8)


@settings(max_examples=100, deadline=None, derandomize=True)
@given(st.dictionaries(_NAMES, _JSON, max_size=10), st.one_of(st.none(), st.dictionaries(_NAMES, _JSON, max_size=6)))
def test_trait_parsing_never_crashes_and_never_keeps_what_it_must_not(traits: dict, ctx: dict | None) -> None:
    """Any traits and context.traits: a valid event or a dead letter with a reason code; a valid
    one holds no email, no denied name, no camelCase spelling of a reserved trait, at most the cap."""
    body: dict = {"traits": traits}
    if ctx is not None:
        body["context"] = {"traits": ctx}
    e = ev(1, T0, **body)
    if isinstance(e, Rejected):
        assert e.reason in (Reason.TOO_MANY_TRAITS, Reason.TRAIT_TOO_LARGE, Reason.INVALID_FIELD_TYPE, Reason.INVALID_EMAIL,
                            Reason.INVALID_TEXT, Reason.INVALID_NUMBER)  # fmt: skip
        return
    got = e.user_traits or {}
    assert len(got) <= LIM.max_traits
    assert not {"email", "firstName", "lastName", "createdAt"} & got.keys()
    assert not any(k.lower() in LIM.traits_deny for k in got)
    for k in ("first_name", "plan"):  # a snake_case spelling always beats the camelCase one
        if k in traits:
            assert got[k] == traits[k]
    fields_of([e])  # folds and renders
