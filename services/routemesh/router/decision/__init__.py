"""The decision: which models may serve a request, in which order, and why (grpc-free, pure functions)."""
