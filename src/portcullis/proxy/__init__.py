"""The data plane: a pure ASGI application that proxies requests to upstreams."""
