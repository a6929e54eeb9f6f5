"""`gepa-stream bridge otel`: OpenTelemetry spans -> trace and rating events.

Two ways in, one way out. (1) A consumer group on the topic an OpenTelemetry Collector's Kafka
exporter writes (`TracesData` per record, `otlp_proto` or `otlp_json`); each fetch is decoded,
mapped (`handlers.otel_mapping`), produced keyed by prompt, and its offsets committed only once the
broker has acknowledged every event — at-least-once, and a redelivered batch yields the same event
ids. (2) OTLP/HTTP `POST /v1/traces` (protobuf or JSON, gzip accepted)
on the bridge's HTTP port, answering after the events are acknowledged. Bad payloads and
unmappable spans are counted by reason (`/metrics`, the summary), never dead-lettered one by one.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import zlib
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiokafka import (
    AIOKafkaConsumer,
    AIOKafkaProducer,
    ConsumerRebalanceListener,
    ConsumerRecord,
    TopicPartition,
)
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from aiokafka.partitioner import DefaultPartitioner
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from daemon import prometheus_metrics
from daemon.settings import Settings
from handlers.otel_mapping import Mapped, OtelOptions, SpanCounts, payload_records
from handlers.otlp import BadPayload, Encoding
from handlers.trace_mapping import listed
from schemas.events import RatingEvent, TraceEvent

log = logging.getLogger("gepa_stream.otel_bridge")
DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024
_CONTENT_TYPES: dict[str, Encoding] = {
    "application/x-protobuf": "otlp_proto",
    "application/json": "otlp_json",
}
_RESPONSE_TYPES = {"otlp_proto": "application/x-protobuf", "otlp_json": "application/json"}
_GROUP_SUFFIX = "-otel-bridge"
_BATCH_BYTES = 512 * 1024
"""Record batches of up to 512 KiB, as the daemon's own producer (aiokafka's default, 16 KiB, is
30-odd trace events): the producer keeps one request in flight per broker, so a fetch's events
cost one round trip per batch. A batch takes any first record, so an event of `max_event_bytes`
still goes out alone."""
_NOT_REJECTED = {"not_llm", "no_prompt", "unmanaged_prompt"}
"""Spans that are simply not ours (filtered like a Collector's filter processor), not rejected."""


class BodyTooLarge(Exception):
    """A request body over the size limit, compressed or not."""


@dataclass(frozen=True)
class BridgeOptions:
    """What the bridge reads: the Kafka topic and encoding (topic None: HTTP only), the HTTP port
    (None: Kafka only) and the largest OTLP/HTTP body it accepts, before and after gzip."""

    topic: str | None = "otlp_spans"
    encoding: Encoding = "otlp_proto"
    http_port: int | None = None
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES


def record_metrics(counts: SpanCounts, source: str) -> None:
    """Add one batch's counts to the `gepa_stream_otel_*` series."""
    prometheus_metrics.OTEL_SPANS.labels(outcome="mapped").inc(counts.mapped)
    for reason, n in counts.unmapped.items():
        prometheus_metrics.OTEL_SPANS.labels(outcome="unmapped").inc(n)
        prometheus_metrics.OTEL_UNMAPPED.labels(kind="span", reason=reason).inc(n)
    for reason, n in counts.feedback_unmapped.items():
        prometheus_metrics.OTEL_UNMAPPED.labels(kind="feedback", reason=reason).inc(n)
    for event_type, n in counts.published.items():
        prometheus_metrics.OTEL_PUBLISHED.labels(type=event_type).inc(n)
    for reason, n in counts.bad_payloads.items():
        prometheus_metrics.OTEL_BAD_PAYLOADS.labels(source=source, reason=reason).inc(n)


def gunzip(body: bytes, limit: int) -> bytes:
    """A gzip body inflated to at most `limit` bytes (BodyTooLarge past it, BadPayload if not gzip)."""
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        data = inflater.decompress(body, limit + 1)
    except zlib.error:
        raise BadPayload("bad_gzip") from None
    if len(data) > limit:
        raise BodyTooLarge
    if not inflater.eof:
        raise BadPayload("bad_gzip")
    return data


class OtelBridge:
    """The Kafka loop and the OTLP/HTTP receiver, sharing one producer and one set of counts."""

    def __init__(self, settings: Settings, options: OtelOptions, bridge: BridgeOptions) -> None:
        self.settings = settings
        self.options = options
        self.bridge = bridge
        self.counts = SpanCounts()
        self._topics = {TraceEvent.TYPE: settings.topics.traces, RatingEvent.TYPE: settings.topics.ratings}
        self._producer: AIOKafkaProducer | None = None
        self._partitions: dict[str, list[int]] = {}
        self._settling: asyncio.Future[None] | None = None
        self.http_port: int | None = None

    def _client_options(self) -> dict[str, Any]:
        return {
            "bootstrap_servers": self.settings.bootstrap_servers.split(","),
            **self.settings.aiokafka_options(),
        }

    def _account(self, counts: SpanCounts, source: str) -> None:
        self.counts.add(counts)
        record_metrics(counts, source)

    async def publish(self, records: list[Mapped]) -> None:
        """Produce every event keyed by prompt and wait until the broker has acknowledged all of
        them (see `_Outbox`)."""
        outbox = self._outbox()
        await outbox.add(records)
        await outbox.flush()

    def _outbox(self) -> _Outbox:
        assert self._producer is not None
        return _Outbox(self._producer, self._topics, self._partitions, self._partitions_of)

    async def _partitions_of(self, topic: str) -> list[int]:
        assert self._producer is not None
        self._partitions[topic] = sorted(await self._producer.partitions_for(topic))
        return self._partitions[topic]

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until `stop` is set: the consumer loop (if a topic is given) and the HTTP receiver (if a port is)."""
        self._producer = AIOKafkaProducer(
            acks="all", linger_ms=5, max_batch_size=_BATCH_BYTES, **self._client_options()
        )
        await self._producer.start()
        runner = None
        try:
            runner = await self._start_http() if self.bridge.http_port is not None else None
            if self.bridge.topic is not None:
                await self._consume(self.bridge.topic, stop)
            else:
                await stop.wait()
        finally:
            if runner is not None:
                await runner.cleanup()
            await self._producer.stop()

    # -- Kafka ---------------------------------------------------------------------------------

    async def _consume(self, topic: str, stop: asyncio.Event) -> None:
        """Per fetch (every partition it returned): map, publish, await the acks, then commit; a
        fetch is settled (acks, commit) while the next one is mapped, and before partitions move."""
        consumer = AIOKafkaConsumer(
            group_id=f"{self.settings.app_id}{_GROUP_SUFFIX}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=int(self.settings.session_timeout_s * 1000),
            heartbeat_interval_ms=int(self.settings.heartbeat_interval_s * 1000),
            rebalance_timeout_ms=int(self.settings.rebalance_timeout_s * 1000),
            **self._client_options(),
        )
        consumer.subscribe([topic], listener=_SettleBeforeRevoke(self.settled))
        await consumer.start()
        try:
            while not stop.is_set():
                fetched = await consumer.getmany(timeout_ms=500, max_records=1000)
                if fetched:
                    await self._handle_fetch(consumer, fetched)
            await self.settled()
        finally:
            await consumer.stop()

    async def _handle_fetch(
        self, consumer: AIOKafkaConsumer, fetched: dict[TopicPartition, list[ConsumerRecord[Any, Any]]]
    ) -> None:
        """The fetch's events sent, then settled in the background once the previous fetch is: its
        acks awaited, then each partition's offset committed past it (a crash before the commit
        replays the fetch, which maps to the same event ids). Payload by payload, the events go into
        the outbox, which sends each record batch as it fills, and the loop is let run (the
        producer's sender writes the batch, the consumer's fetcher fetches ahead) while the next
        payload is mapped."""
        counts = SpanCounts()
        outbox = self._outbox()
        for records in fetched.values():
            for record in records:
                events, _ = payload_records([record.value or b""], self.bridge.encoding, self.options, counts)
                await outbox.add(events)
                await asyncio.sleep(0)
        acks = await outbox.send()
        offsets = {tp: records[-1].offset + 1 for tp, records in fetched.items()}
        await self.settled()
        self._settling = asyncio.ensure_future(self._settle(consumer, acks, offsets, counts))

    async def settled(self) -> None:
        """Wait until the fetch in flight is settled (acks, commit); raises what its produce raised."""
        settling, self._settling = self._settling, None
        if settling is not None:
            await settling

    async def _settle(
        self,
        consumer: AIOKafkaConsumer,
        acks: list[Any],
        offsets: dict[TopicPartition, int],
        counts: SpanCounts,
    ) -> None:
        await asyncio.gather(*acks)
        try:
            await consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError) as error:  # the group moved a partition meanwhile
            log.warning(
                "commit refused after a rebalance (%s): the new owner re-reads, to the same ids", error
            )
        self._account(counts, "kafka")

    # -- OTLP/HTTP -----------------------------------------------------------------------------

    async def _start_http(self) -> web.AppRunner:
        app = web.Application()
        app.router.add_post("/v1/traces", self.export)
        app.router.add_get("/metrics", _metrics)
        app.router.add_get("/healthz", _healthz)
        runner = web.AppRunner(app, access_log=None, auto_decompress=False)  # gunzip() bounds inflation
        await runner.setup()
        site = web.TCPSite(runner, self.settings.web_host, self.bridge.http_port)
        await site.start()
        server = getattr(site, "_server", None)
        sockets = getattr(server, "sockets", None) or []
        self.http_port = sockets[0].getsockname()[1] if sockets else self.bridge.http_port
        return runner

    def _authorized(self, request: web.Request) -> bool:
        token = self.settings.ingest_token
        if token is None:
            return True
        given = request.headers.get("Authorization", "")
        return hmac.compare_digest(given.encode(), f"Bearer {token.get_secret_value()}".encode())

    async def _body(self, request: web.Request) -> bytes:
        """The request body, inflated if gzip, each within the size limit."""
        limit = self.bridge.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            raise BodyTooLarge
        body = bytearray()
        while chunk := await request.content.read(65536):
            body += chunk
            if len(body) > limit:
                raise BodyTooLarge
        encoding = request.headers.get("Content-Encoding", "identity").lower()
        if encoding == "gzip":
            return gunzip(bytes(body), limit)
        if encoding != "identity":
            raise BadPayload("bad_content_encoding")
        return bytes(body)

    async def export(self, request: web.Request) -> web.Response:
        """`POST /v1/traces` per the OTLP/HTTP spec: 200 with partial success, 400 on a bad body,
        401 without the ingest token, 413 over the size limit, 415 on another content type,
        503 (retryable) when the broker does not acknowledge."""
        encoding = _CONTENT_TYPES.get(request.content_type)
        if encoding is None:
            return web.Response(status=415, text=f"unsupported content type {request.content_type!r}")
        if not self._authorized(request):
            log.warning("OTLP export refused from %s: missing or wrong ingest token", request.remote)
            return _status(401, "missing or wrong bearer token", encoding)
        counts = SpanCounts()
        try:
            body = await self._body(request)
            events, counts = payload_records([body], encoding, self.options)
            if counts.bad_payloads:
                return _status(
                    400, f"undecodable OTLP {encoding}: {next(iter(counts.bad_payloads))}", encoding
                )
            await self.publish(events)
        except BodyTooLarge:
            counts.bad_payloads["too_large"] += 1
            return _status(413, f"body over {self.bridge.max_body_bytes} bytes", encoding)
        except BadPayload as reason:
            counts.bad_payloads[str(reason)] += 1
            return _status(400, str(reason), encoding)
        except KafkaError as error:
            log.warning("OTLP export not acknowledged by Kafka: %s", error)
            return _status(503, f"Kafka did not acknowledge: {error}", encoding)
        finally:
            self._account(counts, "http")
        rejected = Counter(
            {reason: n for reason, n in counts.unmapped.items() if reason not in _NOT_REJECTED}
        )
        response = ExportTraceServiceResponse()
        if rejected:
            response.partial_success.rejected_spans = rejected.total()
            response.partial_success.error_message = f"unmapped LLM spans: {listed(rejected)}"
        return _message(200, response, encoding)


class _Outbox:
    """Record batches per (topic, partition), filled in the events' order; a batch goes out as soon
    as it is full, `flush` sends the rest and waits until the broker has acknowledged every one.
    Partitioned as every Kafka client's default is (murmur2 of the key, the prompt: one
    computation per key, not per event); the producer keeps one batch per partition in flight, so
    a partition's events stay in order."""

    def __init__(
        self,
        producer: AIOKafkaProducer,
        topics: dict[str, str],
        known: dict[str, list[int]],
        partitions_of: Callable[[str], Awaitable[list[int]]],
    ) -> None:
        self._producer = producer
        self._topics = topics
        self._known = known
        self._partitions_of = partitions_of
        self._open: dict[tuple[str, int], Any] = {}
        self._partition: dict[tuple[str, bytes], int] = {}
        self._acks: list[Any] = []

    async def _partition_for(self, topic: str, key: bytes | None) -> int:
        partitions = self._known.get(topic) or await self._partitions_of(topic)
        if key is None:  # random, as the default partitioner does
            return int(DefaultPartitioner()(key, partitions, partitions))
        partition = self._partition[(topic, key)] = DefaultPartitioner()(key, partitions, partitions)
        return int(partition)

    async def add(self, records: list[Mapped]) -> None:
        """Append each event to its partition's batch, sending the batch when it is full."""
        producer = self._producer
        for event_type, key, value in records:
            topic = self._topics[event_type]
            partition = self._partition.get((topic, key)) if key is not None else None
            if partition is None:
                partition = await self._partition_for(topic, key)
            builder = self._open.get((topic, partition))
            if builder is None or builder.append(key=key, value=value, timestamp=None) is None:
                if builder is not None:
                    self._acks.append(await producer.send_batch(builder, topic, partition=partition))
                builder = self._open[(topic, partition)] = producer.create_batch()
                builder.append(key=key, value=value, timestamp=None)  # a new batch takes any first record

    async def send(self) -> list[Any]:
        """Send the batches still open; the acknowledgements of every batch sent (one future each)."""
        for (topic, partition), builder in self._open.items():
            builder.close()  # complete: sent without lingering (`linger_ms` waits for more records)
            self._acks.append(await self._producer.send_batch(builder, topic, partition=partition))
        self._open.clear()
        acks, self._acks = self._acks, []
        return acks

    async def flush(self) -> None:
        """Send the batches still open and wait for every acknowledgement."""
        await asyncio.gather(*await self.send())


class _SettleBeforeRevoke(ConsumerRebalanceListener):
    """Before the group takes partitions away, the fetch in flight is settled (its offsets
    committed by their owner)."""

    def __init__(self, settled: Callable[[], Awaitable[None]]) -> None:
        self._settled = settled

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self._settled()

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        pass


def _message(status: int, message: Any, encoding: Encoding) -> web.Response:
    body = (
        message.SerializeToString()
        if encoding == "otlp_proto"
        else json_format.MessageToJson(message, indent=None).encode()
    )
    return web.Response(status=status, body=body, content_type=_RESPONSE_TYPES[encoding])


_RPC_CODES = {
    400: 3,
    401: 16,
    413: 8,
    503: 14,
}  # INVALID_ARGUMENT, UNAUTHENTICATED, RESOURCE_EXHAUSTED, UNAVAILABLE


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        out.append(low | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _status(status: int, text: str, encoding: Encoding) -> web.Response:
    """An error answer as the spec asks: a `google.rpc.Status` (code, message) in the request's
    encoding (written by hand: its message class is not a dependency of opentelemetry-proto)."""
    code, message = _RPC_CODES.get(status, 2), text.encode()
    body = (
        b"\x08" + _varint(code) + b"\x12" + _varint(len(message)) + message
        if encoding == "otlp_proto"
        else json.dumps({"code": code, "message": text}).encode()
    )
    return web.Response(status=status, body=body, content_type=_RESPONSE_TYPES[encoding])


async def _metrics(request: web.Request) -> web.Response:
    return web.Response(body=generate_latest(), content_type=CONTENT_TYPE_LATEST.split(";")[0])


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})
