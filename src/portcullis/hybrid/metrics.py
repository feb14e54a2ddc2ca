"""Prometheus series of the cluster channel (control-plane side)."""

from __future__ import annotations

import functools

from prometheus_client import Counter


class ClusterMetrics:
    def __init__(self) -> None:
        self.refused = Counter(
            "portcullis_cluster_connections_refused",
            "Data-plane connections refused, by reason (token, disabled, protocol)",
            ["reason"],
        )
        self.sent = Counter(
            "portcullis_cluster_config_messages",
            "Config messages sent to data-plane nodes, by kind (snapshot, delta, current)",
            ["kind"],
        )
        self.sent_bytes = Counter(
            "portcullis_cluster_config_bytes",
            "Bytes of config messages sent to data-plane nodes, by kind",
            ["kind"],
        )


@functools.cache
def cluster_metrics() -> ClusterMetrics:
    """This process's cluster counters (in the default registry, registered once)."""
    return ClusterMetrics()
