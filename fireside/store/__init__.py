"""The store layer: persistence and shared state (rate limits; the database and event log)."""
