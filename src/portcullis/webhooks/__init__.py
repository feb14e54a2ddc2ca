"""Outgoing webhooks: signed (Standard Webhooks), retried on a schedule, and sent only to
destinations an operator allows.

The modules here are the delivery core and hold no storage: `signing` makes the
`webhook-*` headers, `retry` decides what follows an attempt, `destinations` keeps
deliveries away from internal addresses, and `sender` makes one attempt.
"""
