"""The profile schema (operators/schema.py) is the one list of fields: every renderer writes
exactly its owner's rows, and what is derived from it (the profile script's segment table, the
sync's typing, the API's decoding) cannot drift. Adding a field in one place only fails here."""

from __future__ import annotations

import re

import orjson

from liveprofile.api.content import HIDDEN_FIELDS, decode_profile
from liveprofile.store.scripts import PROFILE_LUA, SEGMENTS_MARK, lua_source
from liveprofile.sync.destinations.base import FLOAT_FIELDS, INT_FIELDS, JSON_FIELDS, typed
from operators.definitions import SPEC_EXAMPLE, load_definitions
from operators.events import Event, Limits, parse_event
from operators.models import model_fields
from operators.profile import ProfileState, to_fields
from operators.rfm import RfmEdges, RfmValues, rfm_fields
from operators.schema import BY_NAME, FIELDS, Kind, Owner, lua_segment_table, names, owned_by
from operators.user import UserConfig, UserState, render, step

T0 = 1714564800000


def _busy_user() -> UserState:
    evs = []
    for i in range(3):
        raw = {"type": "track", "event": "Product Viewed", "userId": "u1", "messageId": f"m{i}",
               "timestamp": (T0 + i * 60_000) / 1000, "receivedAt": (T0 + i * 60_000) / 1000, "properties": {"category": "shoes"}}  # fmt: skip
        ev = parse_event(orjson.dumps(raw), Limits())
        assert isinstance(ev, Event)
        evs.append(ev)
    st, _, _ = step(UserConfig(), None, "u1", evs)  # type: ignore[arg-type]
    assert st is not None
    return st


def test_names_are_unique_and_every_field_has_an_owner() -> None:
    assert len(BY_NAME) == len(FIELDS)
    assert {f.owner for f in FIELDS} == set(Owner)


def test_core_and_user_renderers_write_exactly_their_rows() -> None:
    assert tuple(to_fields(ProfileState("u1"))) == owned_by(Owner.CORE)
    outputs = {"computed", "audiences", "audience_rules"}  # only while definitions are loaded
    assert set(render(_busy_user())) == (set(owned_by(Owner.CORE)) | set(owned_by(Owner.USER))) - outputs
    defs = load_definitions(SPEC_EXAMPLE)
    assert set(render(_busy_user(), defs)) == set(owned_by(Owner.CORE)) | set(owned_by(Owner.USER))


def test_rfm_and_models_write_exactly_their_rows() -> None:
    assert tuple(rfm_fields(RfmEdges(), None)) == owned_by(Owner.RFM)
    edges = RfmEdges.from_json(None)
    assert set(rfm_fields(edges, RfmValues(T0, 1, 100))) == set(owned_by(Owner.RFM))
    assert set(model_fields(0.5, True, 0.25)) == set(owned_by(Owner.MODELS))


def test_the_profile_script_writes_the_store_rows_and_holds_the_schema_segments() -> None:
    src = lua_source("profile")
    for name in owned_by(Owner.STORE):
        assert f"'{name}'" in src, name
    lines = src.split("\n")
    i = next(n for n, ln in enumerate(lines) if ln.startswith(SEGMENTS_MARK))
    assert lines[i + 1] == lua_segment_table()  # the file as shipped equals what the schema renders
    assert lua_segment_table() in PROFILE_LUA
    seg_part, late_part = lines[i + 1].split("local late = ")
    assert set(re.findall(r"(\w+) = '", seg_part)) == {f.name for f in FIELDS if f.segment}
    assert dict(re.findall(r"(\w+) = '(\w+)'", late_part)) == {f.name: str(f.kind) for f in FIELDS if f.owner in (Owner.RFM, Owner.MODELS)}


def test_sync_typing_and_api_decoding_come_from_the_schema() -> None:
    assert names(Kind.INT, Kind.FLAG) == INT_FIELDS and names(Kind.MONEY, Kind.FLOAT) == FLOAT_FIELDS
    assert names(Kind.JSON) == JSON_FIELDS
    assert {f.name for f in FIELDS if not f.shown} == HIDDEN_FIELDS
    assert typed("session_count", "3") == 3 and typed("anonymous_ids", '["a1"]') == ["a1"]
    decoded = decode_profile({"anonymous_ids": '["a1"]', "seq": "3", "merged_into": "u2", "cart": "[]"})
    assert decoded == {"anonymous_ids": ["a1"], "cart": []}
