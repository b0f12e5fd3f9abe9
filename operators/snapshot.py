"""Versioned snapshots of the dataflow's state: the one place their bytes are made and read.

A snapshot is ``MAGIC + version (2 bytes, big-endian) + pickle``. :func:`load` reads any version
up to :data:`VERSION` and brings the object forward one version at a time through
:data:`MIGRATIONS` (``MIGRATIONS[v]`` turns a version-``v`` object into a version-``v + 1`` one),
so a running deployment whose recovery store holds older snapshots resumes after an upgrade.
Bytes without the magic are version 0: the bare pickles written before snapshots were versioned
(a test restores a recovery store written by that layout).

Renaming a state class's field or module is a version bump: raise :data:`VERSION`, add the step
to :data:`MIGRATIONS`, and (for a rename) give the class a ``__setstate__`` that accepts the old
names. A snapshot from a newer version than this code knows is refused (``ValueError``), never
misread. Adding a field to a per-user state class (appended, with a default) needs no bump, but
its generated packer must be rewritten: ``python -m liveprofile.devtools.packers`` (a test fails
until it is).

Versions: 0 bare pickles; 1 the first versioned layout; 2 profile states with order records,
unsubscribe, consent and machine opens; 3 behaviour states with the abuse logs (orders, emails)
and shard models with the ``abuse`` forest; 4 profile states with traits and group ids; 5 the
identity stage's state is an :class:`operators.identity.AnonState` (the link and the messageIds
it routed), not the bare linked id; 6 user states with computed traits and audiences; 7 computed
traits with a history/live boundary and the backfill seeds they took (and user states with the
fingerprint of the definitions they were rendered under); 8 anonymous user states with the log of
their newest applied items (:class:`operators.user.MergeLog`: an identity merge counts each event
once, whichever copy of a replayed export the user reads); 9 compact per-user states: the state
classes pickle a packed tuple (:func:`pack`: a bitmask of the fields away from their defaults and
only those values, no field names; dedupe times as 32-bit offsets, the merge log compressed), read
by the same ``__setstate__`` that still reads every older layout; 10 user states pickled flat
(:meth:`operators.user.UserState.__reduce__`: the nested states' packed tuples inside the user's,
one function reference instead of one class reference per nested state).

A snapshot may also be **compressed** (:func:`compressed`): the version field's high bit set and
the pickle zlib-compressed. The dataflow keeps idle users' states in this form (about three
quarters of the size); :func:`load` reads both, and code from before the flag refuses a
compressed snapshot as "newer" (its version reads as ``0x8000 + version``) rather than misreading it.

>>> load(dump({"a": 1})), load(pickle.dumps(["u1"]))
({'a': 1}, ['u1'])
>>> st = load(dump("u1", version=4)); type(st).__name__, st.linked, len(st.seen)  # a v4 identity snapshot
('AnonState', 'u1', 0)
"""

from __future__ import annotations

import pickle
import zlib
from collections.abc import Callable, Mapping
from dataclasses import MISSING, fields
from operator import attrgetter
from typing import Any

__all__ = ["VERSION", "MAGIC", "MIGRATIONS", "dump", "load", "compressed", "is_compressed", "version_of", "pack", "unpack", "is_packed", "reset_to_defaults", "restore", "pack_defaults", "pack_bit", "packed_index", "slots_state", "set_slots_state"]

MAGIC = b"LPS"
#: the layout this code writes
VERSION = 10
#: the version field's flag of a :func:`compressed` snapshot
_ZLIB = 0x8000


def _from_bare_pickle(obj: Any) -> Any:
    """0 -> 1: the first versioned layout holds the same objects as the bare pickles before it."""
    return obj


def _orders_consent_unsubscribe(obj: Any) -> Any:
    """1 -> 2: :class:`operators.profile.ProfileState` gained the order records (refunds and
    cancellations), ``unsubscribed``, ``consent``, and the machine-open bookkeeping
    (``email_opens_machine``, ``email_sent``, ``email_open_log``): appended fields.
    Its ``__setstate__`` gives a version-1 pickle the new fields' defaults while unpickling
    (the user states also travel pickled inside buffered merges, which no snapshot step
    sees), so the objects are already version 2 here."""
    return obj


def _abuse_features(obj: Any) -> Any:
    """2 -> 3: :class:`operators.behaviour.Behaviour` gained the abuse logs and counters
    (``orders_log``, ``emails_log``, ``order_burst``...): appended fields its ``__setstate__``
    defaults while unpickling (so user states are already version 3 here, also inside buffered
    merges); :class:`operators.models.ShardModels` gained the ``abuse`` forest, added here
    (:func:`operators.models.add_missing_forests`)."""
    from operators.models import ShardModels, add_missing_forests

    return add_missing_forests(obj) if isinstance(obj, ShardModels) else obj


def _traits_groups(obj: Any) -> Any:
    """3 -> 4: :class:`operators.profile.ProfileState` gained ``traits`` and ``groups`` (appended
    fields): its ``__setstate__`` gives an older pickle empty ones while unpickling, so the
    objects are already version 4 here (older profiles start with no traits: the traits of
    events before the upgrade were never kept)."""
    return obj


def _anon_state(obj: Any) -> Any:
    """4 -> 5: the identity stage's snapshot was the linked user id (a ``str``; no other step's
    state is one); it becomes an :class:`operators.identity.AnonState` with that link and no
    remembered ids (events routed before the upgrade are deduplicated where they were counted,
    as before it)."""
    if isinstance(obj, str):
        from operators.identity import AnonState

        return AnonState(obj)
    return obj


def _computed_traits(obj: Any) -> Any:
    """5 -> 6: :class:`operators.user.UserState` gained ``computed`` (the computed traits' state),
    ``audiences`` and ``computed_at`` (appended fields): its ``__setstate__`` gives an older pickle
    no computed state while unpickling (also inside buffered merges), so the objects are already
    version 6 here. Computed traits count the events from the upgrade on (the events before it
    were never kept per trait)."""
    return obj


def _seed_boundaries(obj: Any) -> Any:
    """6 -> 7: each computed trait's slot (``operators.computed._Trait``) gained ``boundary`` (the
    receipt time splitting history from live) and ``seeded`` (the backfill chunks it took): appended
    fields its ``__setstate__`` defaults while unpickling (``boundary`` 0: everything the slot
    counted was live; a backfill adds nothing to it), so the objects are already version 7 here."""
    return obj


def _merge_logs(obj: Any) -> Any:
    """7 -> 8: :class:`operators.user.UserState` gained ``merge_log`` (an appended field): its
    ``__setstate__`` gives an older pickle none while unpickling (also inside buffered merges), so
    the objects are already version 8 here. An anonymous state from before the upgrade keeps no
    log and merges as exported (as before it: a replayed export of it can count an event twice);
    one created after the upgrade logs from its first event."""
    return obj


def _compact_states(obj: Any) -> Any:
    """8 -> 9: the per-user state classes pickle a packed tuple (:func:`pack`) instead of their
    slots dict; their ``__setstate__`` reads both (also inside buffered merges and merge logs), so
    the objects are already version 9 here and the next snapshot of each is written packed."""
    return obj


def _flat_user_states(obj: Any) -> Any:
    """9 -> 10: a user state pickles flat (:meth:`operators.user.UserState.__reduce__`: its
    nested states' packed tuples inside its own, one function reference instead of one per
    class); the objects a version-9 pickle builds are the same, so nothing changes here."""
    return obj


MIGRATIONS: Mapping[int, Callable[[Any], Any]] = {
    0: _from_bare_pickle,
    1: _orders_consent_unsubscribe,
    2: _abuse_features,
    3: _traits_groups,
    4: _anon_state,
    5: _computed_traits,
    6: _seed_boundaries,
    7: _merge_logs,
    8: _compact_states,
    9: _flat_user_states,
}


def dump(obj: Any, version: int = VERSION) -> bytes:
    """The snapshot bytes of ``obj`` at ``version``."""
    return MAGIC + version.to_bytes(2, "big") + pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)


def version_of(raw: bytes) -> int:
    """The version a snapshot was written at (0: a bare pickle from before versioning).

    >>> version_of(dump(1)), version_of(pickle.dumps(1)), version_of(compressed(dump(1)))
    (10, 0, 10)
    """
    return int.from_bytes(raw[3:5], "big") & ~_ZLIB if raw[:3] == MAGIC else 0


def is_compressed(raw: bytes) -> bool:
    """Is ``raw`` a :func:`compressed` snapshot?

    >>> is_compressed(dump(1)), is_compressed(compressed(dump(1))), is_compressed(pickle.dumps(1))
    (False, True, False)
    """
    return raw[:3] == MAGIC and bool(raw[3] & 0x80)


def compressed(raw: bytes) -> bytes:
    """The versioned snapshot ``raw`` (from :func:`dump`) with its pickle zlib-compressed (level 1:
    the fastest; a per-user state's pickle shrinks by about a quarter); already compressed: ``raw``.

    >>> raw = dump({"u": "x" * 300}); z = compressed(raw)
    >>> len(z) < len(raw), load(z) == load(raw), compressed(z) is z
    (True, True, True)
    """
    if raw[:3] != MAGIC:
        raise ValueError("only a versioned snapshot (snapshot.dump) can be compressed")
    if raw[3] & 0x80:
        return raw
    return raw[:3] + bytes((raw[3] | 0x80, raw[4])) + zlib.compress(raw[5:], 1)


def load(raw: bytes, version: int = VERSION, migrations: Mapping[int, Callable[[Any], Any]] = MIGRATIONS) -> Any:
    """The object in snapshot ``raw``, migrated up to ``version``."""
    v = version_of(raw)
    if v > version:
        raise ValueError(f"snapshot version {v} is newer than this code's {version}: upgrade the dataflow")
    obj = pickle.loads((zlib.decompress(raw[5:]) if raw[3] & 0x80 else raw[5:]) if v else raw)
    while v < version:
        obj = migrations[v](obj)
        v += 1
    return obj


def reset_to_defaults(obj: Any, state: Any) -> dict[str, Any]:
    """The first half of a slots dataclass's ``__setstate__`` for pickles of this or an earlier
    layout: every field of ``obj`` set to its default (so fields an older pickle lacks get theirs),
    and the pickled ``state``'s slot values returned for the caller to restore.

    >>> from dataclasses import dataclass, field
    >>> @dataclass(slots=True)
    ... class S:
    ...     a: int = 1
    ...     b: list = field(default_factory=list)
    >>> s = S.__new__(S)
    >>> reset_to_defaults(s, (None, {"a": 5})), s.a, s.b
    ({'a': 5}, 1, [])
    """
    for f in fields(obj):
        if f.default is not MISSING:
            object.__setattr__(obj, f.name, f.default)
        elif f.default_factory is not MISSING:
            object.__setattr__(obj, f.name, f.default_factory())
    slots = state[1] if isinstance(state, tuple) else state
    return dict(slots or {})


_REQUIRED = object()
#: per slots dataclass: a getter of all its field values (a tuple, declaration order), their names,
#: each one's default (``_REQUIRED``: none) and factory (``None``: none; a fresh value per restored
#: object), and each field's mask bit
_LAYOUTS: dict[type, tuple[Any, tuple[str, ...], tuple[Any, ...], tuple[Callable[[], Any] | None, ...], tuple[int, ...]]] = {}


def _layout(cls: type) -> tuple[Any, tuple[str, ...], tuple[Any, ...], tuple[Callable[[], Any] | None, ...], tuple[int, ...]]:
    lay = _LAYOUTS.get(cls)
    if lay is None:
        fs = fields(cls)
        names = tuple(f.name for f in fs)
        factories = tuple(f.default_factory if f.default_factory is not MISSING else None for f in fs)
        defaults = tuple(f.default if f.default is not MISSING else (f.default_factory() if f.default_factory is not MISSING else _REQUIRED) for f in fs)
        get = attrgetter(*names) if len(names) > 1 else (lambda o, n=names[0]: (getattr(o, n),))
        lay = _LAYOUTS[cls] = (get, names, defaults, factories, tuple(1 << i for i in range(len(fs))))
    return lay


def pack_defaults(cls: type) -> tuple[Any, ...]:
    """The default of each field of slots dataclass ``cls`` as :func:`pack` compares them (the
    same objects: a factory's product made once), for the packers generated by
    :mod:`liveprofile.devtools.packers`."""
    return _layout(cls)[2]


def pack_bit(cls: type, name: str) -> int:
    """The :func:`pack` mask bit of field ``name`` of slots dataclass ``cls``."""
    _, names, _, _, bits = _layout(cls)
    return bits[names.index(name)]


def packed_index(mask: int, bit: int) -> int:
    """Where the field of mask bit ``bit`` sits in a :func:`pack` ed tuple with ``mask``
    (``0``: left out, at its default).

    >>> packed_index(0b1011, 0b1000), packed_index(0b1011, 0b0100), packed_index(0b1011, 1)
    (3, 0, 1)
    """
    return (mask & (bit - 1)).bit_count() + 1 if mask & bit else 0


def pack(obj: Any, skip: frozenset[str] = frozenset()) -> tuple[Any, ...]:
    """A slots dataclass's compact pickled state: ``(mask, *values)``, where bit ``i`` of ``mask``
    says field ``i`` (declaration order) differs from its default and ``values`` are those fields'
    values in order (a value equal to its default *and of the same type* is left out: ``0`` never
    stands for ``0.0`` or ``False``). Fields in ``skip`` are never written (derived ones: the
    owner's ``__setstate__`` recomputes them). :func:`unpack` reverses it; fields appended to the
    class later are beyond the mask, so an older packed state restores them with their defaults.

    >>> from dataclasses import dataclass, field
    >>> @dataclass(slots=True)
    ... class S:
    ...     a: int = 1
    ...     b: list = field(default_factory=list)
    ...     c: float = 0.0
    >>> pack(S()), pack(S(2, [3], 0)), pack(S(2, [3], 0), frozenset({"b"}))
    ((0,), (7, 2, [3], 0), (5, 2, 0))
    >>> s = S.__new__(S); unpack(s, (6, [3], 0)); s
    S(a=1, b=[3], c=0)
    """
    get, names, defaults, _, bits = _layout(type(obj))
    mask = 0
    out: list[Any] = [0]
    for v, d, bit in zip(get(obj), defaults, bits, strict=True):
        if v is d or (type(v) is type(d) and v == d):
            continue
        mask |= bit
        out.append(v)
    if skip:
        for i, name in enumerate(names):
            if mask & bits[i] and name in skip:
                del out[packed_index(mask, bits[i])]
                mask &= ~bits[i]
    out[0] = mask
    return tuple(out)


def unpack(obj: Any, state: tuple[Any, ...]) -> None:
    """Restore a :func:`pack` ed ``state`` into ``obj`` (made by ``cls.__new__``): every field is
    set, the ones the mask leaves out to their defaults (a fresh one from a factory)."""
    _, names, defaults, factories, bits = _layout(type(obj))
    mask = state[0]
    j = 1
    setattr_ = object.__setattr__
    for name, d, fac, bit in zip(names, defaults, factories, bits, strict=True):
        if mask & bit:
            setattr_(obj, name, state[j])
            j += 1
        elif fac is not None:
            setattr_(obj, name, fac())
        elif d is not _REQUIRED:
            setattr_(obj, name, d)


def is_packed(state: Any) -> bool:
    """Whether a ``__setstate__`` argument is a :func:`pack` ed state (older layouts pickled the
    slots as ``(None, {name: value})`` or a bare dict)."""
    return type(state) is tuple and bool(state) and type(state[0]) is int


def restore(obj: Any, state: Any) -> bool:
    """The whole ``__setstate__`` of a packed slots dataclass: restore ``state`` (a :func:`pack` ed
    tuple, or a pickle of an earlier layout, whose missing fields get their defaults) into ``obj``;
    ``True`` when it was packed (callers that post-process one layout tell them apart).

    >>> from dataclasses import dataclass, field
    >>> @dataclass(slots=True)
    ... class S:
    ...     a: int = 1
    ...     b: list = field(default_factory=list)
    >>> s, t = S.__new__(S), S.__new__(S)
    >>> restore(s, pack(S(5, [2]))), s, restore(t, (None, {"a": 7})), t
    (True, S(a=5, b=[2]), False, S(a=7, b=[]))
    """
    if is_packed(state):
        unpack(obj, state)
        return True
    for k, v in reset_to_defaults(obj, state).items():
        object.__setattr__(obj, k, v)
    return False


def slots_state(obj: Any) -> tuple[None, dict[str, Any]]:
    """The ``__getstate__`` of a slots dataclass pickled as Python pickles one by default
    (``(None, {field: value})``, declaration order; what an unset field leaves out): a compiled
    (mypyc) class writes these same bytes, and reads the pickles written before it was compiled.

    >>> from dataclasses import dataclass
    >>> @dataclass(slots=True)
    ... class S:
    ...     a: int
    ...     b: str = "x"
    >>> slots_state(S(1)), slots_state(S(1)) == S(1).__reduce_ex__(5)[2]  # the default pickle's state
    ((None, {'a': 1, 'b': 'x'}), True)
    """
    out: dict[str, Any] = {}
    for name in _layout(type(obj))[1]:
        try:
            out[name] = getattr(obj, name)
        except AttributeError:
            continue
    return (None, out)


def set_slots_state(obj: Any, state: Any) -> None:
    """The ``__setstate__`` that reads :func:`slots_state` (and a bare ``{field: value}``)."""
    slots = state[1] if isinstance(state, tuple) else state
    for k, v in (slots or {}).items():
        object.__setattr__(obj, k, v)
