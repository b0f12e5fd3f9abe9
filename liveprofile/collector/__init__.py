"""The HTTP collector: Segment's tracking API, the email pixel and webhooks in; the buffer out.

* :mod:`.app` — the ASGI application and its entry point (``liveprofile collector``).
* :mod:`.config` — edge settings (rate limits, secrets, IP truncation).
* :mod:`.ratelimit` — per-write-key token buckets.
* :mod:`.signing` — HMAC signatures of the pixel and of inbound webhooks.

May import: :mod:`operators`, :mod:`liveprofile.settings`, :mod:`liveprofile.store`,
:mod:`liveprofile.buffer`, :mod:`liveprofile.asgi`. Not the other services.
"""
