"""The profile schema: every field of a profile hash, in one table.

Each :class:`Field` says what the value is (:class:`Kind`), which stage writes it
(:class:`Owner`), whether the email platforms get it (``pushed``), whether the profile API shows
it (``shown``), and which segment set it drives (``segment``). Everything that needs to know about
fields derives it from :data:`FIELDS`:

* the renderers (:func:`operators.profile.to_fields`, :func:`operators.user.render`, the models
  step, :func:`operators.rfm.rfm_fields`) write exactly the fields their owner has here (tests;
  ``computed`` and ``audiences`` only while definitions are loaded);
* the profile script's segment table (:func:`lua_segment_table`, rendered into
  ``liveprofile/store/lua/profile.lua``);
* the sync's value typing and what it pushes (:func:`names`, :data:`PUSHED`);
* the API's decoding and what it hides (:data:`JSON_FIELDS`, :data:`SHOWN`).

Adding a field means adding a row here; a test fails until its owner renders it.

>>> sorted(names(Kind.JSON))
['anonymous_ids', 'audience_rules', 'audiences', 'cart', 'computed', 'consent', 'groups', 'interests', 'traits']
>>> [f.name for f in FIELDS if f.segment]
['cart_abandoned', 'top_category', 'rfm_segment', 'suspect']
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = [
    "Kind", "Owner", "Segment", "Field", "FIELDS", "BY_NAME", "names", "owned_by",
    "PUSHED", "SHOWN", "JSON_FIELDS", "lua_segment_table",
]  # fmt: skip


class Kind(StrEnum):
    """How a value is spelled in the hash (always a string there) and typed for the platforms."""

    TEXT = "text"  # as is
    INT = "int"  # decimal integer
    MONEY = "money"  # decimal with 2 places
    FLOAT = "float"  # decimal fraction
    FLAG = "flag"  # "0" / "1"
    TIME = "time"  # ISO 8601 UTC, "" when unknown
    JSON = "json"  # a JSON document


class Owner(StrEnum):
    """The stage that writes a field."""

    CORE = "core"  # operators.profile.to_fields: counters, orders, cart, email, engagement
    USER = "user"  # operators.user.render: interest and sessions, on top of core
    MODELS = "models"  # the models step (anomaly scores, propensity), as patches
    RFM = "rfm"  # operators.rfm.rfm_fields, scored by the sinks against the population
    STORE = "store"  # the profile script itself: write bookkeeping


@dataclass(frozen=True, slots=True)
class Segment:
    """The segment a field drives: ``{prefix}:{key}{value}`` for a value segment (``flag=False``),
    ``{prefix}:{key}`` while the value is ``"1"`` for a flag."""

    key: str
    flag: bool = False


@dataclass(frozen=True, slots=True)
class Field:
    """One profile field (see the module docstring)."""

    name: str
    kind: Kind
    owner: Owner
    pushed: bool = True
    shown: bool = True
    segment: Segment | None = None


FIELDS: tuple[Field, ...] = (
    Field("user_id", Kind.TEXT, Owner.CORE, pushed=False),  # the platforms' own id field carries it
    Field("email", Kind.TEXT, Owner.CORE),
    Field("event_count", Kind.INT, Owner.CORE),
    Field("first_seen_at", Kind.TIME, Owner.CORE),
    Field("last_seen_at", Kind.TIME, Owner.CORE),
    Field("purchase_count", Kind.INT, Owner.CORE),
    Field("revenue_total", Kind.MONEY, Owner.CORE),
    Field("refund_total", Kind.MONEY, Owner.CORE),
    Field("cancelled_total", Kind.MONEY, Owner.CORE),
    Field("revenue_net", Kind.MONEY, Owner.CORE),
    Field("first_purchase_at", Kind.TIME, Owner.CORE),
    Field("last_purchase_at", Kind.TIME, Owner.CORE),
    Field("cart_value", Kind.MONEY, Owner.CORE),
    Field("cart_items", Kind.INT, Owner.CORE),
    Field("cart", Kind.JSON, Owner.CORE),
    Field("cart_abandoned", Kind.FLAG, Owner.CORE, segment=Segment("segment:cart_abandoned", flag=True)),
    Field("email_opens", Kind.INT, Owner.CORE),
    Field("email_clicks", Kind.INT, Owner.CORE),
    Field("last_email_open_at", Kind.TIME, Owner.CORE),
    Field("email_opens_machine", Kind.INT, Owner.CORE),  # Apple MPP and other proxy opens, apart
    Field("email_unsubscribed", Kind.FLAG, Owner.CORE),
    Field("unsubscribed_at", Kind.TIME, Owner.CORE),
    Field("consent", Kind.JSON, Owner.CORE),  # category -> granted, from the events' consent context
    Field("anonymous_ids", Kind.JSON, Owner.CORE),
    Field("traits", Kind.JSON, Owner.CORE),  # the user's traits (operators.traits), pushed under each platform's names
    Field("groups", Kind.JSON, Owner.CORE),  # the group (account) ids of the user's group calls, sorted
    Field("interests", Kind.JSON, Owner.USER),
    Field("top_category", Kind.TEXT, Owner.USER, segment=Segment("segment:interest:")),
    Field("interests_at", Kind.TIME, Owner.USER),
    Field("session_count", Kind.INT, Owner.USER),
    # only while definitions are loaded (LIVEPROFILE_DEFINITIONS; operators.user.render, operators.audiences):
    Field("computed", Kind.JSON, Owner.USER),  # trait name -> value; the platforms get each trait under its name
    # the audience names the user is in, sorted; delivered through each platform's list mechanism, not as a field;
    # the profile script keeps {p}:audience:{name} and the change feed's audiences_entered / audiences_exited from it
    Field("audiences", Kind.JSON, Owner.USER, pushed=False),
    # the late audiences' rules (operators.residual): what is left of each `when` that reads RFM or model
    # fields, evaluated by the profile script whenever a rule or a late field changes; internal
    Field("audience_rules", Kind.JSON, Owner.USER, pushed=False, shown=False),
    Field("rfm_r", Kind.INT, Owner.RFM),
    Field("rfm_f", Kind.INT, Owner.RFM),
    Field("rfm_m", Kind.INT, Owner.RFM),
    Field("rfm_segment", Kind.TEXT, Owner.RFM, segment=Segment("segment:")),
    Field("anomaly_score", Kind.FLOAT, Owner.MODELS),
    Field("suspect", Kind.FLAG, Owner.MODELS, segment=Segment("segment:suspect", flag=True)),
    Field("purchase_propensity", Kind.FLOAT, Owner.MODELS),
    Field("seq", Kind.INT, Owner.STORE, pushed=False, shown=False),  # the input sequence guard
    Field("version", Kind.INT, Owner.STORE, pushed=False),
    Field("updated_at", Kind.TIME, Owner.STORE, pushed=False),
    Field("merged_into", Kind.TEXT, Owner.STORE, pushed=False, shown=False),  # tombstones only
)

BY_NAME: dict[str, Field] = {f.name: f for f in FIELDS}


def names(*kinds: Kind) -> frozenset[str]:
    """The fields of the given kinds."""
    return frozenset(f.name for f in FIELDS if f.kind in kinds)


def owned_by(owner: Owner) -> tuple[str, ...]:
    """The fields ``owner`` writes, in table order.

    >>> owned_by(Owner.RFM)
    ('rfm_r', 'rfm_f', 'rfm_m', 'rfm_segment')
    """
    return tuple(f.name for f in FIELDS if f.owner is owner)


#: fields the email platforms receive (any field not in the table, e.g. a later trait, is pushed too)
PUSHED = frozenset(f.name for f in FIELDS if f.pushed)
#: fields the profile API shows
SHOWN = frozenset(f.name for f in FIELDS if f.shown)
JSON_FIELDS = names(Kind.JSON)


def lua_segment_table() -> str:
    """The profile script's segment tables and the kinds of the late fields (what the late
    audiences' rules read, :mod:`operators.residual`), as the Lua line it holds.

    >>> print(lua_segment_table())
    local seg = {top_category = 'segment:interest:', rfm_segment = 'segment:'}; local flag = {cart_abandoned = 'segment:cart_abandoned', suspect = 'segment:suspect'}; local late = {rfm_r = 'int', rfm_f = 'int', rfm_m = 'int', rfm_segment = 'text', anomaly_score = 'float', suspect = 'flag', purchase_propensity = 'float'}
    """
    seg = ", ".join(f"{f.name} = '{f.segment.key}'" for f in FIELDS if f.segment and not f.segment.flag)
    flag = ", ".join(f"{f.name} = '{f.segment.key}'" for f in FIELDS if f.segment and f.segment.flag)
    late = ", ".join(f"{f.name} = '{f.kind}'" for f in FIELDS if f.owner in (Owner.RFM, Owner.MODELS))
    return f"local seg = {{{seg}}}; local flag = {{{flag}}}; local late = {{{late}}}"
