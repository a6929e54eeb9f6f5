"""Topic names of the event contract, with a configurable prefix."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_PREFIX = "gepa."


@dataclass(frozen=True)
class Topics:
    """Every topic the daemon reads or writes; `prefix` defaults to ``gepa.``."""

    prefix: str = DEFAULT_PREFIX

    @property
    def traces(self) -> str:
        return f"{self.prefix}traces"

    @property
    def ratings(self) -> str:
        return f"{self.prefix}ratings"

    @property
    def commands(self) -> str:
        return f"{self.prefix}commands"

    @property
    def optimizations(self) -> str:
        return f"{self.prefix}optimizations"

    @property
    def snapshots(self) -> str:
        return f"{self.prefix}snapshots"

    @property
    def prompts(self) -> str:
        return f"{self.prefix}prompts"

    @property
    def promotions(self) -> str:
        return f"{self.prefix}promotions"

    @property
    def dlq(self) -> str:
        return f"{self.prefix}dlq"

    @property
    def inputs(self) -> tuple[str, ...]:
        """The co-partitioned topics the ingest agents consume."""
        return (self.traces, self.ratings, self.commands)

    def all(self) -> tuple[str, ...]:
        return (
            self.traces,
            self.ratings,
            self.commands,
            self.optimizations,
            self.snapshots,
            self.prompts,
            self.promotions,
            self.dlq,
        )

    def short_name(self, topic: str) -> str:
        """`gepa.traces` -> `traces` (the name used in CLI arguments)."""
        return topic[len(self.prefix) :] if topic.startswith(self.prefix) else topic

    def resolve(self, name: str) -> str:
        """Accept a short name (`traces`) or a full topic name; return the full name."""
        full = {self.short_name(t): t for t in self.all()}
        if name in full:
            return full[name]
        if name in full.values():
            return name
        raise ValueError(f"unknown topic {name!r} (known: {', '.join(full)})")
