"""Hybrid mode: a control plane and data-plane nodes without a database (docs/hybrid.md)."""
