"""An observer for `ProxyApp` unit tests: keeps every request record it is shown."""

from __future__ import annotations

from portcullis.analytics.record import RequestRecord


class RecordCollector:
    """A `RequestObserver` that appends each finished request's record to `records`."""

    def __init__(self) -> None:
        self.records: list[RequestRecord] = []

    def observe(self, record: RequestRecord) -> None:
        self.records.append(record)
