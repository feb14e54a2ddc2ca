"""Upstream transports: how the data plane talks HTTP to backend targets."""
