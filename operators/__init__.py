"""Pure logic: everything liveprofile decides, with no engine, Redis, HTTP or clock reads.

Events (:mod:`.events`, :mod:`.names`), the profile schema (:mod:`.schema`), identity, dedupe,
money and time, the per-user state and its step (:mod:`.profile`, :mod:`.behaviour`,
:mod:`.interest`, :mod:`.user`), RFM, the online models, versioned snapshots (:mod:`.snapshot`).
Time is always passed in (event times and the stream clock's reading), so every function here is
deterministic and doctested.

May import: the standard library, ``orjson`` and ``river``; nothing of liveprofile, dataflows or
any I/O library (``tests/test_layering.py``).
"""
