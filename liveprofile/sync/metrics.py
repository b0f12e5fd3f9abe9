"""Prometheus metrics of the sync process (own registry, served on ``/metrics``).

=============================================  =======  =========================================
``liveprofile_sync_requests_total``            counter  HTTP requests by destination and status
                                                        (code, ``timeout`` or ``error``)
``liveprofile_sync_retries_total``             counter  retries by destination and reason
``liveprofile_sync_delivered_changes_total``   counter  change entries delivered
``liveprofile_sync_dead_letters_total``        counter  items dead-lettered
``liveprofile_sync_skipped_total``             counter  changes not pushed, by reason (stale,
                                                        suppressed, no_consent, nothing_to_send,
                                                        malformed, unclearable,
                                                        unsubscribe_no_email)
``liveprofile_sync_queue_age_seconds``         gauge    age of the oldest undelivered change
``liveprofile_sync_lease_held``                gauge    1 while this process serves the destination
``liveprofile_sync_request_seconds``           histo    request latency by destination
=============================================  =======  =========================================
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["SyncMetrics"]


class SyncMetrics:
    """The sync metrics on one registry (a fresh one unless given)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry or CollectorRegistry()
        self.requests = Counter("liveprofile_sync_requests_total", "HTTP requests by destination and status",
                                ["destination", "status"], registry=r)  # fmt: skip
        self.retries = Counter("liveprofile_sync_retries_total", "Retries by destination and reason",
                               ["destination", "reason"], registry=r)  # fmt: skip
        self.delivered = Counter("liveprofile_sync_delivered_changes_total", "Change entries delivered",
                                 ["destination"], registry=r)  # fmt: skip
        self.dead = Counter("liveprofile_sync_dead_letters_total", "Items dead-lettered", ["destination"], registry=r)
        self.skipped = Counter("liveprofile_sync_skipped_total", "Changes not pushed, by reason",
                               ["destination", "reason"], registry=r)  # fmt: skip
        self.queue_age = Gauge("liveprofile_sync_queue_age_seconds", "Age of the oldest undelivered change",
                               ["destination"], registry=r)  # fmt: skip
        self.lease = Gauge("liveprofile_sync_lease_held", "1 while this process serves the destination",
                           ["destination"], registry=r)  # fmt: skip
        self.latency = Histogram(
            "liveprofile_sync_request_seconds", "Request latency", ["destination"], registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )  # fmt: skip
