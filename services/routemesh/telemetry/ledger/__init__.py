"""The outcome ledger: one row per request (decision and outcome), in SQLite or PostgreSQL, written off the path."""
