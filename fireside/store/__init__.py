"""The chat application's storage: tables and migrations, the event log, stop signals, rate
limits (in-process or Redis).

Knows no routes; `fireside.app` builds on it."""
