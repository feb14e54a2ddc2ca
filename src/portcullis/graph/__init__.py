"""The GraphQL admin API: the control plane as one typed graph (issue 16)."""
