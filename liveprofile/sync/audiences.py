"""Where an audience's membership goes at one destination (the shared contract 4, docs/audiences.md "Delivery").

The sync loads ``LIVEPROFILE_DEFINITIONS`` at start (:attr:`liveprofile.settings.Settings.definitions`);
each audience's ``sync:`` key names its target per destination *type*:

=========  ==============================================  ===========================================
type       target                                          an audience without one
=========  ==============================================  ===========================================
klaviyo    ``{"list_id": ...}``: list membership add/remove not sent to Klaviyo (skipped)
braze      ``{"subscription_group_id": ...}``: the group's  ``{}``: the custom attribute array
           subscription state                               ``liveprofile_audiences`` (add/remove)
webhook    ``{}``: ``Audience Entered`` / ``Exited`` events the same (events for every audience)
=========  ==============================================  ===========================================

**An audience no longer in the file** (or whose ``sync:`` target was removed) still has members at
the vendor: its *exits* go where its entries went. So every target the sync has used is remembered in
HASH ``{p}:sync-audience-targets:{dest}`` (audience -> the target as JSON), written at start for
the file's targets and never pruned; an exit of an audience the file names no target for at this
destination uses the remembered one; otherwise the destination's default mechanism (Braze's array,
the webhook's events; Klaviyo has none: skipped). A file's target always wins over a remembered one (a list moved to another id:
new transitions go to the new list).

Pure here (:func:`file_targets`, :class:`AudienceTargets`); the worker does the HASH reads/writes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import orjson

from operators.definitions import Definitions

__all__ = ["AudienceTargets", "file_targets", "BRAZE_ARRAY"]

#: the Braze custom attribute array of audience names (contract 4)
BRAZE_ARRAY = "liveprofile_audiences"


def file_targets(defs: Definitions | None, dest_type: str) -> dict[str, dict[str, str]]:
    """Each audience of the file with a target at ``dest_type`` (see the module table).

    >>> from operators.definitions import load_definitions
    >>> d = load_definitions('''version: 1
    ... audiences:
    ...   - {name: a, when: "email != null", sync: {klaviyo: {list_id: L1}, braze: {subscription_group_id: g1}}}
    ...   - {name: b, when: "email == null"}
    ...   - {name: c, when: "email == null", sync: {webhook: false}}
    ... ''')
    >>> file_targets(d, "klaviyo"), file_targets(d, "braze"), file_targets(d, "webhook")
    ({'a': {'list_id': 'L1'}}, {'a': {'subscription_group_id': 'g1'}, 'b': {}, 'c': {}}, {'a': {}, 'b': {}})
    """
    out: dict[str, dict[str, str]] = {}
    for a in defs.audiences if defs is not None else ():
        t = a.sync_for(dest_type)
        if dest_type == "klaviyo":
            if t and t.get("list_id"):
                out[a.name] = {"list_id": t["list_id"]}
        elif dest_type == "braze":
            gid = (t or {}).get("subscription_group_id")
            out[a.name] = {"subscription_group_id": gid} if gid else {}
        elif t is None or t.get("enabled") != "false":  # ``sync: {webhook: false}`` opts out
            out[a.name] = {}
    return out


@dataclass(frozen=True, slots=True)
class AudienceTargets:
    """The targets of one destination: the file's (``current``) and the remembered ones (``known``)."""

    dest_type: str
    current: Mapping[str, dict[str, str]] = field(default_factory=dict)
    known: Mapping[str, dict[str, str]] = field(default_factory=dict)

    @classmethod
    def load(cls, defs: Definitions | None, dest_type: str, stored: Mapping[str, str]) -> AudienceTargets:
        """From the file and the remembered HASH (values JSON; unreadable ones are ignored)."""
        known: dict[str, dict[str, str]] = {}
        for name, raw in stored.items():
            try:
                v = orjson.loads(raw)
            except orjson.JSONDecodeError:
                continue
            if isinstance(v, dict):
                known[name] = {str(k): str(x) for k, x in v.items()}
        return cls(dest_type, file_targets(defs, dest_type), known)

    def to_store(self) -> dict[str, bytes]:
        """What to remember (HSET): the file's targets that name a vendor object."""
        return {n: orjson.dumps(t) for n, t in self.current.items() if t}

    def target(self, audience: str, change: str) -> dict[str, str] | None:
        """Where the ``change`` (``entered`` / ``exited``) of ``audience`` goes; None: not sent here.

        >>> t = AudienceTargets("klaviyo", {"a": {"list_id": "L2"}}, {"a": {"list_id": "L1"}, "gone": {"list_id": "L9"}})
        >>> t.target("a", "entered"), t.target("gone", "exited"), t.target("gone", "entered"), t.target("x", "exited")
        ({'list_id': 'L2'}, {'list_id': 'L9'}, None, None)
        >>> AudienceTargets("braze", {}, {}).target("gone", "exited")
        {}
        """
        if audience in self.current:
            return self.current[audience]
        if change == "exited" and audience in self.known:
            return self.known[audience]
        return None if self.dest_type == "klaviyo" else {}  # the default mechanism needs no settings
