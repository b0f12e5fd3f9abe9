"""Braze-shaped destination: ``/users/track`` and ``/users/delete``.

* ``POST {url}/users/track`` with ``{"attributes": [...], "events": [...]}``,
  ``Authorization: Bearer KEY``. At most :data:`MAX_OBJECTS` (75) objects per
  request, counting attributes + events + purchases together (the strictest
  reading of Braze's limits). ``external_id`` is the user id. An attributes
  object holds only the changed fields, typed (numbers as numbers, JSON fields
  as nested objects, ``""`` as ``null``, which clears the attribute in
  Braze), plus the profile version as ``lp_version``
  (``version_attribute``). The ``traits`` field is spread over Braze's standard attributes
  (:func:`braze_traits`): ``first_name``, ``last_name``, ``phone``, ``dob`` (``birthday`` as
  ``YYYY-MM-DD``), ``gender`` (``M``/``F``/``O``/``U``/``N``/``P`` from the usual spellings),
  ``home_city`` and ``country`` (an ISO 3166-1 alpha-2 code) from ``address``, ``language``;
  a value these cannot take, and every other trait, is a custom attribute under its own
  name (nested objects are Braze nested custom attributes). Trigger events become Braze events (``name``,
  ``time``, ``properties``); Braze requires ``time``, so an event without a
  ``ts`` gets the time the sync builds the request.
* A user with more than 75 objects in one batch (many trigger events) is sent
  in several consecutive requests; the item counts as delivered after the last.
* Unsubscribes: an item whose ``email_unsubscribed`` became ``1`` sets the user's
  ``email_subscribe`` attribute to ``"unsubscribed"`` (Braze's user attributes object:
  ``opted_in`` / ``subscribed`` / ``unsubscribed``), whatever the field allow-list says.
* Deleted users: ``POST {url}/users/delete`` with ``{"external_ids": [...]}``,
  at most :data:`MAX_DELETE` (50) ids per request (Braze takes only one kind
  of identifier per request; an anonymous id's profile was pushed under its
  own ``external_id``, so its deletion names it the same way). When the
  erased profile had an email (the deletion's ``identities``), a second
  request ``{"email_addresses": [{"email": ..., "prioritization":
  ["unidentified"]}]}`` also deletes the *unidentified* Braze profile with
  that email (one Braze's SDK or forms made without an ``external_id``); an
  identified user — someone else's ``external_id`` — is never named this way.
  The item is delivered when both requests succeeded.
* Computed traits: custom attributes under their own names (the ``computed`` object flattened; a
  name that collides with a profile field or a trait: the computed one wins; ``null`` unsets).
* Audiences (the shared contract 4): an audience whose ``sync.braze`` names a
  ``subscription_group_id`` is that subscription group's state: ``POST {url}/v2/subscription/status/set``
  with ``{"subscription_groups": [{"subscription_group_id": g, "subscription_state": "subscribed" |
  "unsubscribed", "external_ids": [...]}]}``, at most :data:`MAX_SUBSCRIPTION` (50) users per
  request, one group and state per request (Braze's shared limit for both versions of the
  endpoint: 5,000 requests/min, paced as its own class). Every other audience is an element of the
  custom attribute array ``liveprofile_audiences``, changed in place in the user's attributes
  object with Braze's array operations: ``{"liveprofile_audiences": {"add": [...], "remove":
  [...]}}`` (the net change of the batch per audience; Braze keeps at most 25 elements in an array
  attribute unless the workspace raises it).
* Per-object errors: Braze answers a request with some invalid objects
  ``201 {"message": "success", "errors": [{"type": ..., "input_array":
  "attributes"|"events", "index": i}]}``. The items owning those objects are
  dead-lettered one by one (``vendor_rejected``, the error's ``type``); the
  rest of the request is delivered.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from liveprofile.sync.audiences import BRAZE_ARRAY
from liveprofile.sync.destinations.base import Destination, Request, pack, traits_of, typed
from liveprofile.sync.model import Item
from operators.timeutil import iso

__all__ = ["BrazeDestination", "braze_traits", "MAX_OBJECTS", "MAX_DELETE", "MAX_SUBSCRIPTION"]

MAX_OBJECTS = 75
MAX_DELETE = 50
MAX_SUBSCRIPTION = 50
#: /subscription/status/set and /v2/subscription/status/set: 5,000 requests per minute, shared
SUBSCRIPTION_RATE = 5000 / 60
_DATE = re.compile(r"^([0-9]{4}-[0-9]{2}-[0-9]{2})(?:$|T)")
_GENDER = {"m": "M", "male": "M", "man": "M", "f": "F", "female": "F", "woman": "F", "o": "O", "other": "O",
           "non-binary": "O", "nonbinary": "O", "u": "U", "unknown": "U", "n": "N", "not applicable": "N",
           "p": "P", "prefer not to say": "P"}  # fmt: skip
_COUNTRY = re.compile(r"^[A-Za-z]{2}$")


def braze_traits(traits: dict[str, Any]) -> dict[str, Any]:
    """A user's traits as Braze user attributes (module docstring).

    >>> braze_traits({"first_name": "Ann", "birthday": "1990-04-01T00:00:00Z", "gender": "female",
    ...               "address": {"city": "Oslo", "country": "no"}, "plan": "pro"})
    {'first_name': 'Ann', 'dob': '1990-04-01', 'gender': 'F', 'address': {'city': 'Oslo', 'country': 'no'}, 'home_city': 'Oslo', 'country': 'NO', 'plan': 'pro'}
    >>> braze_traits({"gender": "robot", "birthday": "April"})
    {'gender_text': 'robot', 'birthday': 'April'}
    """
    out: dict[str, Any] = {}
    for k, v in traits.items():
        if k in ("first_name", "last_name", "phone", "language") and isinstance(v, str):
            out[k] = v
        elif k == "birthday" and isinstance(v, str) and (m := _DATE.match(v)):
            out["dob"] = m.group(1)
        elif k == "gender" and isinstance(v, str):
            g = _GENDER.get(v.strip().lower())
            out["gender" if g else "gender_text"] = g or v
        elif k == "address" and isinstance(v, dict):
            out["address"] = v
            if isinstance(v.get("city"), str):
                out["home_city"] = v["city"]
            if isinstance(v.get("country"), str) and _COUNTRY.match(v["country"]):
                out["country"] = v["country"].upper()
        elif not k.startswith("$"):  # Braze: custom attribute names may not start with $
            out[k] = v
    return out


class BrazeDestination(Destination):
    """Braze ``/users/track`` packing (see module docstring)."""

    def _array_ops(self, item: Item) -> dict[str, list[str]]:
        """The ``liveprofile_audiences`` array operations of ``item`` (audiences without a group)."""
        ops: dict[str, list[str]] = {}
        for a, (change, target) in self.membership(item).items():
            if not target.get("subscription_group_id"):
                ops.setdefault("add" if change == "entered" else "remove", []).append(a)
        return ops

    def _subscriptions(self, item: Item) -> list[tuple[str, str]]:
        """(subscription group, state) of ``item``'s audiences that are subscription groups."""
        return [(t["subscription_group_id"], "subscribed" if change == "entered" else "unsubscribed")
                for change, t in self.membership(item).values() if t.get("subscription_group_id")]  # fmt: skip

    def _attributes(self, item: Item) -> dict[str, Any] | None:
        fields = self.fields_of(item)
        unsub = self.unsubscribes(item)
        computed = self.computed_of(item)
        array = self._array_ops(item)
        if not fields and not unsub and not computed and not array:
            return None
        out: dict[str, Any] = {"external_id": item.user_id}
        for k, v in fields.items():
            if k != "traits":
                out[k] = typed(k, v)
        if "traits" in fields:  # a trait never overrides the id or a profile field of the same name
            for k, v in braze_traits(traits_of(fields["traits"])).items():
                out.setdefault(k, v)
        out.update(computed)  # the computed one wins (module docstring)
        if array:
            out[BRAZE_ARRAY] = array
        if unsub:
            out["email_subscribe"] = "unsubscribed"
        if self.cfg.version_attribute:
            out[self.cfg.version_attribute] = item.version
        return out

    def _events(self, item: Item) -> list[dict[str, Any]]:
        out = []
        for ev in self.events_of(item):
            ts = ev.get("ts")
            if not isinstance(ts, str) or not ts:  # Braze requires an ISO 8601 time: when the sync saw it
                ts = iso(int(self.clock() * 1000))
            doc: dict[str, Any] = {"external_id": item.user_id, "name": str(ev.get("name", "event")), "time": ts}
            if isinstance(ev.get("properties"), dict):
                doc["properties"] = ev["properties"]
            out.append(doc)
        return out

    def _objects(self, item: Item) -> list[tuple[str, dict[str, Any]]]:
        attrs = self._attributes(item)
        objs = [("attributes", attrs)] if attrs is not None else []
        return objs + [("events", e) for e in self._events(item)]

    def build(self, items: list[Item]) -> list[Request]:
        deletes = [it for it in items if it.deleted]
        track = [it for it in items if not it.deleted]
        reqs: list[Request] = []
        small: list[tuple[Item, int, int]] = []
        for it in track:
            objs = self._objects(it)
            if len(objs) > MAX_OBJECTS:
                for i in range(0, len(objs), MAX_OBJECTS):
                    reqs.append(self._track([it], objs[i : i + MAX_OBJECTS]))
            elif objs:
                small.append((it, len(objs), 0))
        reqs += [self.rebuild("track", chunk) for chunk in pack(small, MAX_OBJECTS, 1 << 62)]
        groups: dict[tuple[str, str], list[Item]] = {}
        for it in track:
            for g, state in self._subscriptions(it):
                groups.setdefault((g, state), []).append(it)
        for (g, state), its in groups.items():
            reqs += [self.rebuild(f"subscription:{state}:{g}", its[i : i + MAX_SUBSCRIPTION])
                     for i in range(0, len(its), MAX_SUBSCRIPTION)]  # fmt: skip
        reqs += [self.rebuild("delete", deletes[i : i + MAX_DELETE]) for i in range(0, len(deletes), MAX_DELETE)]
        by_email = [it for it in deletes if self._email(it)]
        reqs += [self.rebuild("delete_email", by_email[i : i + MAX_DELETE]) for i in range(0, len(by_email), MAX_DELETE)]
        return reqs

    @staticmethod
    def _email(item: Item) -> str | None:
        e = item.identities.get("email")
        return e.strip() if isinstance(e, str) and e.strip() else None

    def _track(self, items: list[Item], objs: list[tuple[str, dict[str, Any]]]) -> Request:
        body: dict[str, list[dict[str, Any]]] = {"attributes": [], "events": []}
        for kind, obj in objs:
            body[kind].append(obj)
        return Request("track", self.cfg.url + "/users/track", orjson.dumps(body), items)

    def rebuild(self, kind: str, items: list[Item]) -> Request:
        if kind.startswith("subscription:"):
            _, state, group = kind.split(":", 2)
            doc = {"subscription_groups": [{"subscription_group_id": group, "subscription_state": state,
                                            "external_ids": [it.user_id for it in items]}]}  # fmt: skip
            return Request(kind, self.cfg.url + "/v2/subscription/status/set", orjson.dumps(doc), items)
        if kind == "delete":
            body = orjson.dumps({"external_ids": [it.user_id for it in items]})
            return Request("delete", self.cfg.url + "/users/delete", body, items)
        if kind == "delete_email":
            emails = [{"email": e, "prioritization": ["unidentified"]} for it in items if (e := self._email(it))]
            return Request("delete_email", self.cfg.url + "/users/delete", orjson.dumps({"email_addresses": emails}), items)
        return self._track(items, [o for it in items for o in self._objects(it)])

    def rejected(self, req: Request, status: int, body: bytes) -> list[tuple[Item, str]]:
        """The items whose objects Braze's ``errors`` array names (see module docstring)."""
        if req.kind != "track":
            return []
        try:
            errors = orjson.loads(body).get("errors") or []
            sent = orjson.loads(req.body)
        except (orjson.JSONDecodeError, AttributeError):
            return []
        by_user = {it.user_id: it for it in req.items}
        out: dict[str, tuple[Item, str]] = {}
        for err in errors if isinstance(errors, list) else []:
            if not isinstance(err, dict):
                continue
            arr, i = err.get("input_array"), err.get("index")
            objs = sent.get(arr) if isinstance(arr, str) else None
            if not isinstance(objs, list) or not isinstance(i, int) or not 0 <= i < len(objs):
                continue  # an error Braze could not place: nothing to pin it on (the rest was taken)
            it = by_user.get(objs[i].get("external_id"))
            if it is not None and it.user_id not in out:
                out[it.user_id] = (it, str(err.get("type") or "error")[:500])
        return list(out.values())

    def headers(self, req: Request) -> dict[str, str]:
        return {"content-type": "application/json", "authorization": f"Bearer {self.cfg.api_key}"}

    def rate_class(self, req: Request) -> tuple[str, float] | None:
        return ("subscription", SUBSCRIPTION_RATE) if req.kind.startswith("subscription:") else None
