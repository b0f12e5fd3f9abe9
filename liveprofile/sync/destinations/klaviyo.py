"""Klaviyo-shaped destination: bulk profile import jobs and bulk event creation.

Every request carries ``Authorization: Klaviyo-API-Key KEY``, the
``revision`` header and JSON:API bodies (``application/vnd.api+json``).

* Profiles: ``POST {url}/api/profile-bulk-import-jobs`` — at most
  :data:`MAX_PROFILES` (10,000) profiles and :data:`MAX_BYTES` (5 MB) per job.
  ``external_id`` = user id, ``email`` is the standard attribute, every other
  changed field goes to ``properties`` (typed like Braze), plus the version
  as ``lp_version``. The ``traits`` field is spread over Klaviyo's own profile attributes
  (:func:`klaviyo_traits`): ``first_name``, ``last_name``, ``title``, ``phone_number``
  (only an E.164 number: Klaviyo fails the whole profile in the import job for any other,
  so another spelling goes to ``properties.phone``), ``organization`` (``company``'s name),
  ``image`` (``avatar``), ``location`` (``address``: ``address1`` street, ``city``,
  ``region`` state, ``zip`` postal code, ``country``); every other trait is a custom
  property under its own name. A trait unset in liveprofile is not cleared at Klaviyo.
* Events: ``POST {url}/api/event-bulk-create-jobs`` — at most
  :data:`MAX_EVENTS` (1,000) events and 5 MB per request, grouped per
  profile; each event's ``unique_id`` is its change id (``{user}:{version}``),
  so Klaviyo itself drops a redelivered event.
* Unsubscribes: ``POST {url}/api/profile-subscription-bulk-delete-jobs`` (Bulk Unsubscribe
  Profiles, revision 2024-10-15 on), at most :data:`MAX_UNSUBSCRIBES` (100) profiles per job,
  each ``{"type": "profile", "attributes": {"email": ..., "subscriptions": {"email":
  {"marketing": {"consent": "UNSUBSCRIBED"}}}}}`` — Klaviyo unsubscribes by address, so a user
  without a known email cannot be unsubscribed there (counted as
  ``liveprofile_sync_skipped_total{reason="unsubscribe_no_email"}``; the
  ``email_unsubscribed`` property still reaches the profile).
* Deleted users: ``POST {url}/api/data-privacy-deletion-jobs``, one job per
  profile. Klaviyo's deletion API takes exactly one of ``email``,
  ``phone_number`` or its own profile ``id`` — not ``external_id`` — and deletes
  every profile matching it. The job names the profile by the email the
  deletion change carries (``identities``: what the profile held when it was
  erased), else its ``phone_number``, else its Klaviyo ``id``, looked up first
  with ``GET {url}/api/profiles?filter=equals(external_id,"{user}")`` (e.g. an
  anonymous id's profile, pushed under its ``external_id``). When Klaviyo holds
  no such profile there is nothing to delete (counted ``not_at_vendor``); a
  deletion with no identifier at all is dead-lettered as ``no_identity``.
* Import job results: the bulk import answers 202 with a job id and imports
  later. The sync records the job and polls it (``GET
  {url}/api/profile-bulk-import-jobs/{id}``) until it is ``complete`` or
  ``cancelled``, then reads ``GET .../{id}/import-errors`` (every page) and
  dead-letters each failed profile (``vendor_rejected``, the error's ``detail``);
  see :mod:`liveprofile.sync.delivery`.

* Computed traits: custom ``properties`` under their own names (the ``computed`` object
  flattened; a property of the same name from a profile field or a trait: the computed one wins).
  A ``null`` value (an empty ``avg``...) is unset like a cleared field (below).
* Audiences (the shared contract 4): an audience whose ``sync.klaviyo`` names a ``list_id`` is
  that list's membership: ``POST {url}/api/lists/{list_id}/relationships/profiles`` (Add Profiles
  to List) on entering, ``DELETE`` of the same path (Remove Profiles from List) on exiting, body
  ``{"data": [{"type": "profile", "id": KLAVIYO_ID}, ...]}``, at most :data:`MAX_LIST_PROFILES`
  (1,000) profiles per request; both endpoints answer 204 and share the lists rate limit (burst
  10/s, steady 150/min: paced as their own class, :data:`LIST_RATE`). They take Klaviyo's own
  profile id, so the id is read first with ``POST {url}/api/profile-import`` ``{"data": {"type":
  "profile", "attributes": {"external_id": user}}}`` (Create or Update Profile: it answers the
  profile, created if Klaviyo had none yet — the bulk import job may not have run — with its
  ``id``; it changes nothing else, fields not in the request are left as they are; 700/min steady,
  :data:`IMPORT_RATE`). Audiences without a ``list_id`` are not sent to Klaviyo.

**Cleared fields.** The bulk import *cannot clear a field with null* (Klaviyo
ignores nulls there). A changed field whose new value is ``""`` is therefore
never put in the import job. With ``clear: "unset"`` (the default) the
cleared *custom properties* of a user are removed with a separate
``POST {url}/api/profile-import`` carrying
``meta.patch_properties.unset = [names]`` (Klaviyo's documented way to
unset properties); a cleared ``email`` cannot be unset this way and is
skipped. With ``clear: "skip"`` every cleared field is skipped. Skipped clears
are counted (``liveprofile_sync_skipped_total{reason="unclearable"}``) —
the vendor keeps the old value, never a wrong sentinel.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlencode

import orjson

from liveprofile.sync.destinations.base import Destination, Request, pack, traits_of, typed
from liveprofile.sync.model import Item

__all__ = ["KlaviyoDestination", "klaviyo_traits", "MAX_PROFILES", "MAX_EVENTS", "MAX_BYTES", "MAX_UNSUBSCRIBES",
           "MAX_LIST_PROFILES", "LIST_RATE", "IMPORT_RATE"]

MAX_PROFILES = 10_000
MAX_LIST_PROFILES = 1_000
#: Add Profiles to List / Remove Profiles from List: steady 150/min (burst 10/s)
LIST_RATE = 150 / 60
#: Create or Update Profile (profile-import): steady 700/min (burst 75/s)
IMPORT_RATE = 700 / 60
MAX_UNSUBSCRIBES = 100
MAX_EVENTS = 1_000
MAX_BYTES = 5_000_000
_STANDARD = {"email": "email"}
_ENVELOPE = 400  # bytes of JSON:API wrapping around the packed objects
#: E.164: "+", a country code not starting with 0, at most 15 digits in all
E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")
_LOCATION = {"street": "address1", "city": "city", "state": "region", "postal_code": "zip", "country": "country"}
_SAME = ("first_name", "last_name", "title")


def klaviyo_traits(traits: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(Klaviyo profile attributes, custom properties) of a user's traits (module docstring).

    >>> klaviyo_traits({"first_name": "Ann", "phone": "+4712345678", "address": {"city": "Oslo", "postal_code": "0150"},
    ...                 "company": {"name": "Acme", "plan": "pro"}, "avatar": "https://x/a.png", "plan": "pro"})
    ({'first_name': 'Ann', 'phone_number': '+4712345678', 'location': {'city': 'Oslo', 'zip': '0150'}, 'organization': 'Acme', 'image': 'https://x/a.png'}, {'company': {'name': 'Acme', 'plan': 'pro'}, 'plan': 'pro'})
    >>> klaviyo_traits({"phone": "555-0100"})
    ({}, {'phone': '555-0100'})
    """
    attrs: dict[str, Any] = {}
    props: dict[str, Any] = {}
    for k, v in traits.items():
        if k in _SAME and isinstance(v, str):
            attrs[k] = v
        elif k == "phone" and isinstance(v, str) and E164.match(v.replace(" ", "")):
            attrs["phone_number"] = v.replace(" ", "")
        elif k == "address" and isinstance(v, dict):
            loc = {_LOCATION[a]: str(x) for a, x in v.items() if a in _LOCATION and isinstance(x, str | int)}
            if loc:
                attrs["location"] = loc
            extra = {a: x for a, x in v.items() if a not in _LOCATION}
            if extra:
                props["address"] = v
        elif k == "company" and isinstance(v, str):
            attrs["organization"] = v
        elif k == "company" and isinstance(v, dict) and isinstance(v.get("name"), str):
            attrs["organization"] = v["name"]
            props["company"] = v
        elif k == "avatar" and isinstance(v, str):
            attrs["image"] = v
        else:
            props[k] = v
    return attrs, props


class KlaviyoDestination(Destination):
    """Klaviyo bulk jobs (see module docstring)."""

    def _split(self, item: Item) -> tuple[dict[str, Any], dict[str, Any], list[str], int]:
        """(standard attributes, properties, properties to unset, skipped clears) of an item."""
        attrs: dict[str, Any] = {}
        props: dict[str, Any] = {}
        unset: list[str] = []
        skipped = 0
        traits_props: dict[str, Any] = {}
        for k, v in self.fields_of(item).items():
            if v == "":
                if k in _STANDARD or self.cfg.clear == "skip":
                    skipped += 1
                else:
                    unset.append(k)
                continue
            if k in _STANDARD:
                attrs[_STANDARD[k]] = v
            elif k == "traits":
                a, t = klaviyo_traits(traits_of(v))
                attrs.update(a)
                traits_props = t
            else:
                props[k] = typed(k, v)
        for k, v in traits_props.items():  # a trait never overrides a profile field of the same name
            if v is not None:  # the bulk import cannot take null
                props.setdefault(k, v)
        for k, v in self.computed_of(item).items():  # the computed one wins
            if v is None:
                props.pop(k, None)
                if self.cfg.clear == "skip":
                    skipped += 1
                else:
                    unset.append(k)
            else:
                props[k] = v
        return attrs, props, unset, skipped

    def skipped_clears(self, items: list[Item]) -> int:
        return sum(self._split(it)[3] for it in items if not it.deleted)

    def _profile(self, item: Item) -> dict[str, Any] | None:
        attrs, props, _, _ = self._split(item)
        if not attrs and not props:
            return None
        if self.cfg.version_attribute:
            props[self.cfg.version_attribute] = item.version
        return {"type": "profile", "attributes": {"external_id": item.user_id, **attrs, "properties": props}}

    def _event_group(self, item: Item) -> dict[str, Any] | None:
        evs = self.events_of(item)
        if not evs:
            return None
        data = []
        for ev in evs:
            attrs: dict[str, Any] = {
                "metric": {"data": {"type": "metric", "attributes": {"name": str(ev.get("name", "event"))}}},
                "properties": ev.get("properties") if isinstance(ev.get("properties"), dict) else {},
                "unique_id": str(ev.get("id", item.key)),
            }
            if ev.get("ts"):
                attrs["time"] = ev["ts"]
            data.append({"type": "event", "attributes": attrs})
        return {
            "type": "event-bulk-create",
            "attributes": {
                "profile": {"data": {"type": "profile", "attributes": {"external_id": item.user_id}}},
                "events": {"data": data},
            },
        }

    def build(self, items: list[Item]) -> list[Request]:
        reqs: list[Request] = []
        live = [it for it in items if not it.deleted]
        profiles = [(it, 1, len(orjson.dumps(p)) + 1) for it in live if (p := self._profile(it)) is not None]
        events = [(it, len(self.events_of(it)), len(orjson.dumps(g)) + 1) for it in live
                  if (g := self._event_group(it)) is not None]  # fmt: skip
        limit = min(self.cfg.max_bytes, MAX_BYTES) - _ENVELOPE
        reqs += [self.rebuild("profiles", c) for c in pack(profiles, MAX_PROFILES, limit)]
        reqs += [self.rebuild("events", c) for c in pack(events, MAX_EVENTS, limit)]
        if self.cfg.clear == "unset":
            reqs += [self.rebuild("unset", [it]) for it in live if self._split(it)[2]]
        unsub = [(it, 1, 0) for it in live if self._unsubscribe(it) is not None]
        reqs += [self.rebuild("unsubscribe", c) for c in pack(unsub, MAX_UNSUBSCRIBES, 1 << 62)]
        reqs += [self.rebuild("delete", [it]) for it in items if it.deleted]
        lists: dict[tuple[str, str], list[Item]] = {}
        for it in live:
            for list_id, op in self._list_ops(it):
                lists.setdefault((op, list_id), []).append(it)
        for (op, list_id), its in lists.items():
            reqs += [self.rebuild(f"list_{op}:{list_id}", its[i : i + MAX_LIST_PROFILES])
                     for i in range(0, len(its), MAX_LIST_PROFILES)]  # fmt: skip
        return reqs

    # -- list membership -----------------------------------------------------
    def _list_ops(self, item: Item) -> list[tuple[str, str]]:
        """(list id, ``add`` | ``remove``) of ``item``'s audience transitions (module docstring)."""
        return [(t["list_id"], "add" if change == "entered" else "remove")
                for change, t in self.membership(item).values() if t.get("list_id")]  # fmt: skip

    def rate_class(self, req: Request) -> tuple[str, float] | None:
        if req.kind.startswith("list_"):
            return "lists", LIST_RATE
        if req.kind in ("resolve", "unset"):
            return "profile-import", IMPORT_RATE
        return None

    def _unsubscribe(self, item: Item) -> dict[str, Any] | None:
        """The profile object of ``item`` in a bulk unsubscribe job (``None``: nothing to do)."""
        email = item.changed.get("email", "")
        if not self.unsubscribes(item) or not email:
            return None
        return {"type": "profile", "attributes": {"email": email,
                "subscriptions": {"email": {"marketing": {"consent": "UNSUBSCRIBED"}}}}}  # fmt: skip

    def unsubscribe_skipped(self, items: list[Item]) -> int:
        """Items that unsubscribe a user Klaviyo cannot be told about (no known email)."""
        return sum(1 for it in items if self.unsubscribes(it) and not it.changed.get("email"))

    def rebuild(self, kind: str, items: list[Item]) -> Request:
        url = self.cfg.url
        if kind.startswith("list_"):
            op, list_id = kind[len("list_"):].split(":", 1)
            ids = [{"type": "profile", "id": str(it.identities["klaviyo_id"])} for it in items]
            return Request(kind, f"{url}/api/lists/{list_id}/relationships/profiles", orjson.dumps({"data": ids}), items,
                           method="POST" if op == "add" else "DELETE")  # fmt: skip
        if kind == "resolve":
            (it,) = items
            doc = {"data": {"type": "profile", "attributes": {"external_id": it.user_id}}}
            return Request(kind, url + "/api/profile-import", orjson.dumps(doc), items)
        if kind == "profiles":
            data = [p for it in items if (p := self._profile(it)) is not None]
            doc: dict[str, Any] = {"data": {"type": "profile-bulk-import-job", "attributes": {"profiles": {"data": data}}}}
            return Request(kind, url + "/api/profile-bulk-import-jobs", orjson.dumps(doc), items)
        if kind == "events":
            data = [g for it in items if (g := self._event_group(it)) is not None]
            doc = {"data": {"type": "event-bulk-create-job", "attributes": {"events-bulk-create": {"data": data}}}}
            return Request(kind, url + "/api/event-bulk-create-jobs", orjson.dumps(doc), items)
        if kind == "unsubscribe":
            data = [p for it in items if (p := self._unsubscribe(it)) is not None]
            doc = {"data": {"type": "profile-subscription-bulk-delete-job", "attributes": {"profiles": {"data": data}}}}
            return Request(kind, url + "/api/profile-subscription-bulk-delete-jobs", orjson.dumps(doc), items)
        if kind == "unset":
            (it,) = items
            doc = {"data": {"type": "profile", "attributes": {"external_id": it.user_id},
                            "meta": {"patch_properties": {"unset": self._split(it)[2]}}}}  # fmt: skip
            return Request(kind, url + "/api/profile-import", orjson.dumps(doc), items)
        (it,) = items
        ident = self._deletion_identifier(it) or {}
        profile: dict[str, Any] = {"type": "profile", "attributes": ident}
        if "id" in ident:  # the profile's own id is a member of the resource object, not an attribute
            profile = {"type": "profile", "id": ident["id"], "attributes": {}}
        doc = {"data": {"type": "data-privacy-deletion-job", "attributes": {"profile": {"data": profile}}}}
        return Request("delete", url + "/api/data-privacy-deletion-jobs", orjson.dumps(doc), items)

    # -- deletions -----------------------------------------------------------
    @staticmethod
    def _deletion_identifier(item: Item) -> dict[str, str] | None:
        """The one identifier Klaviyo's deletion job takes for ``item`` (email, phone, Klaviyo id), or None."""
        ids = item.identities
        for field_, attr in (("email", "email"), ("phone", "phone_number"), ("phone_number", "phone_number"),
                             ("klaviyo_id", "id")):  # fmt: skip
            v = ids.get(field_)
            if isinstance(v, str) and v.strip():
                return {attr: v.strip()}
        return None

    def lookup(self, item: Item) -> str | Request | None:
        if not item.deleted and self._list_ops(item):  # list membership takes Klaviyo's profile id
            return self.rebuild("resolve", [item])
        if not item.deleted or self._deletion_identifier(item) is not None or not item.user_id:
            return None
        value = item.user_id.replace("\\", "\\\\").replace('"', '\\"')
        query = urlencode({"filter": f'equals(external_id,"{value}")', "fields[profile]": "external_id"})
        return f"{self.cfg.url}/api/profiles?{query}"

    def found(self, item: Item, body: bytes) -> bool:
        if not item.deleted:  # the profile-import answer: the profile, with its id
            kid = orjson.loads(body)["data"]["id"]
            if not isinstance(kid, str) or not kid:
                raise KeyError("id")
            item.identities = {**item.identities, "klaviyo_id": kid}
            return True
        data = orjson.loads(body).get("data") or []
        ids = [p["id"] for p in data if isinstance(p, dict) and isinstance(p.get("id"), str) and p["id"]]
        if not ids:
            return False
        item.identities = {**item.identities, "klaviyo_id": ids[0]}
        return True

    def refusal(self, item: Item) -> str | None:
        if item.deleted and self._deletion_identifier(item) is None:
            return "no_identity"
        return None

    # -- import jobs ---------------------------------------------------------
    def job_id(self, req: Request, status: int, body: bytes) -> str | None:
        if req.kind != "profiles":
            return None
        try:
            jid = orjson.loads(body)["data"]["id"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return None
        return jid if isinstance(jid, str) and jid else None

    def job_items(self, req: Request) -> list[Item]:
        return [it for it in req.items if self._profile(it) is not None]

    def job_url(self, job_id: str) -> str:
        return f"{self.cfg.url}/api/profile-bulk-import-jobs/{job_id}"

    def job_poll(self, job_id: str, body: bytes) -> tuple[str, str | None]:
        attrs = orjson.loads(body)["data"]["attributes"]
        status = attrs.get("status")
        if status not in ("complete", "cancelled"):
            return "pending", None
        errors = f"{self.job_url(job_id)}/import-errors" if attrs.get("failed_count") else None
        return ("done" if status == "complete" else "cancelled"), errors

    def job_errors(self, body: bytes) -> tuple[list[tuple[str | None, int | None, str]], str | None]:
        doc = orjson.loads(body)
        out: list[tuple[str | None, int | None, str]] = []
        for err in doc.get("data") or []:
            a = err.get("attributes") or {}
            payload = a.get("original_payload") if isinstance(a.get("original_payload"), dict) else {}
            uid = payload.get("external_id") if isinstance(payload.get("external_id"), str) else None
            index = None
            pointer = str((a.get("source") or {}).get("pointer") or "")
            tail = pointer.rsplit("/", 1)[-1]
            if pointer.startswith("/data/attributes/profiles/data/") and tail.isdigit():
                index = int(tail)
            out.append((uid, index, f"{a.get('code', 'error')}: {a.get('detail') or a.get('title') or ''}"[:500]))
        nxt = (doc.get("links") or {}).get("next")
        return out, nxt if isinstance(nxt, str) and nxt else None

    def headers(self, req: Request) -> dict[str, str]:
        return {
            "authorization": f"Klaviyo-API-Key {self.cfg.api_key}",
            "revision": self.cfg.revision,
            "content-type": "application/vnd.api+json",
            "accept": "application/vnd.api+json",
        }
