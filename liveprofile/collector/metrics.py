"""The collector's Prometheus metrics: one :class:`CollectorMetrics` per app, in its own registry.

Contract: the metric names, help texts and labels below are what dashboards and the alert rules
(``deploy/``) read; every label value a counter can take is created at start (so a rate is 0, not
absent) for the auth reasons, the pixel results and, per configured webhook source, the webhook
results. Secrets never become a label: a webhook source that is not configured is ``unknown``.

May import: :mod:`liveprofile.buffer` (for :class:`~liveprofile.buffer.ingest.Prepared`).
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram

from liveprofile.buffer.ingest import Prepared

__all__ = ["CollectorMetrics", "AUTH_REASONS", "PIXEL_RESULTS", "WEBHOOK_RESULTS"]

#: ``liveprofile_collector_auth_failures_total{reason}``
AUTH_REASONS = ("missing_write_key", "unknown_write_key", "malformed_authorization")
#: ``liveprofile_collector_pixel_requests_total{result}``
PIXEL_RESULTS = (
    "ok", "duplicate", "disabled", "missing_parameter", "malformed", "invalid_signature", "expired",
    "not_yet_valid", "invalid_event", "backlog_full", "buffer_unavailable", "buffer_out_of_memory",
    "buffer_read_only", "head", "internal_error",
)  # fmt: skip
#: ``liveprofile_collector_webhook_requests_total{source, result}`` (created for each configured source)
WEBHOOK_RESULTS = (
    "accepted", "missing_signature", "invalid_signature", "stale_signature", "replayed_signature",
    "malformed_json", "not_object", "missing_batch", "request_too_large", "too_many_events", "backlog_full",
    "buffer_unavailable", "buffer_out_of_memory", "buffer_read_only",
)  # fmt: skip


class CollectorMetrics:
    """The collector's counters and histogram, registered in ``registry``."""

    def __init__(self, registry: CollectorRegistry, webhook_sources: Iterable[str] = ()) -> None:
        self.registry = registry
        self.requests = Counter(
            "liveprofile_collector_requests_total", "HTTP requests by endpoint and status",
            ["endpoint", "status"], registry=registry,
        )  # fmt: skip
        self.accepted = Counter(
            "liveprofile_collector_events_accepted_total", "Events appended to the buffer", registry=registry
        )
        self.rejected = Counter(
            "liveprofile_collector_events_rejected_total", "Events refused or dead-lettered, by reason",
            ["reason"], registry=registry,
        )  # fmt: skip
        self.suppressed = Counter(
            "liveprofile_collector_events_suppressed_total",
            "Events of forgotten (suppressed) users: answered 2xx, nothing of them kept", registry=registry,
        )
        self.latency = Histogram(
            "liveprofile_collector_request_seconds", "Request handling time", ["endpoint"], registry=registry,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
        )  # fmt: skip
        self.auth_failures = Counter(
            "liveprofile_collector_auth_failures_total",
            "Requests refused 401 for their write key: missing_write_key, unknown_write_key, malformed_authorization",
            ["reason"], registry=registry,
        )  # fmt: skip
        self.rate_limited = Counter(
            "liveprofile_collector_rate_limited_events_total",
            "Events refused (429) because their write key was over its rate limit in this process", registry=registry,
        )
        self.pixel = Counter(
            "liveprofile_collector_pixel_requests_total", "Email-open pixel requests by result (ok: an event was appended)",
            ["result"], registry=registry,
        )
        self.webhooks = Counter(
            "liveprofile_collector_webhook_requests_total",
            "Webhook deliveries by source (configured name, or unknown) and result (accepted or the error code)",
            ["source", "result"], registry=registry,
        )  # fmt: skip
        for reason in AUTH_REASONS:
            self.auth_failures.labels(reason)
        for result in PIXEL_RESULTS:
            self.pixel.labels(result)
        for source in webhook_sources:
            for result in WEBHOOK_RESULTS:
                self.webhooks.labels(source, result)

    def count(self, prep: Prepared) -> None:
        """Count what :func:`~liveprofile.buffer.ingest.prepare` accepted and rejected (by reason)."""
        if prep.accepted:
            self.accepted.inc(prep.accepted)
        if prep.suppressed:
            self.suppressed.inc(prep.suppressed)
        for rej in prep.rejected:
            self.rejected.labels(rej.reason).inc()
