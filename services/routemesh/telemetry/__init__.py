"""The telemetry service: live health, usage and prices of every model."""
