"""Privacy requests platforms sent by webhook: ``liveprofile privacy-requests [--apply]``.

The collector records each one in ``{p}:privacy-requests`` (fields ``kind`` — ``forget`` or
``record`` —, ``source``, ``user_id``, ``topic``, ``delivery``, ``received_at``, ``payload``) when a
source's mapping has a ``forget`` or ``record`` action (Shopify's ``customers/redact``,
``customers/data_request``, ``shop/redact``). For a ``forget`` it has already appended the
dataflow's FORGET control entry; the full erasure (profile hash, buffered events, dead letters,
change feed, the email platforms told) is :func:`liveprofile.admin.privacy.forget`, which lives
here in the admin layer, not in the collector.

:func:`apply_pending` runs ``forget`` for every ``forget`` request after the last one handled
(``{p}:privacy-requests:done`` field ``last``, advanced after each one, so a crash repeats at
most one erasure: ``forget`` is idempotent) and returns what it did. ``record`` requests are
listed only (answering a data request or a shop redaction is the operator's task).
"""

from __future__ import annotations

import argparse
from typing import Any

import orjson
import redis

from liveprofile.admin.privacy import forget
from liveprofile.buffer.writers import raw_writer
from liveprofile.settings import Settings
from liveprofile.store.connection import connect
from liveprofile.store.keys import Keys

__all__ = ["pending", "apply_pending", "add_commands"]


def _text(v: bytes | None) -> str:
    return v.decode("utf-8", "replace") if v is not None else ""


def pending(client: redis.Redis, keys: Keys) -> list[dict[str, str]]:
    """The requests after the last handled one, oldest first (without their payloads)."""
    last = client.hget(keys.privacy_requests_done, "last")
    lo = "(" + last.decode() if last else "-"
    out = []
    for eid, f in client.xrange(keys.privacy_requests, min=lo, max="+"):
        out.append({"id": eid.decode(), **{k: _text(f.get(k.encode())) for k in ("kind", "source", "user_id", "topic", "received_at")}})
    return out


def apply_pending(client: redis.Redis, keys: Keys, settings: Settings) -> list[dict[str, Any]]:
    """Erase the user of every pending ``forget`` request (see the module doc)."""
    done: list[dict[str, Any]] = []
    write = raw_writer(settings, client)
    for req in pending(client, keys):
        if req["kind"] == "forget" and req["user_id"]:
            stats = forget(client, keys, settings.shards, req["user_id"], settings.changes_maxlen, write)
            done.append({**req, "forgotten": stats})
        else:
            done.append(req)
        client.hset(keys.privacy_requests_done, "last", req["id"])
    return done


def _cmd(args: argparse.Namespace, settings: Settings) -> int:
    client = connect(settings.redis_url, settings.redis_cluster)
    keys = Keys.of(settings)
    rows = apply_pending(client, keys, settings) if args.apply else pending(client, keys)
    for row in rows:
        print(orjson.dumps(row).decode())
    return 0


def add_commands(sub: Any) -> None:
    """Register ``privacy-requests`` on the ``liveprofile`` CLI."""
    p = sub.add_parser("privacy-requests", help="list (or --apply) the privacy requests received by webhook")
    p.add_argument("--apply", action="store_true", help="erase the user of each pending forget request")
    p.set_defaults(func=_cmd)
