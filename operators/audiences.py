"""Audience evaluation over one rendered profile (SPEC §6; the shared contract of issue 14, item 2).

Contract
--------
``profile_env(fields)`` turns a profile's string fields (as the per-user step renders them and as
the profile hash stores them) into the environment an audience's ``when`` reads, each field
typed by its :mod:`operators.schema` :class:`~operators.schema.Kind`:

* ``INT`` → ``int``; ``MONEY`` / ``FLOAT`` → ``float``; ``FLAG`` → ``bool`` (so
  ``cart_abandoned == true``); ``JSON`` → the parsed document (``traits.plan`` reads the
  ``traits`` object); ``TEXT`` → the string as is;
* ``TIME`` → the ISO 8601 string (compares as text, which is time order), and ``""`` (the
  schema's "unknown") → missing, so ``last_purchase_at == null`` holds for a user who never bought;
* a value that does not parse as its kind (never written by the renderers) reads as missing, and
  a field not in the schema is left out. Never raises.

``evaluate(defs, fields, computed_values)`` is the sorted tuple of the audiences the profile is
in: :meth:`operators.definitions.Definitions.memberships` over ``profile_env(fields)``, with
``computed.x`` read from ``computed_values`` (:meth:`operators.computed.ComputedState.values`)
and ``audience.x`` from the same evaluation. Pure: no clock, no I/O. The dataflow uses it for the
profile's ``audiences`` field; the brute-force evaluator uses it for the profile-field side only.

>>> from operators.definitions import load_definitions, SPEC_EXAMPLE
>>> env = profile_env({"purchase_count": "2", "revenue_net": "19.99", "cart_abandoned": "1",
...                    "traits": '{"plan": "pro"}', "last_purchase_at": "", "top_category": "shoes"})
>>> env["purchase_count"], env["revenue_net"], env["cart_abandoned"], env["traits"]["plan"], "last_purchase_at" in env
(2, 19.99, True, 'pro', False)
>>> evaluate(load_definitions(SPEC_EXAMPLE), {}, {"shoe_views_7d": 3, "orders_7d": 0, "spend_90d": 0})
('shoe_browsers_no_order',)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from operators.definitions import Definitions
from operators.residual import residual
from operators.schema import BY_NAME, Kind

__all__ = ["profile_env", "evaluate", "evaluate_reference"]


def _typed(kind: Kind, v: str) -> Any:
    if kind is Kind.TEXT:
        return v
    if kind is Kind.TIME:
        return v or None
    try:
        if kind is Kind.INT:
            return int(v)
        if kind in (Kind.MONEY, Kind.FLOAT):
            f = float(v)
            return f if f == f else None  # NaN is no number
        if kind is Kind.FLAG:
            return {"1": True, "0": False}.get(v)
        return orjson.loads(v)
    except (ValueError, orjson.JSONDecodeError):
        return None


def profile_env(fields: Mapping[str, str], only: tuple[str, ...] | None = None) -> dict[str, Any]:
    """The profile fields typed by their schema kind (see the module doc); ``only``: just these
    names (what the audiences read: :attr:`~operators.definitions.Definitions.profile_fields`)."""
    env: dict[str, Any] = {}
    for name in fields if only is None else only:
        v = fields.get(name)
        f = BY_NAME.get(name)
        if f is None or not isinstance(v, str):
            continue
        t = _typed(f.kind, v)
        if t is not None:
            env[name] = t
    return env


def evaluate(defs: Definitions, fields: Mapping[str, str], computed_values: Mapping[str, Any],
             memo: dict[str, tuple[Any, Any, Any]] | None = None, rules: list[Any] | None = None) -> tuple[str, ...]:  # fmt: skip
    """The audiences (names, sorted) a profile with ``fields`` and ``computed_values`` is in: what
    :func:`evaluate_reference` returns (and appends to ``rules``, and remembers in ``memo``), run as
    straight-line code generated once per :class:`Definitions` (:func:`_evaluator`)."""
    fn = defs.compiled.get("audiences.evaluate")
    if fn is None:
        fn = defs.compiled["audiences.evaluate"] = _evaluator(defs)
    if memo is None:
        return fn(fields, computed_values, {}, rules)  # type: ignore[no-any-return]
    # the whole evaluation again: the same values dict (ComputedState.values returns the very dict
    # while no value changed, and never modifies one it returned) and the same profile fields read
    read = tuple([fields.get(n) for n in defs.profile_fields])
    last = memo.get(_LAST)
    if last is not None and last[0] is fn and last[1][0] is computed_values and last[1][1] == read:
        out, late = last[2]
        if rules is not None:
            if late is None:  # remembered from a call without rules: the late audiences' are not known
                return _again(fn, fields, computed_values, memo, rules, read)
            rules.extend(late)
        return out  # type: ignore[no-any-return]
    return _again(fn, fields, computed_values, memo, rules, read)


#: the ``memo`` key of the last whole evaluation (no audience is named so: names are identifiers)
_LAST = " last"


def _again(fn: Any, fields: Mapping[str, str], computed_values: Mapping[str, Any], memo: dict[str, tuple[Any, Any, Any]],
           rules: list[Any] | None, read: tuple[str | None, ...]) -> tuple[str, ...]:  # fmt: skip
    """Evaluate (per audience, :func:`_evaluator`'s memo) and remember the whole call in ``memo``."""
    n = len(rules) if rules is not None else 0
    out: tuple[str, ...] = fn(fields, computed_values, memo, rules)
    memo[_LAST] = (fn, (computed_values, read), (out, rules[n:] if rules is not None else None))
    return out


def _evaluator(defs: Definitions) -> Any:
    """Generate :func:`evaluate_reference`'s loop unrolled over ``defs``' audiences: each
    audience's memo key built from its own inputs in place (no per-call ``map``/unpacking), names,
    ``when`` trees and compiled predicates bound as constants through the namespace (the source holds
    only generated identifiers)."""
    ns: dict[str, Any] = {"profile_env": profile_env, "residual": residual, "PF": defs.profile_fields, "LATE": defs.late}
    lines = ["def evaluate(fields, cv, memo, rules):", "    inside = {}", "    env = None", "    cget = cv.get", "    fget = fields.get"]
    early: list[str] = []
    for i, a in enumerate(defs.audiences):
        traits, names, deps = defs.inputs[a.name]
        is_late = a.name in defs.late
        ns[f"N{i}"], ns[f"WHEN{i}"], ns[f"HOLDS{i}"] = a.name, a.when, a.holds
        ind = "    "
        if is_late:
            lines.append("    if rules is not None:")
            ind = "        "
        for j, t in enumerate(traits):
            ns[f"T{i}_{j}"] = t
            lines.append(f"{ind}v{j} = cget(T{i}_{j})")
        for j, f in enumerate(names):
            ns[f"F{i}_{j}"] = f
        for j, d in enumerate(deps):
            ns[f"D{i}_{j}"] = d
        parts = ([f"v{j}" for j in range(len(traits))] + [f"type(v{j})" for j in range(len(traits))]
                 + [f"fget(F{i}_{j})" for j in range(len(names))] + [f"inside[D{i}_{j}]" for j in range(len(deps))])  # fmt: skip
        key = "(" + ", ".join(parts) + ("," if len(parts) == 1 else "") + ")"
        lines += [f"{ind}key = {key}", f"{ind}m = memo.get(N{i})", f"{ind}if m is not None and m[0] is WHEN{i} and m[1] == key:",
                  f"{ind}    r = m[2]", f"{ind}else:", f"{ind}    if env is None:", f"{ind}        env = profile_env(fields, PF)",
                  f'{ind}        env["computed"] = cv', f'{ind}        env["audience"] = inside',
                  f"{ind}    r = residual(WHEN{i}, env, LATE)" if is_late else f"{ind}    r = HOLDS{i}(env)",
                  f"{ind}    memo[N{i}] = (WHEN{i}, key, r)",
                  f"{ind}rules.append([N{i}, r])" if is_late else f"{ind}inside[N{i}] = r"]  # fmt: skip
        if not is_late:
            early.append(a.name)
    ns["SORTED"] = tuple(sorted(early))
    lines.append("    return tuple([n for n in SORTED if inside[n]])")
    exec(compile("\n".join(lines) + "\n", "<audiences evaluate>", "exec"), ns)  # generated identifiers only
    return ns["evaluate"]


def evaluate_reference(defs: Definitions, fields: Mapping[str, str], computed_values: Mapping[str, Any],
             memo: dict[str, tuple[Any, Any, Any]] | None = None, rules: list[Any] | None = None) -> tuple[str, ...]:  # fmt: skip
    """:func:`evaluate` as a loop over the audiences: the reference its generated code is tested
    against (tests/operators/test_audiences.py). The audiences (names, sorted) a profile with ``fields`` and ``computed_values`` is in —
    the early ones only: a late audience (:attr:`~operators.definitions.Definitions.late`, it
    reads RFM or model fields) is decided by the profile script; with ``rules`` (a list) its
    ``[name, rule]`` pairs (:func:`operators.residual.residual`, dependency order) are appended.

    ``memo`` (the caller's, per profile): each audience's inputs (the computed traits, profile
    fields and early audiences its ``when`` reads) and result (or rule) from the last evaluation;
    an audience whose inputs are unchanged is not evaluated again (evaluation is pure)."""
    if memo is None:
        memo = {}
    inside: dict[str, bool] = {}
    env: dict[str, Any] | None = None
    inputs = defs.inputs
    late = defs.late
    cget, fget, iget = computed_values.get, fields.get, inside.__getitem__
    for a in defs.audiences:
        name = a.name
        is_late = name in late
        if is_late and rules is None:
            continue
        traits, names, deps = inputs[name]
        vals = tuple(map(cget, traits))
        # fixed lengths per audience: one flat tuple; the values' types too (``1 == True`` in
        # Python, not in the expression language: a value turning from true to 1 is a change)
        key = (*vals, *map(type, vals), *map(fget, names), *map(iget, deps))
        m = memo.get(name)
        if m is not None and m[0] is a.when and m[1] == key:
            v = m[2]
        else:
            if env is None:
                env = profile_env(fields, defs.profile_fields)
                env["computed"] = computed_values
                env["audience"] = inside
            v = residual(a.when, env, late) if is_late else a.holds(env)  # type: ignore[misc]  # the compiled ``when``
            memo[name] = (a.when, key, v)
        if is_late:
            rules.append([name, v])  # type: ignore[union-attr]
        else:
            inside[name] = v
    return tuple(sorted(n for n, v in inside.items() if v))
