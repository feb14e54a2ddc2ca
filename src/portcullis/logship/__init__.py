"""Log shipping: request records sent off the request path to HTTP, file and syslog sinks.

The `http-log`, `file-log` and `syslog` plugins (plugins/log_shipping.py) hand each
finished request's record to a `Shipper` (shipper.py): a bounded in-memory queue per
destination and worker, drained in batches by a task of its own into a sink
(http_sink.py, file_sink.py, syslog_sink.py). The request path only appends; a full
queue drops and counts (docs/decisions/030-log-shipping-queues.md).
"""
