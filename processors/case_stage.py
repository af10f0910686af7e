"""The merge stage's Kafka edge: decisions in, case links out to ``dispatch.cases``.

A plain consumer of its own group over ``dispatch.orders`` and ``dispatch.review``
(co-partitioned by district, assigned with the range assignor so partition p of both
topics lands on one consumer, with the state of the districts keyed there). Per batch:
links computed by the pure ``CaseLinker``, published, delivery confirmed, then exactly
the batch's offsets committed, so a crash repeats the uncommitted tail and the links it
gives again replace the stored ones (one row per report).

State is rebuilt, not restored. On every assignment the stage reads back, for each
partition, the decisions of the ``lookback`` before its committed offset (the longest a
case can stay open), feeds them to the linker without publishing, and goes on from the
committed offset. There is no changelog to write on every decision and no recovery
protocol to hang (faust-streaming's table recovery stalled in our tests after a restart:
issues #74, #176 upstream); the price is reading back up to two days of decisions on a
rebalance, which is seconds at a city's volume.

Messages of one batch (and of a rebuild) are linked in broker-timestamp order across the
two topics, so a rebuild sees them in the order the live stage did, up to reports that
arrived in the same millisecond on the two topics.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from processors.cases import CaseLinker
from processors.merge import MergePolicy
from schemas.errors import RecordError
from schemas.records import CaseLink, DispatchDecision, parse_record
from streams.codecs import decode_json

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DecisionMessage:
    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    value: bytes | None


# Called with the batch's decisions (each with its message) and their links.
Linked = Callable[
    [list[tuple[DecisionMessage, DispatchDecision]], list[CaseLink]], Awaitable[None]
]


def link_order(messages: Iterable[DecisionMessage]) -> list[DecisionMessage]:
    """The order the linker sees messages in, live and in a rebuild alike."""
    return sorted(messages, key=lambda m: (m.timestamp_ms, m.topic, m.partition, m.offset))


def read_decision(msg: DecisionMessage) -> DispatchDecision | None:
    """The decision, or None when the message is not one. The decision store dead-letters
    such a message from the same topic (with its reason): here it has no case."""
    try:
        record = parse_record(decode_json(msg.value, 10 * 1024 * 1024))
    except RecordError as err:
        log.warning("case stage skips %s[%d]@%d: %s", msg.topic, msg.partition, msg.offset,
                    err.reason)
        return None
    return record if isinstance(record, DispatchDecision) else None


def group_consumer(
    group: str, session_timeout_s: float, options: dict[str, Any], *topics: str, **extra: Any
) -> Any:
    """A consumer in ``group`` the way every stage of ours runs one: offsets committed by
    the stage after its outputs are durable, from the earliest offset for a new group,
    heartbeats at a tenth of the session timeout."""
    from aiokafka import AIOKafkaConsumer

    return AIOKafkaConsumer(
        *topics,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=int(session_timeout_s * 1000),
        heartbeat_interval_ms=int(session_timeout_s * 100),
        **extra,
        **options,
    )


async def commit_fetched(consumer: Any, fetched: dict[Any, list[Any]], what: str) -> None:
    """Commit exactly what ``getmany`` gave. A rebalance meanwhile fails the commit: the
    partitions' new owner takes those messages again, and the tables absorb the repeat."""
    from aiokafka.errors import CommitFailedError

    try:
        await consumer.commit({tp: batch[-1].offset + 1 for tp, batch in fetched.items() if batch})
    except CommitFailedError as exc:
        log.warning("%s offsets not committed (rebalance): %s", what, exc)


def _log_link_error(decision: DispatchDecision, exc: Exception) -> None:
    log.error("case stage: %s left unmerged after a merge error: %r", decision.input_id, exc,
              exc_info=exc)


def lookback(policy: MergePolicy) -> timedelta:
    """How far back a rebuild reads: no case stays open longer than its class's span plus
    the grace period (and no report joins a case later than its window)."""
    longest = max((c.max_span for c in policy.classes), default=timedelta(0))
    return max(longest, policy.unclassified.max_span) + policy.grace


def read_decisions(
    messages: Sequence[DecisionMessage],
) -> list[tuple[DecisionMessage, DispatchDecision]]:
    """The messages' decisions, in link order, each with its message."""
    pairs = ((m, read_decision(m)) for m in link_order(messages))
    return [(m, d) for m, d in pairs if d is not None]


def link_messages(
    linker: CaseLinker, messages: Sequence[DecisionMessage], now: datetime
) -> list[CaseLink]:
    return linker.link_all((d for _, d in read_decisions(messages)), now)


async def read_range(reader: Any, ranges: dict[Any, tuple[int, int]]) -> list[DecisionMessage]:
    """The messages at offsets [start, end) of each partition, by a group-less consumer."""
    wanted = {tp: r for tp, r in ranges.items() if r[0] < r[1]}
    if not wanted:
        return []
    reader.assign(list(wanted))
    for tp, (start, _) in wanted.items():
        reader.seek(tp, start)
    out: list[DecisionMessage] = []
    pending = set(wanted)
    while pending:
        fetched = await reader.getmany(*pending, timeout_ms=1000, max_records=5000)
        for tp, batch in fetched.items():
            end = wanted[tp][1]
            out.extend(
                DecisionMessage(m.topic, m.partition, m.offset, m.timestamp, m.value)
                for m in batch
                if m.offset < end
            )
        for tp in list(pending):
            if await reader.position(tp) >= wanted[tp][1]:
                pending.discard(tp)
    return out


async def offsets_for_times(reader: Any, since: dict[Any, int]) -> dict[Any, int]:
    found = await reader.offsets_for_times(since)
    ends = await reader.end_offsets(list(since))
    # No message at or after the time: nothing of the window is left before the end.
    return {tp: (found[tp].offset if found.get(tp) is not None else ends[tp]) for tp in since}


@dataclass
class Rebuilt:
    """What a rebuild fed the linker: per (topic, partition), the offsets below this one."""

    floors: dict[tuple[str, int], int]
    decisions: int

    def fresh(self, messages: Iterable[DecisionMessage]) -> list[DecisionMessage]:
        """The messages the rebuild did not already feed (fetched before it finished)."""
        return [m for m in messages if m.offset >= self.floors.get((m.topic, m.partition), 0)]


async def _inline(fn: Callable[..., Any], *args: Any) -> Any:
    return fn(*args)


async def _no_pause() -> None:
    return None


# Decisions linked per step of a rebuild, between which dispatch may take the CPU.
REBUILD_CHUNK = 500


async def rebuild(
    consumer: Any, options: dict[str, Any], assigned: Iterable[Any], linker: CaseLinker,
    window: timedelta, run: Callable[..., Awaitable[Any]] = _inline,
    pause: Callable[[], Awaitable[None]] = _no_pause,
) -> Rebuilt:
    """Give the linker back the open cases of the assigned partitions (``run`` calls the
    linker: on the stage's thread in the worker)."""
    await run(linker.forget)
    committed: dict[Any, int] = {}
    for tp in assigned:
        offset = await consumer.committed(tp)
        if offset:
            committed[tp] = offset
    floors = {(tp.topic, tp.partition): c for tp, c in committed.items()}
    if not committed:
        return Rebuilt(floors, 0)
    from aiokafka import AIOKafkaConsumer

    # One group-less reader for the three reads.
    reader = AIOKafkaConsumer(enable_auto_commit=False, group_id=None, **options)
    await reader.start()
    try:
        # The broker time of each partition's last linked decision; the rebuild reads the
        # window before it (a stage that was down for a day still finds the open cases).
        last = await read_range(reader, {tp: (c - 1, c) for tp, c in committed.items()})
        times = {(m.topic, m.partition): m.timestamp_ms for m in last}
        window_ms = int(window.total_seconds() * 1000)
        since = {
            tp: max(times.get((tp.topic, tp.partition), 0) - window_ms, 0) for tp in committed
        }
        offsets = await offsets_for_times(reader, since)
        ranges = {tp: (offsets.get(tp, c), c) for tp, c in committed.items()}
        messages = link_order(await read_range(reader, ranges))
    finally:
        await reader.stop()
    now = datetime.now(UTC)
    for start in range(0, len(messages), REBUILD_CHUNK):
        await pause()  # a rebuild may take seconds of CPU: dispatch goes first
        await run(link_messages, linker, messages[start : start + REBUILD_CHUNK], now)
    return Rebuilt(floors, len(messages))


async def run_case_stage(
    topics: Sequence[str],
    group: str,
    options: dict[str, Any],
    linker: CaseLinker,
    publish: Callable[[list[CaseLink]], Awaitable[None]],
    *,
    batch_size: int,
    flush_interval_s: float,
    session_timeout_s: float,
    on_batch: Callable[[list[CaseLink]], None] | None = None,
    on_rebuild: Callable[[int], None] | None = None,
    on_linked: Linked | None = None,
    executor: Executor | None = None,
    yield_to: Callable[[], bool] | None = None,
    max_defer_s: float = 10.0,
) -> None:
    """Consume decisions and publish their links until cancelled; a failure propagates
    (the worker crashes rather than idle with offsets behind). ``on_linked`` runs before
    the links are published (the worker stores the cases' embeddings there), so its work
    is durable before the offsets are committed too. ``executor``: where the linker runs
    (one thread: merging is CPU work that must not hold the event loop, and the linker is
    not thread-safe); None runs it inline. ``yield_to``: while it says True (dispatch is
    behind), a fetched batch waits, up to ``max_defer_s``: links may lag seconds,
    decisions should not (both share the worker's CPU)."""

    async def defer() -> None:
        deferred = 0.0
        while yield_to is not None and yield_to() and deferred < max_defer_s:
            await asyncio.sleep(0.05)
            deferred += 0.05

    async def run(fn: Callable[..., Any], *args: Any) -> Any:
        if executor is None:
            return fn(*args)
        return await asyncio.get_running_loop().run_in_executor(executor, fn, *args)

    from aiokafka import ConsumerRebalanceListener
    from aiokafka.coordinator.assignors.range import RangePartitionAssignor

    window = lookback(linker.index.policy)
    consumer = group_consumer(group, session_timeout_s, options,
                              partition_assignment_strategy=(RangePartitionAssignor,))

    # aiokafka fetches for a new assignment while the listener still runs: the loop waits
    # for the rebuild before linking, and skips what the rebuild already fed the linker.
    ready = asyncio.Event()
    rebuilt = Rebuilt({}, 0)

    class Rebuild(ConsumerRebalanceListener):  # type: ignore[misc]
        async def on_partitions_revoked(self, revoked: Any) -> None:
            ready.clear()
            await run(linker.forget)

        async def on_partitions_assigned(self, assigned: Any) -> None:
            nonlocal rebuilt
            ready.clear()
            started = asyncio.get_running_loop().time()
            rebuilt = await rebuild(consumer, options, assigned, linker, window, run, defer)
            ready.set()
            if on_rebuild is not None:
                on_rebuild(rebuilt.decisions)
            log.info("case stage: %d partitions, %d decisions read back, %d keys, %.2f s",
                     len(assigned), rebuilt.decisions, len(linker.values),
                     asyncio.get_running_loop().time() - started)

    consumer.subscribe(list(topics), listener=Rebuild())
    await consumer.start()
    try:
        while True:
            fetched = await consumer.getmany(
                timeout_ms=int(flush_interval_s * 1000), max_records=batch_size
            )
            messages = [
                DecisionMessage(m.topic, m.partition, m.offset, m.timestamp, m.value)
                for batch in fetched.values()
                for m in batch
            ]
            if not messages:
                continue
            await defer()
            await ready.wait()
            decisions = await run(read_decisions, rebuilt.fresh(messages))
            links = await run(
                linker.link_all, [d for _, d in decisions], datetime.now(UTC), _log_link_error
            )
            if on_linked is not None:
                await on_linked(decisions, links)
            await publish(links)
            if on_batch is not None:
                on_batch(links)
            # Rebalanced meanwhile: the new owner links these again, to the same cases.
            await commit_fetched(consumer, fetched, "case link")
    finally:
        await consumer.stop()
