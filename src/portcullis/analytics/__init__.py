"""Request log, rollups, sketches, queries, exports, metrics and anomaly detection."""
