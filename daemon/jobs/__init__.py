"""The optimizer role: optimization jobs off the event loop (Flow steps 4-7)."""
