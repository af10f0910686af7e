"""The vision stage, Kafka edge: frames.raw in; each frame's detections and tracks to
vision.detections, the zone rules' hits as camera city events to city.events (the
dispatch path's own input), bad frames to the dead-letter topic. ``citystream vision``
runs it in its own process: the detector takes a CPU core or a GPU, which the worker's
dispatch must not wait behind.

One consumer group (``<group>.vision``). A batch of frames, across cameras, goes to the
detector in one call; then, per frame in offset order, the camera's tracker and rules
(``processors.zone_rules.step_camera``); the outputs are delivered before the offsets are
committed. A frame's ``frame_id`` is its camera and capture time, so a frame processed
twice (after a crash between delivery and commit) is one row downstream.

It reads frames.refs too: a reference's JPEG is fetched from its uri (``file://`` here).

Tracker state is rebuilt, not restored (as the case stage does): on assignment the stage
reads back the last ``vision_rebuild_s`` of vision.detections on the same partition
numbers (both topics are keyed by camera with as many partitions) and replays them
through the trackers without publishing; the frames it already published are then
skipped. No changelog to recover, nothing to hang on.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from processors.camera_config import CameraConfig
from processors.case_stage import (
    commit_fetched,
    group_consumer,
    offsets_for_times,
    read_range,
)
from processors.vision import (
    Frame,
    TextFinding,
    detected_frame,
    load_file_uri,
    read_frame,
    read_frame_ref,
    replayed,
    text_description,
    text_event_ids,
    tracker_input,
)
from processors.zone_rules import camera_event, step_camera, to_city_event
from schemas.errors import DeadLetter, ErrorKind, RecordError
from schemas.records import DetectedFrame, parse_record
from streams.codecs import decode_json, encode_json
from streams.topics import (
    CITY_EVENTS,
    DEAD_LETTERS,
    FRAMES_RAW,
    VIDEO_FRAMES,
    VISION_DETECTIONS,
    message_key,
)

log = logging.getLogger(__name__)
PROCESSOR = "vision"


@dataclass
class CameraStates:
    """Each camera's tracker and rule state (``step_camera``'s value), and the frames a
    rebuild found already published."""

    values: dict[str, Mapping[str, Any]] = field(default_factory=dict)
    published: set[str] = field(default_factory=set)
    # OCR: when each camera was last read (epoch ms), and the text events raised (their
    # ids name the cooldown period; after a restart a repeat has the same id).
    read_at: dict[str, int] = field(default_factory=dict)
    text_events: set[str] = field(default_factory=set)

    def forget(self) -> None:
        self.values.clear()
        self.published.clear()


@dataclass(frozen=True, slots=True)
class Outputs:
    """What one batch of frames produced, in order: (topic, key, value) to deliver."""

    messages: list[tuple[str, bytes | None, bytes]]
    frames: int
    dead: int
    events: int
    skipped: int


def rebuild_from(
    records: Sequence[DetectedFrame], cameras: Mapping[str, CameraConfig], states: CameraStates
) -> int:
    """Replay published frames through the trackers (no outputs); returns how many."""
    replayed_frames = 0
    for record in records:
        camera = cameras.get(record.camera_id)
        if camera is None:
            continue
        step = step_camera(states.values.get(record.camera_id), replayed(record), camera)
        states.values[record.camera_id] = step.value
        states.published.add(record.frame_id)
        replayed_frames += 1
    return replayed_frames


def _dead(msg: Any, err: RecordError, now: datetime) -> DeadLetter:
    return DeadLetter(msg.topic, msg.partition, msg.offset, err.kind, err.reason,
                      msg.value or b"", msg.key, now, PROCESSOR)


def process_batch(
    messages: Sequence[Any],
    detect: Callable[[list[Any]], list[list[Any]]],
    cameras: Mapping[str, CameraConfig],
    states: CameraStates,
    topic: Callable[[str], str],
    model: str,
    codes: Mapping[str, str],
    snapshot: Callable[[Frame, Sequence[Any]], str | None] | None = None,
    max_bytes: int = FRAMES_RAW.max_message_bytes,
    read_text: Callable[[Any], TextFinding] | None = None,
) -> Outputs:
    """One fetched batch: frames read, detected in one call, tracked and ruled in order."""
    now = datetime.now(UTC)
    out: list[tuple[str, bytes | None, bytes]] = []
    dead = skipped = events = 0
    frames: list[tuple[Any, Frame]] = []
    refs_topic = topic(VIDEO_FRAMES.name)
    for msg in messages:
        read = (read_frame_ref(msg.value, max_bytes, load_file_uri) if msg.topic == refs_topic
                else read_frame(msg.value, max_bytes))
        if isinstance(read, Frame) and read.header.camera_id not in cameras:
            read = RecordError(ErrorKind.INVALID_FIELD,
                               f"camera {read.header.camera_id!r} has no configuration")
        if isinstance(read, RecordError):
            letter = _dead(msg, read, now)
            log.warning("vision dead letter %s[%d]@%d %s: %s", msg.topic, msg.partition,
                        msg.offset, read.kind, read.reason)
            out.append((topic(DEAD_LETTERS.name), msg.topic.encode(),
                        encode_json(letter.to_wire())))
            dead += 1
        elif read.header.frame_id in states.published:
            skipped += 1  # published before a restart: its tracks are in the rebuilt state
        else:
            frames.append((msg, read))
    started = time.perf_counter()
    found_all = detect([f.image for _, f in frames]) if frames else []
    per_frame_ms = 1000 * (time.perf_counter() - started) / max(len(frames), 1)
    for (_, frame), found in zip(frames, found_all, strict=True):
        header = frame.header
        camera = cameras[header.camera_id]
        step = step_camera(states.values.get(header.camera_id), tracker_input(header, found),
                           camera)
        states.values[header.camera_id] = step.value
        if step.reset:
            log.warning("camera %s: tracking restarted: %s", header.camera_id, step.reset)
        uri = snapshot(frame, found) if snapshot is not None and step.events else None
        tracks = step.tracking.confirmed_assignments or (None,) * len(found)
        record = detected_frame(header, found, tracks, codes, model, datetime.now(UTC),
                                per_frame_ms, uri)
        out.append((topic(VISION_DETECTIONS.name), header.camera_id.encode(),
                    encode_json(record)))
        for event in step.events:
            wire = to_city_event(event, camera, uri)
            out.append((topic(CITY_EVENTS.name), message_key(CITY_EVENTS, wire),
                        encode_json(wire)))
            events += 1
        for wire in text_events(frame, found, camera, states, read_text, snapshot):
            out.append((topic(CITY_EVENTS.name), message_key(CITY_EVENTS, wire),
                        encode_json(wire)))
            events += 1
    return Outputs(out, len(frames), dead, events, skipped)


def text_events(
    frame: Frame, found: Sequence[Any], camera: CameraConfig, states: CameraStates,
    read_text: Callable[[Any], TextFinding] | None,
    snapshot: Callable[[Frame, Sequence[Any]], str | None] | None,
) -> list[dict[str, Any]]:
    """Small ads (B01) and banners (B02) in view, for a camera that reads its frames
    (``camera.ocr``): one frame per ``every_seconds``, one event per code and cooldown
    period."""
    header = frame.header
    at_ms = int(header.captured_at.timestamp() * 1000)
    last = states.read_at.get(header.camera_id)
    if (camera.ocr is None or read_text is None
            or (last is not None and 0 <= at_ms - last < camera.ocr.every_seconds * 1000)):
        return []
    states.read_at[header.camera_id] = at_ms
    finding = read_text(frame.image)
    out = []
    for event_id, code, kind, words in text_event_ids(
        header.camera_id, header.captured_at, camera.ocr.cooldown_seconds, finding
    ):
        if event_id in states.text_events:
            continue
        states.text_events.add(event_id)
        uri = snapshot(frame, found) if snapshot is not None else None
        out.append(camera_event(
            camera, event_id=event_id, at=header.captured_at,
            description=text_description(header.camera_id, words, finding), code=code,
            detected_class=kind, confidence=finding.confidence, snapshot_uri=uri,
        ))
    return out


async def rebuild(
    options: dict[str, Any], topic: str, partitions: Sequence[int], window: timedelta,
    cameras: Mapping[str, CameraConfig], states: CameraStates,
) -> int:
    """Read back the window of vision.detections on ``partitions`` and replay it."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    states.forget()
    if not partitions:
        return 0
    tps = [TopicPartition(topic, p) for p in partitions]
    reader = AIOKafkaConsumer(enable_auto_commit=False, group_id=None, **options)
    await reader.start()
    try:
        ends = await reader.end_offsets(tps)
        since = int((datetime.now(UTC) - window).timestamp() * 1000)
        starts = await offsets_for_times(reader, dict.fromkeys(tps, since))
        messages = await read_range(reader, {tp: (starts[tp], ends[tp]) for tp in tps})
    finally:
        await reader.stop()
    records = []
    for m in sorted(messages, key=lambda m: (m.partition, m.offset)):
        try:
            record = parse_record(decode_json(m.value, 10 * 1024 * 1024))
        except RecordError as err:
            log.warning("vision rebuild skips %s[%d]@%d: %s", m.topic, m.partition, m.offset,
                        err.reason)
            continue
        if isinstance(record, DetectedFrame):
            records.append(record)
    return rebuild_from(records, cameras, states)


async def run_vision_stage(
    settings: Any,
    options: dict[str, Any],
    detect: Callable[[list[Any]], list[list[Any]]],
    cameras: Mapping[str, CameraConfig],
    model: str,
    codes: Mapping[str, str],
    snapshot: Callable[[Frame, Sequence[Any]], str | None] | None = None,
    on_batch: Callable[[Outputs, float], None] | None = None,
    on_ready: Callable[[], None] | None = None,
    read_text: Callable[[Any], TextFinding] | None = None,
) -> None:
    """Consume frames.raw until cancelled; a failure propagates (the process exits and
    its supervisor restarts it; uncommitted frames come again)."""
    from aiokafka import AIOKafkaProducer, ConsumerRebalanceListener

    from streams.topics import vision_group

    states = CameraStates()
    ready = asyncio.Event()
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vision")
    loop = asyncio.get_running_loop()
    detections_topic = settings.topic(VISION_DETECTIONS.name)
    window = timedelta(seconds=settings.vision_rebuild_s)
    consumer = group_consumer(
        vision_group(settings), settings.kafka_session_timeout_s, options,
        # A fetch holds whole frames: a partition's share must take one at its limit.
        max_partition_fetch_bytes=FRAMES_RAW.max_message_bytes + 64 * 1024,
        # A batch of 16 frames can take seconds on a CPU: within the poll interval.
        max_poll_interval_ms=300_000,
    )
    # A dead letter carries a whole frame (base64): the request must take one.
    producer = AIOKafkaProducer(acks="all", enable_idempotence=True,
                                max_request_size=DEAD_LETTERS.max_message_bytes + 64 * 1024,
                                linger_ms=5, **options)

    class Rebuild(ConsumerRebalanceListener):  # type: ignore[misc]
        async def on_partitions_revoked(self, revoked: Any) -> None:
            ready.clear()

        async def on_partitions_assigned(self, assigned: Any) -> None:
            ready.clear()
            started = loop.time()
            partitions = sorted({tp.partition for tp in assigned})
            count = await rebuild(options, detections_topic, partitions, window, cameras,
                                  states)
            ready.set()
            if on_ready is not None:
                on_ready()
            log.info("vision stage: %d partitions, %d frames replayed into %d cameras' "
                     "trackers, %.2f s", len(assigned), count, len(states.values),
                     loop.time() - started)

    # Frames inline, and references to frames in an object store (4K photos).
    consumer.subscribe([settings.topic(FRAMES_RAW.name), settings.topic(VIDEO_FRAMES.name)],
                       listener=Rebuild())
    await producer.start()
    await consumer.start()
    try:
        while True:
            fetched = await consumer.getmany(timeout_ms=int(settings.vision_window_s * 1000),
                                             max_records=settings.vision_batch_size)
            messages = [m for batch in fetched.values() for m in batch]
            if not messages:
                continue
            await ready.wait()
            started = time.perf_counter()
            outputs = await loop.run_in_executor(
                executor, process_batch, messages, detect, cameras, states, settings.topic,
                model, codes, snapshot, FRAMES_RAW.max_message_bytes, read_text,
            )
            deliveries = [await producer.send(t, value=v, key=k) for t, k, v in outputs.messages]
            await asyncio.gather(*deliveries)  # delivered before the offsets move
            await commit_fetched(consumer, fetched, "vision frame")
            if on_batch is not None:
                on_batch(outputs, time.perf_counter() - started)
    finally:
        await consumer.stop()
        await producer.stop()
        executor.shutdown(wait=False)


def serve(settings: Any, metrics_port: int | None = None) -> int:
    """``citystream vision``: the detector (Triton when configured, checked at start-up),
    every camera's configuration, metrics, then the stage until interrupted."""
    from prometheus_client import Counter, Histogram, start_http_server

    from models.inference import BackendUnavailable, ModelMismatch
    from models.vision.detector import build_detector
    from models.vision.nanodet import COCO_CLASSES
    from processors.camera_config import CameraConfigError, load_camera_configs
    from processors.worker import aiokafka_options
    from schemas.domain import Domain

    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    domain = Domain.load(settings.domain_file)
    try:
        cameras = load_camera_configs(settings.vision_cameras_dir, domain, COCO_CLASSES)
    except CameraConfigError as exc:
        raise SystemExit(f"citystream vision: {exc}") from exc
    if not cameras:
        raise SystemExit(f"citystream vision: no camera configuration (*.json) in "
                         f"{settings.vision_cameras_dir}")
    detector = build_detector(settings)
    try:
        detector.check()
    except (BackendUnavailable, ModelMismatch) as exc:
        raise SystemExit(f"citystream vision: the detector is not ready: {exc}") from exc
    frames = Counter("citystream_vision_frames_total", "frames through the detector")
    dead = Counter("citystream_vision_dead_letters_total", "frames sent to the dead letters")
    events = Counter("citystream_vision_events_total", "camera city events raised")
    batch_seconds = Histogram("citystream_vision_batch_seconds",
                              "a batch of frames from fetch to delivered outputs")
    if metrics_port:
        start_http_server(metrics_port, addr=settings.web_host)

    def counted(outputs: Outputs, seconds: float) -> None:
        frames.inc(outputs.frames)
        dead.inc(outputs.dead)
        events.inc(outputs.events)
        batch_seconds.observe(seconds)

    from models.vision.face_detector import build_face_detector

    faces = build_face_detector(settings)
    try:
        faces.check()
    except (BackendUnavailable, ModelMismatch) as exc:
        raise SystemExit(f"citystream vision: the face detector is not ready (snapshots are "
                         f"blurred or not kept): {exc}") from exc
    read_text = None
    if any(c.ocr is not None for c in cameras.values()):
        read_text = text_reader(settings)
    store = settings.snapshot_dir or settings.var_dir / "snapshots"
    # `citystream stack` waits for this file: the models checked, partitions assigned.
    ready_file = settings.var_dir / "run" / "vision.ready"
    ready_file.parent.mkdir(parents=True, exist_ok=True)
    ready_file.unlink(missing_ok=True)
    log.info("vision stage: %d cameras, detector %s, snapshots in %s", len(cameras),
             detector.name, store)
    async def stage() -> None:
        # SIGTERM (`make stop`, a supervisor) ends the stage like Ctrl-C: cancelled
        # between batches' commits, the ready file removed.
        main = asyncio.current_task()
        if main is not None:
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main.cancel)
        await run_vision_stage(settings, aiokafka_options(settings), detector.detect,
                               cameras, f"nanodet/{detector.name}", {},
                               snapshot=snapshot_writer(store, faces.detect),
                               on_batch=counted, on_ready=ready_file.touch,
                               read_text=read_text)

    try:
        asyncio.run(stage())
    except (KeyboardInterrupt, asyncio.CancelledError):
        pass
    finally:
        ready_file.unlink(missing_ok=True)
        detector.close()
        faces.close()
    return 0


def text_reader(settings: Any) -> Callable[[Any], TextFinding]:
    """PP-OCR (Triton when configured, checked at start-up) and the small-ad/banner
    lexicon, for the cameras that read their frames."""
    from models.inference import BackendUnavailable, ModelMismatch
    from models.vision.ocr import classify_text
    from models.vision.ocr_runner import build_reader

    try:
        reader = build_reader(settings)
        reader.check()
    except (FileNotFoundError, BackendUnavailable, ModelMismatch) as exc:
        raise SystemExit(f"citystream vision: OCR is not ready (a camera reads its "
                         f"frames): {exc}") from exc

    def read(image: Any) -> TextFinding:
        lines = reader.read(image)
        verdict = classify_text(lines)
        confidence = sum(line.score for line in lines) / len(lines) if lines else 0.0
        return TextFinding(verdict.small_ad, verdict.banner, tuple(verdict.evidence),
                           confidence)

    return read


def snapshot_writer(
    store: Path, detect_faces: Callable[[list[Any]], list[list[Any]]]
) -> Callable[[Frame, Sequence[Any]], str]:
    """Writes a frame's snapshot with faces, heads and plates obscured
    (``processors.privacy``), checked by the face detector on the stored JPEG; returns its
    uri. Only frames that raise an event get one; a raw frame is never written."""
    from processors.privacy import store_snapshot, vehicles_and_persons

    def write(frame: Frame, found: Sequence[Any]) -> str:
        vehicles, persons = vehicles_and_persons(found)
        header = frame.header
        path = store_snapshot(
            store / header.camera_id / f"{header.frame_id}.jpg", frame.image,
            detect_faces([frame.image])[0], vehicles, persons=persons,
            check=lambda image: detect_faces([image])[0],
        )
        return path.resolve().as_uri()

    return write
