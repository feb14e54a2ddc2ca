"""Runtime: the compiled, immutable snapshot the data plane serves from, and its router."""
