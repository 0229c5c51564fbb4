"""The router's gRPC clients: classifier, telemetry health and executor, each converting at its edge."""
