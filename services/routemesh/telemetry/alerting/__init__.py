"""Alerting: rules read from the policy, evaluated in telemetry, delivered to webhooks."""
