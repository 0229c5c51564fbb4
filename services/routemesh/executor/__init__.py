"""The executor service: calls providers over HTTP, fails over, reports what it saw."""
