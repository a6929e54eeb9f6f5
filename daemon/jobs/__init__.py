"""The optimizer role: optimization jobs off the event loop (docs/architecture.md, steps 5-11 and 13)."""
