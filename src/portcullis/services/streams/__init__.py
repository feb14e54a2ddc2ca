"""The real-time layer of the control plane: live, resumable streams of platform events
(`hub`), what a stream asks for (`filters`), live traffic aggregates (`traffic`) and
presence. The transports (SSE, WebSocket, GraphQL subscriptions) sit above, in the
admin and graph packages."""
