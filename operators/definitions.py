"""The definitions file (SPEC §6): computed traits and audiences, loaded and validated.

Contract
--------
``load_definitions(text, source)`` parses the YAML, validates it against :data:`SCHEMA` (a JSON
Schema document, checked with ``jsonschema``) and then semantically, and returns a frozen
:class:`Definitions` — or raises :class:`DefinitionsErrors` carrying *every* problem found, each a
:class:`DefinitionsError` (``line``, ``column``, both 1-based, the ``path`` in the document and a
``message``). Pure: no I/O, no clock.

Why a JSON Schema document (``jsonschema``) rather than typed Structs: it reports all errors at
once (``iter_errors``) with the path of each, which maps straight onto the YAML node tree
(``yaml.compose`` keeps every node's line and column), and the document itself is publishable.

Semantic checks on top of the schema: names ``[a-z][a-z0-9_]*`` unique across traits and
audiences; ``value`` required for every kind but ``count`` (which takes none); ``window`` is
``Nh``, ``Nd`` or ``all`` (default ``all``) and at most :data:`MAX_WINDOW_MS` (400 days);
expressions compile; a ``where`` reads only the event (``properties.``, ``context.``,
``traits.``); a ``value`` is one such path; ``computed.x`` and ``audience.x`` name a defined
trait / audience; audiences form no cycle. Unknown keys are errors (a typo such as ``widow``
must not pass silently) except ``description`` and keys starting with ``x-``.

``Definitions.audiences`` is in dependency order (an audience after every audience it reads;
file order otherwise). ``TraitDef.digest`` is a stable hash of what the trait computes (kind,
event, where, value, window — not the description), so a changed definition is detectable.
``Definitions.memberships(env, computed)`` evaluates every audience for one profile.

>>> d = load_definitions(SPEC_EXAMPLE)
>>> [t.name for t in d.computed_traits]
['shoe_views_7d', 'orders_7d', 'spend_90d']
>>> d.trait("spend_90d").window_ms == 90 * DAY_MS
True
>>> d.memberships({}, {"shoe_views_7d": 3, "orders_7d": 0})
('shoe_browsers_no_order',)
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jsonschema
import orjson
import yaml

from operators.expr import Expr, ExprError, Path, compile_expr, path_getter, to_predicate
from operators.schema import FIELDS, Kind, Owner

__all__ = [
    "KINDS",
    "VALUE_KINDS",
    "EVENT_TYPE_NAMES",
    "SCHEMA",
    "HOUR_MS",
    "DAY_MS",
    "MAX_WINDOW_MS",
    "TraitDef",
    "AudienceDef",
    "AUDIENCE_FIELDS",
    "Definitions",
    "DefinitionsError",
    "DefinitionsErrors",
    "load_definitions",
    "parse_window",
    "SPEC_EXAMPLE",
]

KINDS = ("count", "sum", "avg", "min", "max", "most_frequent", "first", "last", "unique_list", "unique_count")
VALUE_KINDS = frozenset(KINDS) - {"count"}
#: ``event:`` values that name an event *type* rather than a track event's name
EVENT_TYPE_NAMES = frozenset({"page", "screen", "identify", "group", "alias"})
EVENT_ROOTS = frozenset({"properties", "context", "traits"})
HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
MAX_WINDOW_MS = 400 * DAY_MS
NAME_RE = r"^[a-z][a-z0-9_]*$"
_WINDOW_RE = re.compile(r"^(?:([1-9][0-9]{0,5})([hd])|all)$")

#: profile fields an audience may read by name: those the per-user step writes (where audiences
#: are evaluated); the rest are scored later (RFM against the population, the models' scores).
#: Not ``computed`` and ``audiences``, the evaluation's own outputs (read ``computed.x`` / ``audience.x``)
_OUTPUTS = frozenset({"computed", "audiences"})
AUDIENCE_FIELDS = frozenset(f.name for f in FIELDS if f.owner in (Owner.CORE, Owner.USER) and f.name not in _OUTPUTS)
_JSON_AUDIENCE_FIELDS = frozenset(f.name for f in FIELDS if f.name in AUDIENCE_FIELDS and f.kind is Kind.JSON)
LATER_FIELDS = {f.name: str(f.owner) for f in FIELDS if f.owner in (Owner.RFM, Owner.MODELS)}

_EXTRA: dict[str, Any] = {"^x-": {}}
SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "liveprofile definitions",
    "type": "object",
    "required": ["version"],
    "properties": {
        "version": {"const": 1},
        "computed_traits": {"type": "array", "items": {"$ref": "#/$defs/trait"}},
        "audiences": {"type": "array", "items": {"$ref": "#/$defs/audience"}},
    },
    "patternProperties": _EXTRA,
    "additionalProperties": False,
    "$defs": {
        "name": {"type": "string", "pattern": NAME_RE, "maxLength": 64},
        "trait": {
            "type": "object",
            "required": ["name", "kind", "event"],
            "properties": {
                "name": {"$ref": "#/$defs/name"},
                "kind": {"enum": list(KINDS)},
                "event": {"type": "string", "minLength": 1, "maxLength": 200},
                "where": {"type": "string", "minLength": 1},
                "value": {"type": "string", "minLength": 1},
                "window": {"type": "string", "pattern": _WINDOW_RE.pattern},
                "description": {"type": "string"},
            },
            "patternProperties": _EXTRA,
            "additionalProperties": False,
        },
        "sync": {
            "type": "object",
            "properties": {
                "klaviyo": {
                    "type": "object", "required": ["list_id"],
                    "properties": {"list_id": {"type": "string", "pattern": "^[A-Za-z0-9]{1,64}$"}},
                    "additionalProperties": False,
                },
                "braze": {
                    "type": "object",
                    "properties": {"subscription_group_id": {"type": "string", "minLength": 1, "maxLength": 128}},
                    "additionalProperties": False,
                },
                "webhook": {"type": "boolean"},
            },
            "additionalProperties": False,
        },
        "audience": {
            "type": "object",
            "required": ["name", "when"],
            "properties": {
                "name": {"$ref": "#/$defs/name"},
                "when": {"type": "string", "minLength": 1},
                "description": {"type": "string"},
                "sync": {"$ref": "#/$defs/sync"},
            },
            "patternProperties": _EXTRA,
            "additionalProperties": False,
        },
    },
}
_VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)

SPEC_EXAMPLE = """\
version: 1
computed_traits:
  - name: shoe_views_7d          # [a-z][a-z0-9_]*, unique
    kind: count                  # count | sum | avg | min | max |
                                 # most_frequent | first | last |
                                 # unique_list | unique_count
    event: Product Viewed        # event name (track), or `page`, `identify`, ...
    where: properties.category == "shoes"   # optional condition on the event
    window: 7d                   # Nh | Nd | all (event time, sliding)
  - name: orders_7d
    kind: count
    event: Order Completed
    window: 7d
  - name: spend_90d
    kind: sum
    event: Order Completed
    value: properties.revenue    # the event field aggregated (not for count)
    window: 90d
audiences:
  - name: shoe_browsers_no_order
    when: computed.shoe_views_7d >= 3 and computed.orders_7d == 0
"""


@dataclass(frozen=True, slots=True)
class TraitDef:
    """One computed trait. ``window_ms`` ``None`` is all time; ``value`` a path into the event."""

    name: str
    kind: str
    event: str
    where: Expr | None
    value: tuple[str, ...] | None
    window_ms: int | None
    digest: str
    #: ``where`` and ``value`` compiled once (:func:`operators.expr.to_predicate`,
    #: :func:`operators.expr.path_getter`): what the per-event path calls; derived, not compared
    where_fn: Callable[[Mapping[str, Any]], bool] | None = field(default=None, repr=False, compare=False)
    value_fn: Callable[[Mapping[str, Any]], Any] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "where_fn", None if self.where is None else to_predicate(self.where))
        object.__setattr__(self, "value_fn", None if self.value is None else path_getter(self.value))

    def __reduce__(self) -> tuple[Any, ...]:  # the compiled functions are rebuilt, not pickled
        return (TraitDef, (self.name, self.kind, self.event, self.where, self.value, self.window_ms, self.digest))

    def matches(self, ev_type: str, ev_name: str, env: Mapping[str, Any]) -> bool:
        """Does an event (its type, name and ``{properties, context, traits}``) count for this trait?
        ``event: page`` (``screen``, ``identify``, ``group``, ``alias``) matches that event type;
        any other ``event`` matches a ``track`` event of that name."""
        if self.event in EVENT_TYPE_NAMES:
            if ev_type != self.event:
                return False
        elif ev_type != "track" or ev_name != self.event:
            return False
        return self.where_fn is None or self.where_fn(env)

    def value_of(self, env: Mapping[str, Any]) -> Any:
        return None if self.value_fn is None else self.value_fn(env)


@dataclass(frozen=True, slots=True)
class AudienceDef:
    """One audience: ``when`` holds; ``depends_on`` are the audiences it reads."""

    name: str
    when: Expr
    depends_on: frozenset[str]
    traits: frozenset[str]
    #: where membership is pushed, per destination (``sync:`` in the file): ``klaviyo`` →
    #: ``{"list_id": ...}``, ``braze`` → ``{"subscription_group_id": ...}`` or ``{}`` (the
    #: custom attribute), ``webhook`` → ``{}`` (``webhook: false``: ``{"enabled": "false"}``, not
    #: sent there); a destination not named gets the audience under its
    #: default mechanism (see docs/audiences.md)
    sync: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = ()
    #: ``when`` compiled once (:func:`operators.expr.to_predicate`): derived, not compared
    holds: Callable[[Mapping[str, Any]], bool] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "holds", to_predicate(self.when))

    def __reduce__(self) -> tuple[Any, ...]:  # the compiled function is rebuilt, not pickled
        return (AudienceDef, (self.name, self.when, self.depends_on, self.traits, self.sync))

    def sync_for(self, destination: str) -> dict[str, str] | None:
        """This audience's settings at ``destination`` (``None``: the file names none for it)."""
        for d, kv in self.sync:
            if d == destination:
                return dict(kv)
        return None


@dataclass(frozen=True, slots=True)
class Definitions:
    """A validated definitions file (traits in file order, audiences in dependency order)."""

    version: int
    computed_traits: tuple[TraitDef, ...]
    audiences: tuple[AudienceDef, ...]
    source: str = "<definitions>"
    _by_name: Mapping[str, TraitDef] = field(default_factory=dict, repr=False, compare=False)
    #: see :func:`fingerprint_of` (computed once at load: the per-user step records it per render)
    fingerprint: str = ""
    #: the profile fields (and ``traits``) the audiences read, sorted: all an evaluation needs
    profile_fields: tuple[str, ...] = ()
    _by_event: Mapping[tuple[str, str | None], tuple[TraitDef, ...]] = field(default_factory=dict, repr=False, compare=False)
    #: per audience, what its ``when`` reads: (computed traits, profile fields, audiences), sorted
    inputs: Mapping[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = field(default_factory=dict, repr=False, compare=False)
    #: the late audiences: their ``when`` reads an RFM or model field (:data:`LATER_FIELDS`), directly
    #: or through a late audience; decided by the profile script from rules (:mod:`operators.residual`)
    late: frozenset[str] = frozenset()
    #: what consumers derive from these definitions once per process (e.g. operators.computed's
    #: per-trait fold plans), by the consumer's key; not part of the value
    compiled: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def trait(self, name: str) -> TraitDef:
        return self._by_name[name]

    def traits_for(self, ev_type: str, ev_name: str) -> tuple[TraitDef, ...]:
        """The traits an event of this type and name can count for (file order): those over its
        name (a ``track``) or over its type (``page``, ``identify``, ...); ``where`` not checked."""
        return self._by_event.get((ev_type, ev_name if ev_type == "track" else None), ())

    def memberships(self, env: Mapping[str, Any], computed: Mapping[str, Any]) -> tuple[str, ...]:
        """The audiences (names, dependency order) one profile is in. ``env`` holds profile fields
        and ``traits``; ``computed`` the computed values; ``audience.x`` is this evaluation's."""
        inside: dict[str, bool] = {}
        flat = dict(env)  # one flat dict: the expressions' fast lookup path
        flat["computed"] = computed
        flat["audience"] = inside
        for a in self.audiences:
            inside[a.name] = a.holds(flat)  # type: ignore[misc]
        return tuple(n for n, v in inside.items() if v)


def fingerprint_of(traits: tuple[TraitDef, ...], audiences: tuple[AudienceDef, ...]) -> str:
    """A stable hash of what the file computes (the traits' digests, the audiences' names and
    conditions, not descriptions): a profile rendered under another fingerprint is out of date.

    >>> a, b = load_definitions(SPEC_EXAMPLE), load_definitions(SPEC_EXAMPLE.replace(">= 3", ">= 2"))
    >>> a.fingerprint == load_definitions(SPEC_EXAMPLE).fingerprint, a.fingerprint == b.fingerprint
    (True, False)
    """
    canon = orjson.dumps([[(t.name, t.digest) for t in traits], [(a.name, str(a.when)) for a in audiences]])
    return hashlib.sha256(canon).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class DefinitionsError:
    line: int
    column: int
    path: str
    message: str

    def format(self, source: str) -> str:
        return f"{source}:{self.line}:{self.column}: {self.message}"


class DefinitionsErrors(ValueError):
    """Every problem in a definitions file, sorted by position."""

    def __init__(self, errors: list[DefinitionsError], source: str) -> None:
        self.errors = sorted(errors, key=lambda e: (e.line, e.column, e.message))
        self.source = source
        super().__init__("\n".join(e.format(source) for e in self.errors))


def parse_window(text: str) -> int | None:
    """``"7d"`` → ms, ``"all"`` → ``None``; raise ``ValueError`` otherwise.

    >>> parse_window("48h"), parse_window("all")
    (172800000, None)
    """
    m = _WINDOW_RE.match(text)
    if m is None:
        raise ValueError(f"window must be Nh, Nd or all, not {text!r}")
    if m.group(1) is None:
        return None
    return int(m.group(1)) * (HOUR_MS if m.group(2) == "h" else DAY_MS)


# ---------------------------------------------------------------- positions


class _Marks:
    """Document path → (line, column) of its node (and of its key, for mapping entries)."""

    def __init__(self) -> None:
        self.node: dict[tuple[Any, ...], tuple[int, int]] = {}
        self.key: dict[tuple[Any, ...], tuple[int, int]] = {}
        self.style: dict[tuple[Any, ...], str | None] = {}
        self.dupes: list[DefinitionsError] = []

    def walk(self, node: yaml.Node, path: tuple[Any, ...]) -> None:
        self.node[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
        if isinstance(node, yaml.ScalarNode):
            self.style[path] = node.style
        elif isinstance(node, yaml.SequenceNode):
            for i, child in enumerate(node.value):
                self.walk(child, (*path, i))
        elif isinstance(node, yaml.MappingNode):
            seen: set[str] = set()
            for k, v in node.value:
                name = k.value if isinstance(k, yaml.ScalarNode) else str(k.value)
                at = (k.start_mark.line + 1, k.start_mark.column + 1)
                if name in seen:
                    self.dupes.append(DefinitionsError(*at, _fmt_path((*path, name)), f"duplicate key {name!r}"))
                seen.add(name)
                self.key[(*path, name)] = at
                self.walk(v, (*path, name))

    def at(self, path: tuple[Any, ...]) -> tuple[int, int]:
        p = tuple(path)
        while p not in self.node and p:
            p = p[:-1]
        return self.node.get(p, (1, 1))


def _fmt_path(path: tuple[Any, ...]) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(document)"


def _schema_message(err: jsonschema.ValidationError) -> str:
    where = _fmt_path(tuple(err.absolute_path))
    v = err.validator
    if v == "required":
        missing = err.message.split("'")[1] if "'" in err.message else err.message
        return f"{where}: missing required key {missing!r}"
    if v == "additionalProperties":
        return f"{where}: {err.message.replace('Additional properties are not allowed', 'unknown key')}"
    if v == "enum" and err.absolute_path and err.absolute_path[-1] == "kind":
        return f"{where}: unknown kind {err.instance!r} (one of: {', '.join(KINDS)})"
    if v == "pattern" and err.absolute_path and err.absolute_path[-1] == "name":
        return f"{where}: name {err.instance!r} must match [a-z][a-z0-9_]* (lowercase, digits, _)"
    if v == "pattern" and err.absolute_path and err.absolute_path[-1] == "window":
        return f"{where}: window {err.instance!r} must be Nh, Nd or all (e.g. 48h, 7d)"
    if v == "const":
        return f"{where}: version must be 1"
    if v == "type":
        return f"{where}: must be {err.validator_value}, not {type(err.instance).__name__}"
    return f"{where}: {err.message}"


# ---------------------------------------------------------------- loading


def _digest(kind: str, event: str, where: Expr | None, value: tuple[str, ...] | None, window_ms: int | None) -> str:
    canon = orjson.dumps([kind, event, None if where is None else str(where), value, window_ms])
    return hashlib.sha256(canon).hexdigest()[:16]


def load_definitions(text: str, source: str = "<definitions>") -> Definitions:
    """Parse and validate a definitions file; raise :class:`DefinitionsErrors` with every problem."""
    try:
        loader = yaml.SafeLoader(text)
        try:
            node = loader.get_single_node()
            data = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        raise DefinitionsErrors([DefinitionsError(line, col, "(document)", f"YAML: {exc.problem or exc}")], source) from None
    except yaml.YAMLError as exc:
        raise DefinitionsErrors([DefinitionsError(1, 1, "(document)", f"YAML: {exc}")], source) from None
    marks = _Marks()
    if node is not None:
        marks.walk(node, ())
    errors: list[DefinitionsError] = list(marks.dupes)

    def err(path: tuple[Any, ...], message: str, pos: tuple[int, int] | None = None) -> None:
        line, col = pos or marks.at(path)
        errors.append(DefinitionsError(line, col, _fmt_path(path), message))

    if not isinstance(data, dict):
        err((), "the file must be a mapping with version, computed_traits and audiences")
        raise DefinitionsErrors(errors, source)
    bad_items: set[tuple[str, int]] = set()
    for e in _VALIDATOR.iter_errors(data):
        path = tuple(e.absolute_path)
        pos = None
        if e.validator == "additionalProperties" and isinstance(e.instance, dict):
            allowed = set(e.schema.get("properties", {}))
            extra = sorted(k for k in e.instance if k not in allowed and not str(k).startswith("x-"))
            for k in extra:
                err((*path, k), f"{_fmt_path(path)}: unknown key {k!r}", marks.key.get((*path, k)))
            if len(path) >= 2:
                bad_items.add((path[0], path[1]))
            continue
        err(path, _schema_message(e), pos)
        if len(path) >= 2 and isinstance(path[1], int):
            bad_items.add((path[0], path[1]))

    def expr_at(path: tuple[Any, ...], src: str) -> Expr | None:
        try:
            return compile_expr(src)
        except ExprError as exc:
            line, col = marks.at(path)
            style = marks.style.get(path)
            if "\n" not in src and style in (None, "", '"', "'"):
                col += exc.column - 1 + (1 if style in ('"', "'") else 0)
            err(path, f"{_fmt_path(path)}: {exc.message} (expression column {exc.column})", (line, col))
            return None

    names: dict[str, tuple[Any, ...]] = {}

    def claim(name: Any, path: tuple[Any, ...]) -> None:
        if not isinstance(name, str):
            return
        if name in names:
            first = marks.at(names[name])[0]
            err(path, f"{_fmt_path(path)}: name {name!r} is already used (line {first})")
        else:
            names[name] = path

    got_traits, got_auds = data.get("computed_traits"), data.get("audiences")
    raw_traits: list[Any] = got_traits if isinstance(got_traits, list) else []
    raw_auds: list[Any] = got_auds if isinstance(got_auds, list) else []
    traits: list[TraitDef] = []
    for i, t in enumerate(raw_traits):
        if not isinstance(t, dict):
            continue
        base = ("computed_traits", i)
        claim(t.get("name"), (*base, "name"))
        if ("computed_traits", i) in bad_items:
            continue
        kind = t["kind"]
        if kind == "count" and "value" in t:
            err((*base, "value"), f"{_fmt_path(base)}: kind count takes no value")
        if kind in VALUE_KINDS and "value" not in t:
            err(base, f"{_fmt_path(base)}: kind {kind} needs a value (e.g. value: properties.revenue)")
        window_ms = parse_window(t.get("window", "all"))
        if window_ms is not None and window_ms > MAX_WINDOW_MS:
            err((*base, "window"), f"{_fmt_path((*base, 'window'))}: window {t['window']} is longer than 400d")
        where = expr_at((*base, "where"), t["where"]) if "where" in t else None
        if where is not None:
            for f in sorted(where.fields()):
                if f[0] not in EVENT_ROOTS or len(f) < 2:
                    err((*base, "where"), f"{_fmt_path((*base, 'where'))}: {'.'.join(f)} is not an event field (properties.x, context.x or traits.x)")
        value: tuple[str, ...] | None = None
        if "value" in t:
            v = expr_at((*base, "value"), t["value"])
            if v is not None:
                if isinstance(v, Path) and v.parts[0] in EVENT_ROOTS and len(v.parts) >= 2:
                    value = v.parts
                else:
                    err((*base, "value"), f"{_fmt_path((*base, 'value'))}: value must be an event field path (properties.x, context.x or traits.x)")
        traits.append(TraitDef(t["name"], kind, t["event"], where, value, window_ms, _digest(kind, t["event"], where, value, window_ms)))

    trait_names = {t.get("name") for t in raw_traits if isinstance(t, dict)}
    aud_names = {a.get("name") for a in raw_auds if isinstance(a, dict)}
    auds: dict[str, AudienceDef] = {}
    aud_paths: dict[str, tuple[Any, ...]] = {}
    for i, a in enumerate(raw_auds):
        if not isinstance(a, dict):
            continue
        base = ("audiences", i)
        claim(a.get("name"), (*base, "name"))
        if base in bad_items:
            continue
        when = expr_at((*base, "when"), a["when"])
        if when is None:
            continue
        deps: set[str] = set()
        used: set[str] = set()
        for f in sorted(when.fields()):
            if f[0] in ("computed", "audience"):
                if len(f) != 2:
                    err((*base, "when"), f"{_fmt_path((*base, 'when'))}: {'.'.join(f)}: write {f[0]}.NAME")
                elif f[0] == "computed" and f[1] not in trait_names:
                    err((*base, "when"), f"{_fmt_path((*base, 'when'))}: unknown computed trait {f[1]!r}")
                elif f[0] == "audience" and f[1] not in aud_names:
                    err((*base, "when"), f"{_fmt_path((*base, 'when'))}: unknown audience {f[1]!r}")
                elif f[0] == "audience":
                    deps.add(f[1])
                else:
                    used.add(f[1])
            elif f[0] == "properties" or f[0] == "context":
                err((*base, "when"), f"{_fmt_path((*base, 'when'))}: {'.'.join(f)}: an audience reads the profile (traits.x, computed.x, audience.x, profile fields), not an event")
            elif f[0] == "traits":
                if len(f) < 2:
                    err((*base, "when"), f"{_fmt_path((*base, 'when'))}: traits: write traits.NAME")
            elif f[0] in LATER_FIELDS:
                if len(f) > 1:
                    err((*base, "when"), f"{_fmt_path((*base, 'when'))}: {'.'.join(f)}: {f[0]} has no fields")
            elif f[0] not in AUDIENCE_FIELDS:
                err((*base, "when"), f"{_fmt_path((*base, 'when'))}: unknown profile field {f[0]!r} "
                                     "(profile fields: see docs/audiences.md; traits.x for a trait)")  # fmt: skip
            elif len(f) > 1 and f[0] not in _JSON_AUDIENCE_FIELDS:
                err((*base, "when"), f"{_fmt_path((*base, 'when'))}: {'.'.join(f)}: {f[0]} has no fields")
        sync = tuple(sorted((d, tuple(sorted((str(k), str(v)) for k, v in kv.items())) if isinstance(kv, dict)
                             else (("enabled", "false"),) if kv is False else ())
                            for d, kv in (a.get("sync") or {}).items()))  # fmt: skip
        auds[a["name"]] = AudienceDef(a["name"], when, frozenset(deps), frozenset(used), sync)
        aud_paths[a["name"]] = (*base, "when")

    ordered = _dependency_order(auds, aud_paths, err)
    if errors:
        raise DefinitionsErrors(errors, source)
    by_event: dict[tuple[str, str | None], list[TraitDef]] = {}
    for t in traits:
        key = (t.event, None) if t.event in EVENT_TYPE_NAMES else ("track", t.event)
        by_event.setdefault(key, []).append(t)
    late: set[str] = set()
    for a in ordered:  # dependency order: a late audience's dependencies are decided before it
        if any(f[0] in LATER_FIELDS for f in a.when.fields()) or a.depends_on & late:
            late.add(a.name)
    inputs = {a.name: (tuple(sorted(a.traits)), tuple(sorted({f[0] for f in a.when.fields() if f[0] not in ("computed", "audience") and f[0] not in LATER_FIELDS})),
                       tuple(sorted(a.depends_on - late))) for a in ordered}  # fmt: skip
    read = sorted({n for _, names, _ in inputs.values() for n in names})
    return Definitions(1, tuple(traits), ordered, source, {t.name: t for t in traits}, fingerprint_of(tuple(traits), ordered),
                       tuple(read), {k: tuple(v) for k, v in by_event.items()}, inputs, frozenset(late))  # fmt: skip


def _dependency_order(auds: dict[str, AudienceDef], paths: dict[str, tuple[Any, ...]], err: Callable[..., None]) -> tuple[AudienceDef, ...]:
    """Audiences after their dependencies, else in file order (the earliest ready one first);
    each cycle is reported once, at its first audience in the file."""
    order: list[AudienceDef] = []
    placed: set[str] = set()
    pending = list(auds)
    progress = True
    while pending and progress:
        progress = False
        for name in pending:
            if all(d in placed or d not in auds for d in auds[name].depends_on):
                order.append(auds[name])
                placed.add(name)
                pending.remove(name)
                progress = True
                break
    reported: set[frozenset[str]] = set()
    for start in pending:
        stack, seen = [start], {start}
        # follow unplaced dependencies until a node repeats: that suffix is a cycle
        while True:
            nxt = sorted(d for d in auds[stack[-1]].depends_on if d in auds and d not in placed)[0]
            if nxt in seen:
                cyc = stack[stack.index(nxt):]
                key = frozenset(cyc)
                if key not in reported:
                    reported.add(key)
                    first = min(cyc, key=list(auds).index)
                    i = cyc.index(first)
                    ring = cyc[i:] + cyc[:i] + [first]
                    err(paths[first], f"{_fmt_path(paths[first])}: audiences form a cycle: {' -> '.join(ring)}")
                break
            stack.append(nxt)
            seen.add(nxt)
    return tuple(order)
