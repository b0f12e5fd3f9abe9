"""The HTTP collector: Segment's tracking API, the email pixel and webhooks in; the buffer out.

* :mod:`.app` — the ASGI entry, the routing table (``ROUTES``), the lifecycle and the entry
  point (``liveprofile collector``).
* :mod:`.ingest` — the Segment tracking API (``/v1/track|identify|page|screen|group|alias|batch``).
* :mod:`.pixel` — the email-open pixel. :mod:`.webhooks` — signed server-to-server events.
* :mod:`.bodies` — request bodies in, answer bodies out; :mod:`.writekeys` — write-key auth;
  :mod:`.gate` — the way into the buffer (backlog bound, appends); :mod:`.metrics`.
* :mod:`.openapi` — the OpenAPI 3.1 document served at ``/openapi.json``.
* :mod:`.config` — edge settings (rate limits, secrets, IP truncation).
* :mod:`.ratelimit` — per-write-key token buckets.
* :mod:`.signing` — HMAC signatures of the pixel and of inbound webhooks.

May import: :mod:`operators`, :mod:`liveprofile.settings`, :mod:`liveprofile.store`,
:mod:`liveprofile.buffer`, :mod:`liveprofile.asgi`. Not the other services.
"""
