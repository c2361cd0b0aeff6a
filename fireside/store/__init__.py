"""The chat application's storage: tables and migrations, the event log, stop signals.

Knows no routes; `fireside.app` builds on it."""
