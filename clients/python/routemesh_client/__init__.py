"""Typed Python client for the routemesh RouterService (sync and async)."""
