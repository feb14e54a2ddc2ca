"""The upstream side of the data plane, below `runtime`: the transport protocol and its
implementations, pools and balancing, circuit breakers, active health checks and load
shedding. The compiled snapshot holds these pieces; the proxy drives them per request."""
