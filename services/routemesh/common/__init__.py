"""Shared plumbing of every routemesh service: serving, tracing, settings, policy model."""
