"""Redis as liveprofile's store: the one home of its formats.

* :mod:`.keys` — every key name (SPEC §4 plus the internal buffer), for one server or a cluster.
* :mod:`.connection` — clients for both layouts, retry classes, script loading, raw pipelines.
* :mod:`.scripts` — every Lua script (``lua/*.lua``) and the typed wrappers that run them.
* :mod:`.deadletter` — the dead-letter entry every stage writes.
* :mod:`.envelope` — the kinds of buffer entries (events, merges, privacy controls).

May import: :mod:`operators`, :mod:`liveprofile.settings`, ``redis``, ``orjson``. Nothing else of
liveprofile.
"""
