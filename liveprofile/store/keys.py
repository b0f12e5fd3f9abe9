"""Redis key layout (SPEC §4 plus the internal buffer): the one place that knows it.

Two layouts, chosen by ``LIVEPROFILE_REDIS_CLUSTER``:

**Single Redis** (the default; ``Keys(prefix)``):

=================================  ======  =====================================================
key                                type    holds
=================================  ======  =====================================================
``{p}:events:{shard}``             STREAM  buffered raw events, field ``e`` = event JSON
                                           (collector-stamped ``receivedAt``), shards 0..N-1 by
                                           CRC-32(userId or anonymousId) mod N
``{p}:buffer:progress``            HASH    ``{shard}`` -> entries the dataflow has read (backlog =
                                           XINFO entries-added minus this); ``t{shard}`` -> newest
                                           event time seen (the shared stream clock)
``{p}:profile:{user_id}``          HASH    the profile (SPEC §4 fields) of a known user
``{p}:profile-anon:{anonymous_id}`` HASH   an anonymous visitor's profile (same fields): its own
                                           family, so an anonymousId never names a known user's
                                           profile (SPEC §1); not in segment sets; its change-feed
                                           entries carry ``anonymous`` = ``1``
``{p}:profile-changes``            STREAM  change feed: ``user_id``, ``version``, ``changed`` (JSON
                                           object of the changed fields and their new values)
``{p}:dead-letter``                STREAM  ``raw``, ``reason``, ``message``, ``received_at``,
                                           ``stage``, ``source``
``{p}:dead-letter:seen``           HASH    source partition -> highest position dead-lettered
                                           (dedupe of at-least-once dead-letter writes)
``{p}:dead-letter:redriven``       STREAM  dead letters re-driven by ``liveprofile deadletter replay``
``{p}:segment:{name}``             SET     user ids per segment: RFM segments (``champions``, ...),
                                           ``interest:{category}`` (top category),
                                           ``cart_abandoned``, ``suspect``
``{p}:audience:{name}``            SET     user ids in the audience ``name`` (definitions file, SPEC §6;
                                           known users only), kept by the profile script from the
                                           ``audiences`` field; entering/leaving: change-feed entries
                                           with ``audiences_entered`` / ``audiences_exited``, ``event_at``
``{p}:suppressed``                 SET     forgotten users: never re-created, never synced
``{p}:rfm:edges``                  STRING  current RFM population edges (JSON)
``{p}:rfm:refresh``                HASH    RFM refresher: ``converged`` (1 once a full pass over the customers changed nothing), ``customers``, ``at``
``{p}:rfm:customers``              SET     users with at least one order (RFM rescoring index)
``{p}:anomalies``                  STREAM  flagged events/users with score and features
``{p}:experiment:{name}:exposures``  HASH  user -> first exposure (:mod:`liveprofile.api.experiments`)
``{p}:webhook-seen:{source}:{d}``  STRING  webhook replay cache (collector)
``{p}:webhook-index:{source}:{index}:{key}``  STRING  a webhook mapping's remembered value (collector)
``{p}:privacy-requests``           STREAM  platforms' privacy requests received by webhook
                                           (``kind``, ``source``, ``user_id``, ``topic``, ...;
                                           ``liveprofile privacy-requests --apply`` acts on ``forget``)
``{p}:product:{id}``               HASH    catalogue entry: ``name``, ``category``, ``price``, ``brand``,
                                           ``sku``, ``url``, ``image_url``, ``popularity`` (written by
                                           the dataflow's catalogue step, :mod:`operators.catalogue`,
                                           or by the shop; read by the API)
``{p}:category-top:{category}``    ZSET    product -> popularity, the ``LIVEPROFILE_CATALOGUE_TOP_MAX``
                                           most popular (same writers; read by the API)
``{p}:debug-events``               STREAM  the source debugger's tap (``LIVEPROFILE_DEBUGGER=on``): one
                                           redacted entry per event the collector accepted or
                                           rejected, capped at ``LIVEPROFILE_DEBUGGER_MAXLEN``
                                           (:mod:`liveprofile.store.debugtap`; read by the API's
                                           ``/debugger``, scrubbed by ``liveprofile forget``)
=================================  ======  =====================================================

**Redis Cluster** (``Keys(prefix, cluster_groups=G)``): users fall into ``G``
*groups*, ``g = CRC-32(user_id) mod G`` (:func:`operators.routing.shard_of`),
and every key one profile write touches carries the hash tag ``{g}``, so the
profile script (profile hash, change feed, suppressed set, segment and audience sets) runs
on one slot of one node:

=========================================  ===============================================
``{p}:{g}:profile:{user_id}``              the profile
``{p}:{g}:profile-anon:{anonymous_id}``    an anonymous profile (group of the anonymous id)
``{p}:{g}:profile-changes``                change feed of group ``g`` (G streams in all)
``{p}:{g}:segment:{name}``                 the members of ``name`` that are in group ``g``
``{p}:{g}:audience:{name}``                the members of audience ``name`` that are in group ``g``
``{p}:{g}:suppressed``                     forgotten users of group ``g``
``{p}:{g}:rfm:customers``                  RFM rescoring index of group ``g``
``{p}:{g}:experiment:{name}:exposures``    exposures of group ``g``'s users
``{p}:{g}:sync-watermark:{dest}`` etc.     the ESP sync's per-group keys (:class:`~liveprofile.sync.model.SyncKeys`)
``{{p}}:dead-letter``, ``{{p}}:dead-letter:seen``, ``{{p}}:dead-letter:redriven``
                                           tagged with the prefix: the dead-letter script
                                           and re-drive touch them together
=========================================  ===============================================

Everything else keeps its single-Redis name: each is touched alone (the buffer
streams ``{p}:events:{i}`` are one slot each, so shards spread over the
masters; ``{p}:buffer:progress``, ``{p}:rfm:edges``, ``{p}:anomalies``,
``{p}:webhook-seen:*``, ``{p}:webhook-index:*``, ``{p}:sync-lease:{dest}``, the catalogue). The prefix must not contain
``{`` or ``}`` in cluster mode (it would become the hash tag).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from operators.routing import shard_of

if TYPE_CHECKING:
    from liveprofile.settings import Settings

__all__ = ["Keys"]


@dataclass(frozen=True, slots=True)
class Keys:
    """Key builders for one prefix and layout (``cluster_groups`` 0: single Redis).

    >>> k = Keys("lp")
    >>> k.profile("u1"), k.events(3), k.changes, k.changes_for("u1"), k.groups
    ('lp:profile:u1', 'lp:events:3', 'lp:profile-changes', 'lp:profile-changes', range(0, 1))
    >>> c = Keys("lp", cluster_groups=16)
    >>> c.group("u1"), c.profile("u1"), c.changes_for("u1"), c.segment_in(c.group("u1"), "loyal")
    (6, 'lp:{6}:profile:u1', 'lp:{6}:profile-changes', 'lp:{6}:segment:loyal')
    >>> c.dead_letter, c.dead_letter_seen, c.events(3), c.script_prefix("u1")
    ('{lp}:dead-letter', '{lp}:dead-letter:seen', 'lp:events:3', 'lp:{6}')
    """

    prefix: str = "lp"
    cluster_groups: int = 0

    @classmethod
    def of(cls, settings: Settings) -> Keys:
        """The layout ``settings`` selects (``LIVEPROFILE_REDIS_CLUSTER``, ``LIVEPROFILE_CLUSTER_GROUPS``)."""
        return cls(settings.key_prefix, settings.cluster_groups if settings.redis_cluster else 0)

    # -- groups ------------------------------------------------------------------
    @property
    def cluster(self) -> bool:
        """Whether this is the Redis Cluster layout."""
        return self.cluster_groups > 0

    @property
    def groups(self) -> range:
        """The group indexes: ``range(G)`` in cluster mode, ``range(1)`` otherwise."""
        return range(self.cluster_groups or 1)

    def group(self, user_id: str) -> int:
        """The group of ``user_id`` (always 0 in the single layout)."""
        return shard_of(user_id, self.cluster_groups) if self.cluster_groups else 0

    def group_prefix(self, g: int) -> str:
        """Prefix of group ``g``'s keys: ``{p}`` (single) or ``{p}:{g}`` (cluster, the hash tag)."""
        return f"{self.prefix}:{{{g}}}" if self.cluster_groups else self.prefix

    def script_prefix(self, user_id: str) -> str:
        """What :data:`liveprofile.store.scripts.PROFILE_LUA` builds ``user_id``'s segment keys from."""
        return self.group_prefix(self.group(user_id))

    def _single(self, what: str) -> None:
        if self.cluster_groups:
            msg = f"{what} is per group in the Redis Cluster layout: use {what}_in(g) / {what}_for(user_id)"
            raise ValueError(msg)

    # -- per user, per group -------------------------------------------------------
    def profile(self, user_id: str) -> str:
        return f"{self.script_prefix(user_id)}:profile:{user_id}"

    def profile_anon(self, anonymous_id: str) -> str:
        """The profile hash of the anonymous visitor ``anonymous_id`` (never a known user's).

        >>> Keys("lp").profile_anon("u1"), Keys("lp").profile("u1")
        ('lp:profile-anon:u1', 'lp:profile:u1')
        """
        return f"{self.script_prefix(anonymous_id)}:profile-anon:{anonymous_id}"

    def profile_anon_keys(self, anonymous_id: str) -> tuple[str, str, str]:
        """KEYS of the profile script for the anonymous profile ``anonymous_id``."""
        g = self.group(anonymous_id)
        return self.profile_anon(anonymous_id), self.changes_in(g), self.suppressed_in(g)

    def _pattern(self, g: int | None) -> str:
        if g is None and self.cluster_groups:
            return f"{self.prefix}:{{*}}"  # every group's tag
        return self.group_prefix(g or 0)

    def profile_pattern(self, g: int | None = None) -> str:
        """SCAN pattern of group ``g``'s profiles (``None``: every group's).

        >>> Keys("lp").profile_pattern(), Keys("lp", 8).profile_pattern(), Keys("lp", 8).profile_pattern(2)
        ('lp:profile:*', 'lp:{*}:profile:*', 'lp:{2}:profile:*')
        """
        return f"{self._pattern(g)}:profile:*"

    def changes_in(self, g: int) -> str:
        return f"{self.group_prefix(g)}:profile-changes"

    def changes_for(self, user_id: str) -> str:
        return self.changes_in(self.group(user_id))

    def segment_in(self, g: int, name: str) -> str:
        return f"{self.group_prefix(g)}:segment:{name}"

    def segment_pattern(self, g: int | None = None) -> str:
        """SCAN pattern of group ``g``'s segment sets (``None``: every group's)."""
        return f"{self._pattern(g)}:segment:*"

    def segment_name(self, key: str | bytes) -> str:
        """The segment name of a segment key (any group).

        >>> Keys("lp", 4).segment_name(b"lp:{2}:segment:interest:shoes")
        'interest:shoes'
        """
        k = key.decode() if isinstance(key, bytes) else key
        return k.split(":segment:", 1)[1]

    def audience_in(self, g: int, name: str) -> str:
        """The set of group ``g``'s members of audience ``name`` (what the profile script keeps).

        >>> Keys("lp").audience_in(0, "vip"), Keys("lp", 16).audience_in(3, "vip")
        ('lp:audience:vip', 'lp:{3}:audience:vip')
        """
        return f"{self.group_prefix(g)}:audience:{name}"

    def audience_pattern(self, g: int | None = None) -> str:
        """SCAN pattern of group ``g``'s audience sets (``None``: every group's).

        >>> Keys("lp").audience_pattern(), Keys("lp", 8).audience_pattern(), Keys("lp", 8).audience_pattern(2)
        ('lp:audience:*', 'lp:{*}:audience:*', 'lp:{2}:audience:*')
        """
        return f"{self._pattern(g)}:audience:*"

    def audience_name(self, key: str | bytes) -> str:
        """The audience name of an audience key (any group).

        >>> Keys("lp", 4).audience_name(b"lp:{2}:audience:shoe_fans")
        'shoe_fans'
        """
        k = key.decode() if isinstance(key, bytes) else key
        return k.split(":audience:", 1)[1]

    def suppressed_in(self, g: int) -> str:
        return f"{self.group_prefix(g)}:suppressed"

    def suppressed_for(self, user_id: str) -> str:
        return self.suppressed_in(self.group(user_id))

    def rfm_customers_in(self, g: int) -> str:
        return f"{self.group_prefix(g)}:rfm:customers"

    def exposures_in(self, g: int, experiment: str) -> str:
        return f"{self.group_prefix(g)}:experiment:{experiment}:exposures"

    def account(self, group_id: str) -> str:
        """The account hash of a ``group`` call's ``groupId``: its traits (each a JSON value) and ``group_id``.

        >>> Keys("lp").account_keys("acme")
        ('lp:account:acme', 'lp:account-times:acme', 'lp:account-members:acme')
        >>> Keys("lp", 16).account("acme") == Keys("lp", 16).account_keys("acme")[0]
        True
        """
        return f"{self.script_prefix(group_id)}:account:{group_id}"

    def account_members(self, group_id: str) -> str:
        """The set of the user ids whose ``group`` calls named ``group_id``."""
        return f"{self.script_prefix(group_id)}:account-members:{group_id}"

    def account_keys(self, group_id: str) -> tuple[str, str, str]:
        """KEYS of :data:`~liveprofile.store.scripts.ACCOUNT_LUA`: account hash, its trait write
        times, its members (one group tag: one slot in the cluster layout)."""
        p = self.script_prefix(group_id)
        return f"{p}:account:{group_id}", f"{p}:account-times:{group_id}", f"{p}:account-members:{group_id}"

    def profile_keys(self, user_id: str) -> tuple[str, str, str]:
        """KEYS of :data:`~liveprofile.store.scripts.PROFILE_LUA` for ``user_id``: profile, change feed, suppressed."""
        g = self.group(user_id)
        return f"{self.group_prefix(g)}:profile:{user_id}", self.changes_in(g), self.suppressed_in(g)

    # -- the single layout's names of per-group keys (refused in cluster mode) -------
    def segment(self, name: str) -> str:
        self._single("segment")
        return self.segment_in(0, name)

    @property
    def changes(self) -> str:
        self._single("changes")
        return self.changes_in(0)

    @property
    def suppressed(self) -> str:
        self._single("suppressed")
        return self.suppressed_in(0)

    @property
    def rfm_customers(self) -> str:
        self._single("rfm_customers")
        return self.rfm_customers_in(0)

    # -- global keys -------------------------------------------------------------
    def events(self, shard: int) -> str:
        return f"{self.prefix}:events:{shard}"

    @property
    def _dl(self) -> str:
        return f"{{{self.prefix}}}:dead-letter" if self.cluster_groups else f"{self.prefix}:dead-letter"

    @property
    def dead_letter(self) -> str:
        return self._dl

    @property
    def dead_letter_redriven(self) -> str:
        return f"{self._dl}:redriven"

    @property
    def dead_letter_seen(self) -> str:
        return f"{self._dl}:seen"

    @property
    def buffer_progress(self) -> str:
        return f"{self.prefix}:buffer:progress"

    @property
    def rfm_edges(self) -> str:
        return f"{self.prefix}:rfm:edges"

    @property
    def rfm_refresh(self) -> str:
        return f"{self.prefix}:rfm:refresh"

    @property
    def anomalies(self) -> str:
        return f"{self.prefix}:anomalies"

    @property
    def privacy_requests(self) -> str:
        """Privacy requests received by webhook (Shopify's compliance topics)."""
        return f"{self.prefix}:privacy-requests"

    @property
    def privacy_requests_done(self) -> str:
        """HASH: ``last`` = the id of the newest privacy request ``liveprofile forget --pending`` handled."""
        return f"{self.prefix}:privacy-requests:done"

    def webhook_index(self, source: str, index: str, key: str) -> str:
        """A value a webhook mapping remembered (``remember`` / ``lookup``)."""
        return f"{self.prefix}:webhook-index:{source}:{index}:{key}"

    def webhook_seen(self, source: str, digest: str) -> str:
        """Replay-cache key of one signed webhook delivery."""
        return f"{self.prefix}:webhook-seen:{source}:{digest}"

    @property
    def debug_events(self) -> str:
        """The source debugger's capped tap stream (:mod:`liveprofile.store.debugtap`).

        >>> Keys("lp").debug_events, Keys("lp", 4).debug_events
        ('lp:debug-events', 'lp:debug-events')
        """
        return f"{self.prefix}:debug-events"

    def product(self, product_id: str) -> str:
        return f"{self.prefix}:product:{product_id}"

    def category_top(self, category: str) -> str:
        return f"{self.prefix}:category-top:{category}"

    @property
    def profile_prefix(self) -> str:
        self._single("profile_prefix")
        return f"{self.prefix}:profile:"

    @property
    def profile_anon_prefix(self) -> str:
        self._single("profile_anon_prefix")
        return f"{self.prefix}:profile-anon:"
