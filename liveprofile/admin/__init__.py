"""Operator tools that act on stored data: ``forget``/``unsuppress`` (:mod:`.privacy`), dead
letters you can list, show and replay (:mod:`.deadletters`), history import (:mod:`.history`).

May import: :mod:`operators`, :mod:`liveprofile.settings`, :mod:`liveprofile.store`,
:mod:`liveprofile.buffer`. Not the other services.
"""
