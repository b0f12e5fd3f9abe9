"""liveprofile: real-time customer profiles for email personalization.

Packages, in dependency order (each may import only what is above it; ``tests/test_layering.py``
enforces it, ``docs/architecture.md`` explains it):

* :mod:`operators` (top-level) — pure logic: events, identity, per-user state, the profile schema.
* :mod:`liveprofile.settings` — ``LIVEPROFILE_*`` configuration.
* :mod:`liveprofile.store` — Redis: key layout, connections, Lua scripts, the dead-letter and
  buffer-entry formats.
* :mod:`liveprofile.buffer` — the event buffer (Redis Streams or Kafka) and the envelope checks
  every way in shares.
* services, which never import each other: :mod:`liveprofile.collector` (Segment HTTP API),
  :mod:`liveprofile.api` (profile/content API), :mod:`liveprofile.sync` (email platforms),
  :mod:`liveprofile.admin` (forget, dead letters, history import), :mod:`dataflows` (the Bytewax
  flow); :mod:`liveprofile.asgi` is what the two HTTP services share.
* :mod:`liveprofile.devtools` — generator, data sets, the demo; :mod:`liveprofile.cli` — the
  ``liveprofile`` command, which may import everything.
"""
