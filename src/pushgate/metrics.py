"""``GET /metrics``: a node's counts in the Prometheus text format.

The counts live in :class:`~pushgate.meters.Meters` (plain integers bumped where
the work happens); :class:`NodeCollector` reads them only when Prometheus scrapes,
so metrics cost the fan-out nothing per delivery. Each server has private
registries (a test may run several in one process): one for this collector, read
on the event loop, and one for ``prometheus_client``'s process collector (RSS, CPU,
open files), read on a thread: counting open files lists ``/proc/self/fd``, 14-37 ms
at 19,000 connections, which on the loop would stop every client at each scrape.

:class:`LoopWatch` measures what every client feels as latency spikes: how late the
event loop wakes a task that asked to sleep (loop lag), and how long each garbage
collection stops the loop (``gc.callbacks``).

docs/operations.md lists every metric; docs/grafana/pushgate.json graphs them.
"""

import asyncio
import contextlib
import gc
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import generate_latest

from pushgate import __version__, speedups
from pushgate.meters import Histogram, Meters
from pushgate.webhooks.stats import REASONS, WebhookStats

if TYPE_CHECKING:
    from pushgate.node import Node

CONTENT_TYPE = CONTENT_TYPE_LATEST
LAG_PROBE_EVERY = 0.25  # seconds between loop-lag probes


class FrozenCount:
    """``gc.get_freeze_count()``, recounted less often once it is large.

    Counting walks every frozen object, and they lie all over memory: about 20 ms for
    the 600,000 of 19,900 connections, a stop of the loop at every scrape. Under
    ``CHEAP`` objects it is recounted at every scrape (a few ms at most), above it at
    most every ``MAX_AGE`` seconds.
    """

    CHEAP = 100_000
    MAX_AGE = 60.0

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._count = 0
        self._counted_at = -self.MAX_AGE

    def count(self) -> int:
        now = self._clock()
        if self._count < self.CHEAP or now - self._counted_at >= self.MAX_AGE:
            self._count, self._counted_at = gc.get_freeze_count(), now
        return self._count


class NodeCollector:
    """Every ``pushgate_*`` metric of one node, read from it at scrape time."""

    def __init__(self, node: "Node") -> None:
        self.node = node
        self._frozen = FrozenCount()

    def describe(self) -> Iterable[Metric]:
        return []  # unchecked: the names are fixed, and reading them costs little

    def collect(self) -> Iterator[Metric]:
        node, meters = self.node, self.node.meters
        hub = node.hub
        info = GaugeMetricFamily(
            "pushgate_info",
            "this node: its version, id, and fan-out path (compiled or python)",
            labels=["version", "node", "fanout"],
        )
        info.add_metric([__version__, node.node_id, speedups.label()], 1)
        yield info
        yield GaugeMetricFamily("pushgate_connections", "open connections here", len(hub))
        by_transport = GaugeMetricFamily(
            "pushgate_connections_by_transport",
            "open connections here, by transport (websocket, sse) and wire protocol",
            labels=["transport", "protocol"],
        )
        for encoding, count in sorted(hub.encodings().items(), key=lambda e: e[0].name):
            by_transport.add_metric([encoding.transport, encoding.protocol], count)
        yield by_transport
        delivered = CounterMetricFamily(
            "pushgate_deliveries_by_transport",
            "pushes handed to local connections, by transport and wire protocol",
            labels=["transport", "protocol"],
        )
        for encoding, count in sorted(hub.delivered.items(), key=lambda e: e[0].name):
            delivered.add_metric([encoding.transport, encoding.protocol], count)
        yield delivered
        yield GaugeMetricFamily(
            "pushgate_rooms", "rooms with at least one member here", hub.room_count()
        )
        yield GaugeMetricFamily(
            "pushgate_users", "users with at least one connection here", sum(1 for _ in hub.users())
        )
        sessions = node.sessions
        count_all = getattr(sessions, "__len__", None)  # the in-memory store can
        yield GaugeMetricFamily(
            "pushgate_sessions",
            "resumable sessions: all of them in one process; held by this node in a cluster",
            count_all() if callable(count_all) else node.held_sessions(),
        )
        detached = getattr(sessions, "detached", None)
        if callable(detached):
            yield GaugeMetricFamily(
                "pushgate_sessions_detached",
                "sessions waiting for a resume (one process only)",
                detached(),
            )
        yield _labelled(
            "pushgate_pushes",
            "pushes accepted by this node's API, by target",
            "kind",
            meters.pushes,
        )
        yield CounterMetricFamily(
            "pushgate_deliveries", "pushes handed to local connections", meters.deliveries
        )
        yield CounterMetricFamily(
            "pushgate_frames_written",
            "frames written to sockets (pushes, welcomes, control frames) and handshake answers",
            meters.frames_written,
        )
        yield CounterMetricFamily(
            "pushgate_bytes_written", "bytes of frames written to sockets", meters.bytes_written
        )
        yield CounterMetricFamily(
            "pushgate_writes",
            "socket writes; frames_written / writes is how many frames a write carries",
            meters.writes,
        )
        yield _labelled(
            "pushgate_closes",
            "connections closed, by close code (1006: none was exchanged)",
            "code",
            meters.closes,
        )
        yield _labelled(
            "pushgate_handshakes_refused",
            "WebSocket handshakes refused, by reason",
            "reason",
            meters.refused,
        )
        yield _labelled(
            "pushgate_limits_tripped",
            "limits that refused or closed something, by the option that sets them",
            "limit",
            meters.limits,
        )
        yield GaugeMetricFamily(
            "pushgate_broker_ready", "1 when the broker is connected and subscribed", node.ready
        )
        yield CounterMetricFamily(
            "pushgate_broker_reconnects",
            "times the broker's subscriptions were rebuilt after an outage",
            getattr(node.broker, "reconnects", 0),
        )
        yield _histogram(
            "pushgate_publish_duration_seconds",
            "time to publish one accepted push (in one process, fan-out included)",
            meters.publish_seconds,
        )
        yield CounterMetricFamily(
            "pushgate_gaps_filled", "stream gaps filled from history", node.gaps_filled
        )
        yield CounterMetricFamily(
            "pushgate_gaps_lost",
            "stream gaps history could not fill (clients were told)",
            node.gaps_lost,
        )
        yield _labelled(
            "pushgate_resumes",
            "session resumes, by result: recovered, not_recovered, failed",
            "result",
            meters.resumes,
        )
        yield _labelled(
            "pushgate_resume_histories",
            "streams of resumes caught up, by source: node (what it fanned out "
            "itself, no read), broker (a history read)",
            "source",
            meters.resume_histories,
        )
        yield _labelled(
            "pushgate_connect_hook_calls",
            "connect hook calls, by outcome: allow, deny, failure",
            "outcome",
            meters.hook_calls,
        )
        yield _labelled(
            "pushgate_connect_hook_failures",
            "connect hook calls that failed, by cause: timeout, unreachable, status, "
            "too_large, malformed",
            "cause",
            meters.hook_failures,
        )
        yield _histogram(
            "pushgate_connect_hook_duration_seconds",
            "how long the connect hook took to answer (or to fail)",
            meters.hook_seconds,
        )
        yield _histogram(
            "pushgate_delivery_latency_seconds",
            "from the API accepting a push to the write of its frame to each socket",
            meters.delivery_latency,
        )
        yield _histogram(
            "pushgate_event_loop_lag_seconds",
            "how late the event loop ran a task due to run (probed 4 times a second)",
            meters.loop_lag,
        )
        yield GaugeMetricFamily(
            "pushgate_gc_frozen_objects",
            "objects frozen out of garbage collection (pushgate.gcpolicy); should follow "
            "the connections held, not only grow (counted at most once a minute when "
            "over 100,000)",
            self._frozen.count(),
        )
        yield _histogram(
            "pushgate_gc_pause_seconds",
            "garbage collections, each stopping the event loop this long",
            meters.gc_pauses,
        )


def _labelled(name: str, help_text: str, label: str, counts: dict[Any, int]) -> Metric:
    family = CounterMetricFamily(name, help_text, labels=[label])
    for value, count in sorted(counts.items()):
        family.add_metric([str(value)], count)
    return family


def _histogram(name: str, help_text: str, histogram: Histogram) -> Metric:
    family = HistogramMetricFamily(name, help_text, labels=[])
    family.add_metric([], histogram.cumulative(), histogram.total)
    return family


class WebhookCollector:
    """The ``pushgate_webhook_*`` metrics of one node's webhooks (register it in the
    node's registry when the node has webhooks)."""

    def __init__(self, stats: WebhookStats) -> None:
        self.stats = stats

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        stats = self.stats
        yield CounterMetricFamily(
            "pushgate_webhook_events_queued", "webhook events this node queued", stats.queued
        )
        yield CounterMetricFamily(
            "pushgate_webhook_events_sent",
            "webhook events a receiver answered 2xx for (counted once per receiver)",
            stats.sent,
        )
        yield CounterMetricFamily(
            "pushgate_webhook_events_retried",
            "webhook events in a POST that failed (no answer, or not 2xx), tried again",
            stats.retried,
        )
        failed = CounterMetricFamily(
            "pushgate_webhook_events_failed",
            "webhook events given up, by reason: gave_up (past the retry window), trimmed "
            "(dropped from the queue unsent), dropped (emit buffer full), unqueued (at close)",
            labels=["reason"],
        )
        for reason in REASONS:
            failed.add_metric([reason], stats.failed[reason])
        yield failed
        yield GaugeMetricFamily(
            "pushgate_webhook_events_buffered",
            "webhook events emitted here and waiting to be queued",
            stats.buffered,
        )
        yield _histogram(
            "pushgate_webhook_post_duration_seconds",
            "time a webhook receiver took to answer a POST",
            stats.post_seconds,
        )


@dataclass(frozen=True)
class Registries:
    """A node's metrics (read on the loop) and its process's (read on a thread)."""

    node: CollectorRegistry
    process: CollectorRegistry


def new_registries(node: "Node") -> Registries:
    """The registries of this node's metrics and the process's."""
    own = CollectorRegistry(auto_describe=False)
    own.register(NodeCollector(node))
    process = CollectorRegistry(auto_describe=False)
    ProcessCollector(namespace="pushgate", registry=process)
    return Registries(own, process)


async def exposition(registries: Registries) -> bytes:
    """Both registries in the Prometheus text format."""
    process = asyncio.to_thread(generate_latest, registries.process)
    return generate_latest(registries.node) + await process


class LoopWatch:
    """Observes event-loop lag and garbage-collection pauses into ``meters``."""

    def __init__(self, meters: Meters) -> None:
        self.meters = meters
        self._task: asyncio.Task[None] | None = None
        self._gc_started = 0.0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._probe(), name="pushgate-lag")
        gc.callbacks.append(self._on_gc)

    async def stop(self) -> None:
        with contextlib.suppress(ValueError):
            gc.callbacks.remove(self._on_gc)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _probe(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + LAG_PROBE_EVERY
            await asyncio.sleep(LAG_PROBE_EVERY)
            self.meters.loop_lag.observe(max(0.0, loop.time() - due))

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
        elif self._gc_started:
            self.meters.gc_pauses.observe(time.perf_counter() - self._gc_started)
            self._gc_started = 0.0
