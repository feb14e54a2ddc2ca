"""The control plane: admin REST API, health and metrics on :8001."""
