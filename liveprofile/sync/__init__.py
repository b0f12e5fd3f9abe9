"""ESP sync: the profile change feed delivered to email platforms, exactly once per (user, version).

``liveprofile sync`` reads ``{p}:profile-changes`` with one consumer group per
destination and pushes only changed fields, batched to each vendor's limits
and paced by the vendor's own signals; failures end in a per-destination
dead-letter stream that ``liveprofile sync replay DEST`` re-drives.

Modules:

=================  ==========================================================
``config``         destinations (``LIVEPROFILE_SYNC_DESTINATIONS``) and options
``model``          change entries, per-user items, :func:`collapse`, Redis keys
``pacing``         Retry-After / RateLimit-* pacing, jittered backoff
``destinations``   adapter base and value typing; ``webhook``, ``braze``,
                   ``klaviyo`` are the adapters
``worker``         one destination's loop, composing the three below
``lease``          the destination lease: one holder, hot standbys
``feed``           reading the change feed: groups, pending, batches, filters
``delivery``       requests out: pacing, retries, splits, dead letters, commit
``runner``         the process: all workers, metrics server, signals
``redrive``        dead letters: list, re-drive
``cli``            :func:`add_commands` for the ``liveprofile`` CLI
=================  ==========================================================
"""

from liveprofile.sync.cli import add_commands

__all__ = ["add_commands"]
