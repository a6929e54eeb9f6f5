"""Generated hostile records (each must become exactly one dead letter) and valid events for
them to hide among, for the hostile-input tests through the running daemon."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from typing import Any

from schemas import (
    CommandData,
    CommandEvent,
    PromotionData,
    PromotionEvent,
    RatingData,
    RatingEvent,
    Topics,
    TraceData,
    TraceEvent,
)

PROMPTS = ("router_a", "router_b")
CONFIG = """
prompts:
  - name: router_a
    input_keys: [ticket]
    window: {max_examples: 5000}
    triggers: {min_examples: 5000, min_new_examples: 1000, cooldown: 1h}
  - name: router_b
    input_keys: [ticket]
    window: {max_examples: 5000}
    triggers: {min_examples: 5000, min_new_examples: 1000, cooldown: 1h}
"""

Record = tuple[str, bytes | None, bytes | None]


def labeled_trace(prompt: str, trace_id: str, **inputs: Any) -> TraceEvent:
    """A trace that is an example by itself (it carries expectations)."""
    return TraceEvent.build(
        TraceData(
            prompt=prompt,
            trace_id=trace_id,
            inputs={"ticket": f"ticket {trace_id}", **inputs},
            outputs="general",
            expectations={"expected_response": "billing"},
        )
    )


def with_inputs_text(event: TraceEvent, text: str) -> bytes:
    """The event's JSON with `inputs.ticket` replaced by raw JSON text (e.g. a lone-surrogate
    escape or deep nesting that no pydantic model would build)."""
    raw = event.to_json()
    marker = json.dumps(event.data.inputs["ticket"]).encode()
    assert raw.count(marker) == 1
    return raw.replace(marker, text.encode())


def with_time(event: Any, time: Any) -> bytes:
    obj = json.loads(event.to_json())
    obj["time"] = time
    return json.dumps(obj).encode()


class HostileFeed:
    """Hostile records of many kinds, spread over every topic the daemon consumes."""

    def __init__(self, topics: Topics, seed: int = 10) -> None:
        self.topics = topics
        self.rng = random.Random(seed)
        self.inputs = (
            topics.traces,
            topics.ratings,
            topics.commands,
            topics.optimizations,
            topics.promotions,
        )
        self.kinds: dict[str, Callable[[int], Record]] = {
            "tombstone": self.tombstone,
            "truncated": self.truncated,
            "not_utf8": self.not_utf8,
            "garbage": self.garbage,
            "not_an_object": self.not_an_object,
            "nan": self.nan,
            "surrogate": self.surrogate,
            "deep": self.deep,
            "huge_number": self.huge_number,
            "bad_time": self.bad_time,
            "unknown_type": self.unknown_type,
            "bad_envelope": self.bad_envelope,
            "wrong_types": self.wrong_types,
            "unknown_prompt": self.unknown_prompt,
            "wrong_topic": self.wrong_topic,
        }

    def records(self, n: int, n_oversize: int = 10) -> list[tuple[str, Record]]:
        """`n` hostile records (kind, record), `n_oversize` of them over the size limit."""
        names = list(self.kinds)
        out = [
            (name, self.kinds[name](i))
            for i, name in enumerate(self.rng.choice(names) for _ in range(n - n_oversize))
        ]
        out += [("oversize", self.oversize(i)) for i in range(n_oversize)]
        self.rng.shuffle(out)
        return out

    # -- helpers -------------------------------------------------------------------------------

    def _key(self) -> bytes | None:
        return self.rng.choice([b"router_a", b"router_b", None, b"\xff\xfe-not-utf8", b"x" * 300])

    def _valid(self, i: int) -> tuple[str, Any]:
        """A valid event for a random input topic (its own), to be broken by the caller."""
        prompt = self.rng.choice(PROMPTS)
        choice = self.rng.randrange(4)
        if choice == 0:
            return self.topics.traces, labeled_trace(prompt, f"hostile-{i}")
        if choice == 1:
            return self.topics.ratings, RatingEvent.build(
                RatingData(prompt=prompt, trace_id=f"hostile-{i}", rating="good", rater="x")
            )
        if choice == 2:
            return self.topics.commands, CommandEvent.build(CommandData(prompt=prompt, action="rollback"))
        return self.topics.promotions, PromotionEvent.build(
            PromotionData(prompt=prompt, decision="rejected", reason="x")
        )

    def _mutated(self, i: int, change: Callable[[dict[str, Any]], None]) -> Record:
        topic, event = self._valid(i)
        obj = json.loads(event.to_json())
        change(obj)
        return topic, self._key(), json.dumps(obj).encode()

    # -- kinds ---------------------------------------------------------------------------------

    def tombstone(self, i: int) -> Record:
        return self.rng.choice(self.inputs), self._key() or b"router_a", None  # a tombstone has a key

    def truncated(self, i: int) -> Record:
        topic, event = self._valid(i)
        raw = event.to_json()
        return topic, self._key(), raw[: self.rng.randrange(len(raw) - 1)]

    def not_utf8(self, i: int) -> Record:
        topic, event = self._valid(i)
        raw = event.to_json()
        cut = raw.index(b'"source":"') + len(b'"source":"')
        return (
            topic,
            self._key(),
            raw[:cut] + self.rng.choice([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\x80"]) + raw[cut:],
        )

    def garbage(self, i: int) -> Record:
        return (
            self.rng.choice(self.inputs),
            self._key(),
            bytes(self.rng.randrange(256) for _ in range(self.rng.randrange(1, 200))),
        )

    def not_an_object(self, i: int) -> Record:
        value = self.rng.choice([b"[]", b"[1, 2, 3]", b"42", b'"text"', b"null", b"true", b"  "])
        return self.rng.choice(self.inputs), self._key(), value

    def nan(self, i: int) -> Record:
        topic, event = self._valid(i)
        raw = event.to_json()
        return (
            topic,
            self._key(),
            raw[:-1] + b',"x":' + self.rng.choice([b"NaN", b"Infinity", b"-Infinity"]) + b"}",
        )

    def surrogate(self, i: int) -> Record:
        escape = self.rng.choice(["\\ud800", "\\udfff", "\\udbff", "x\\ud83dy"])
        event = labeled_trace(self.rng.choice(PROMPTS), f"hostile-{i}")
        return self.topics.traces, self._key(), with_inputs_text(event, f'"{escape}"')

    def deep(self, i: int) -> Record:
        depth = self.rng.choice([62, 100, 255, 500, 999, 5000])
        event = labeled_trace(self.rng.choice(PROMPTS), f"hostile-{i}")
        return self.topics.traces, self._key(), with_inputs_text(event, "[" * depth + "]" * depth)

    def huge_number(self, i: int) -> Record:
        number = self.rng.choice(["1" + "0" * 400, "1e400", "-1e999"])
        event = labeled_trace(self.rng.choice(PROMPTS), f"hostile-{i}")
        return self.topics.traces, self._key(), with_inputs_text(event, number)

    def oversize(self, i: int) -> Record:
        event = labeled_trace(self.rng.choice(PROMPTS), f"hostile-big-{i}", blob="z" * 600_000)
        return self.topics.traces, self._key(), event.to_json()

    def bad_time(self, i: int) -> Record:
        time = self.rng.choice(
            [
                12345,
                1764158400.5,
                "1764158400",
                "2026-11-26 12:00:00",
                "1969-07-20T20:17:00Z",
                "2999-01-01T00:00:00Z",
                True,
                None,
                {},
            ]
        )
        topic, event = self._valid(i)
        return topic, self._key(), with_time(event, time)

    def unknown_type(self, i: int) -> Record:
        value = self.rng.choice(["gepa.trace.v9", "com.example.other", "", 7])
        return self._mutated(i, lambda obj: obj.__setitem__("type", value))

    def bad_envelope(self, i: int) -> Record:
        def change(obj: dict[str, Any]) -> None:
            which = self.rng.randrange(5)
            if which == 0:
                obj["specversion"] = "0.3"
            elif which == 1:
                del obj["id"]
            elif which == 2:
                obj["subject"] = "someone_else"
            elif which == 3:
                obj["data"] = "not an object"
            else:
                del obj["type"]

        return self._mutated(i, change)

    def wrong_types(self, i: int) -> Record:
        value = self.rng.choice([[1, 2], {"a": None}, -5, 3.5, None, True, "", "bad prompt name!"])

        def change(obj: dict[str, Any]) -> None:
            obj["data"]["prompt"] = obj["subject"] = value

        return self._mutated(i, change)

    def unknown_prompt(self, i: int) -> Record:
        topic, event = self._valid(i)
        while topic == self.topics.promotions:  # promotions of other prompts are not refused
            topic, event = self._valid(i)
        obj = json.loads(event.to_json())
        obj["subject"] = obj["data"]["prompt"] = "not_managed"
        return topic, self._key(), json.dumps(obj).encode()

    def wrong_topic(self, i: int) -> Record:
        topic, event = self._valid(i)
        others = [
            t
            for t in (self.topics.traces, self.topics.ratings, self.topics.commands, self.topics.promotions)
            if t != topic
        ]
        return self.rng.choice(others), self._key(), event.to_json()


def valid_feed(topics: Topics, n_labeled: int, n_joined: int) -> tuple[list[Record], dict[str, int]]:
    """`n_labeled` self-labeled traces, and `n_joined` traces each with its rating (ratings first
    for half of them); returns the records and the examples each prompt's window must hold."""
    records: list[Record] = []
    expected = dict.fromkeys(PROMPTS, 0)
    for i in range(n_labeled):
        prompt = PROMPTS[i % 2]
        event = labeled_trace(prompt, f"valid-{i}")
        records.append((topics.traces, event.key, event.to_json()))
        expected[prompt] += 1
    for i in range(n_joined):
        prompt = PROMPTS[i % 2]
        trace = TraceEvent.build(
            TraceData(prompt=prompt, trace_id=f"joined-{i}", inputs={"ticket": f"t{i}"}, outputs="general")
        )
        rating = RatingEvent.build(
            RatingData(prompt=prompt, trace_id=f"joined-{i}", rating="good", rater="sme")
        )
        pair = [(topics.traces, trace.key, trace.to_json()), (topics.ratings, rating.key, rating.to_json())]
        records.extend(pair if i % 2 else pair[::-1])
        expected[prompt] += 1
    return records, expected
