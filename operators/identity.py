"""Identity resolution: anonymous ids linked to known user ids.

Contract
--------
``route(linked, event)`` is the step of the identity stage, keyed by the
event's anonymous id (``anonymousId``; for ``alias`` the ``previousId``). The
state is the user id that anonymous id is linked to (``None`` until an event
carries both ids). It returns the new state and the items to send on, each
with the key it goes to:

* an event that carries a ``userId`` goes to that user; the first such event
  also sends a :class:`Link` to the anonymous key, whose state (its anonymous
  profile) then merges into the user — exactly once, whichever arrives first;
* an anonymous-only event goes to the linked user once there is one, else to
  the anonymous profile.

A later ``userId`` on the same anonymous id (a shared device) re-links future
anonymous events to the newest user but merges nothing more: the anonymous
history has already moved.
"""

from __future__ import annotations

from dataclasses import dataclass

from operators.events import Event

__all__ = ["Link", "anonymous_key", "route"]


@dataclass(frozen=True, slots=True)
class Link:
    """Tell the anonymous profile ``anonymous_id`` to merge into ``user_id``."""

    anonymous_id: str
    user_id: str
    ts: int


def anonymous_key(ev: Event) -> str | None:
    """The key of the identity stage for ``ev`` (``None``: no anonymous id, skip the stage).

    >>> from operators.events import parse_event, Limits
    >>> e = parse_event({"type": "alias", "userId": "u1", "previousId": "a1", "receivedAt": 0}, Limits(timestamp_min_ms=0))
    >>> anonymous_key(e)
    'a1'
    """
    if ev.type == "alias":
        return ev.previous_id
    if ev.anonymous_id is not None and ev.anonymous_id != ev.user_id:
        return ev.anonymous_id
    return None


def route(linked: str | None, ev: Event) -> tuple[str | None, list[tuple[str, Event | Link]]]:
    """One identity step (see module docstring).

    >>> from operators.events import parse_event, Limits
    >>> L = Limits(timestamp_min_ms=0)
    >>> anon = parse_event({"type": "page", "anonymousId": "a1", "receivedAt": 0}, L)
    >>> ident = parse_event({"type": "identify", "anonymousId": "a1", "userId": "u1", "receivedAt": 0}, L)
    >>> st, out = route(None, anon); st, [k for k, _ in out]
    (None, ['a1'])
    >>> st, out = route(st, ident); st, [(k, type(x).__name__) for k, x in out]
    ('u1', [('a1', 'Link'), ('u1', 'Event')])
    >>> st, out = route(st, anon); st, [k for k, _ in out]
    ('u1', ['u1'])
    """
    akey = anonymous_key(ev)
    user = ev.user_id
    if user is not None and akey is not None:
        out: list[tuple[str, Event | Link]] = []
        if linked is None:
            out.append((akey, Link(akey, user, ev.ts)))
        out.append((user, ev))
        return user, out
    if linked is not None:
        return linked, [(linked, ev)]
    return None, [(ev.uid if akey is None else akey, ev)]
