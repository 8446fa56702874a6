"""Prometheus metrics of the service (exposed at ``/metrics``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.messages_in = Counter(
            "tidings_messages_in", "Inbound messages stored", ["channel"], registry=r
        )
        self.messages_out = Counter(
            "tidings_messages_out", "Outbound messages handed to providers", ["channel"],
            registry=r,
        )  # fmt: skip
        self.send_failures = Counter(
            "tidings_send_failures", "Outbound messages that failed", ["channel"], registry=r
        )
        self.webhook_rejections = Counter(
            "tidings_webhook_rejections", "Webhook requests refused", ["channel", "reason"],
            registry=r,
        )  # fmt: skip
        self.queue_depth = Gauge(
            "tidings_outbox_depth", "Messages waiting in the outbox", registry=r
        )


METRICS = Metrics()
