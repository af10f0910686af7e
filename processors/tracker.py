"""An IoU tracker per camera: one track for an object seen over many frames.

Pure: a camera's state and one frame's detections in, the state updated and a report out.
The state is small and JSON-serialisable (``TrackerState.to_json``) so it can live in a
Faust table keyed by camera id.

- Detections are matched to tracks within a class group (people with people, cars with
  trucks and buses, bicycles with motorbikes: a detector wavers between those, and a
  person in front of a car must not take the car's track). Matching is optimal
  (Hungarian) on the IoU between a detection and the track's predicted box; pairs under
  ``iou_threshold`` never match.
- The predicted box is the last box moved by the track's velocity, so two people crossing
  keep their own tracks.
- A new track is tentative until seen ``min_hits`` frames in a row; a tentative track
  missed once is dropped, so a one-frame flicker never becomes an object. A confirmed
  track survives ``max_age_frames`` missed frames and ``max_age_seconds``.
- Each track accounts its stay in each zone, judged by the bottom-centre of its smoothed
  box: the point where the object touches the ground, which is what lies in a fire lane
  or on a pavement drawn on the road surface (a box's centre is often over the kerb or
  the next lane for a tall vehicle seen at an angle). A stay ends only after the object
  has been seen outside for ``exit_grace_seconds``; an object unseen for a while (missed
  by the detector) has not left.
- The detector suppresses overlapping boxes within a class only: a box overlapping a
  better one of another class of its group by ``DUPLICATE_IOU`` (the van that is also a
  truck) is dropped.
- Bounded: at most ``max_tracks`` tracks (confirmed ones kept first), and at most that
  many detections of a frame tracked (highest scores first).
- A frame whose ``seq`` is not after the last one's is a duplicate or out of order: it is
  ignored and reported. A camera that restarts numbering is recognised by its time
  (later than the last frame by more than ``max_age_seconds``): tracking starts afresh.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Protocol

import numpy as np
from scipy.optimize import linear_sum_assignment

from processors.camera_config import CameraConfig, Point, point_in_polygon

STATE_VERSION = 1
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
# Weight of a new measurement in the velocity and score averages.
_VELOCITY_WEIGHT = 0.5
_SCORE_WEIGHT = 0.3
_PREDICT_SECONDS = 1.0
# Two boxes of one class group overlapping this much are one object seen twice.
DUPLICATE_IOU = 0.7
MAX_CLASS_CHARS = 40

Box = tuple[float, float, float, float]


class TrackerStateError(ValueError):
    """A stored tracker state is not in the expected shape."""


def to_ms(ts: datetime) -> int:
    """Epoch milliseconds: the state's clock (exact in JSON, unlike float seconds)."""
    return (ts - _EPOCH) // _MS


def from_ms(ms: int) -> datetime:
    return _EPOCH + ms * _MS


class DetectionLike(Protocol):
    """Any detector's output object: ``box`` (x1, y1, x2, y2) in the frame's pixels."""

    @property
    def box(self) -> Sequence[float]: ...

    @property
    def class_name(self) -> str: ...

    @property
    def score(self) -> float: ...


@dataclass(frozen=True, slots=True)
class Detected:
    """A detection, for callers that have none of their own (``DetectionLike``)."""

    box: Box
    class_name: str
    score: float


@dataclass(frozen=True, slots=True)
class FrameDetections:
    """One frame's detections. The detector's own detection objects can be passed as they
    are: anything with ``box``, ``class_name`` and ``score`` will do."""

    camera_id: str
    captured_at: datetime  # aware
    seq: int  # the camera's frame number
    width: int
    height: int
    detections: Sequence[DetectionLike] = ()

    def __post_init__(self) -> None:
        if self.captured_at.tzinfo is None:
            raise ValueError("captured_at must carry its time zone")
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"frame size {self.width}×{self.height} is not positive")
        if self.seq < 0:
            raise ValueError(f"seq {self.seq} is negative")


@dataclass(slots=True)
class Stay:
    """A track's current stay in one zone (epoch ms)."""

    entered: int
    last_inside: int
    out_since: int | None = None

    @property
    def dwell_ms(self) -> int:
        return self.last_inside - self.entered

    def to_json(self) -> list[int | None]:
        return [self.entered, self.last_inside, self.out_since]


@dataclass(slots=True)
class Track:
    track_id: int
    group: str
    votes: dict[str, float]  # class -> summed score; the track's class is the largest
    box: Box  # last detected box
    smooth: Box  # smoothed box: reported, and judged against zones
    velocity: tuple[float, float]  # of the box's centre, pixels per second
    score: float  # running average of detection scores
    hits: int
    misses: int
    confirmed: bool
    first_seen: int  # epoch ms
    last_seen: int
    last_seq: int
    stays: dict[str, Stay] = field(default_factory=dict)

    @property
    def class_name(self) -> str:
        return max(self.votes, key=lambda c: self.votes[c])

    @property
    def anchor(self) -> Point:
        """The bottom-centre of the smoothed box: where the object meets the ground."""
        x1, _, x2, y2 = self.smooth
        return ((x1 + x2) / 2, y2)

    def predicted(self, now: int) -> Box:
        # At most a second ahead: further on, a parked car's jitter would carry its
        # predicted box away while the detector misses it.
        dt = min(max(0, now - self.last_seen) / 1000, _PREDICT_SECONDS)
        dx, dy = self.velocity[0] * dt, self.velocity[1] * dt
        x1, y1, x2, y2 = self.box
        return (x1 + dx, y1 + dy, x2 + dx, y2 + dy)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.track_id, "group": self.group, "votes": dict(self.votes),
            "box": list(self.box), "smooth": list(self.smooth), "vel": list(self.velocity),
            "score": self.score, "hits": self.hits, "misses": self.misses,
            "confirmed": self.confirmed, "first": self.first_seen, "last": self.last_seen,
            "seq": self.last_seq, "stays": {z: s.to_json() for z, s in self.stays.items()},
        }  # fmt: skip

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Track:
        try:
            track = cls(
                track_id=int(data["id"]), group=str(data["group"]),
                votes={str(k): float(v) for k, v in data["votes"].items()},
                box=as_box(data["box"]), smooth=as_box(data["smooth"]),
                velocity=(float(data["vel"][0]), float(data["vel"][1])),
                score=float(data["score"]), hits=int(data["hits"]),
                misses=int(data["misses"]), confirmed=bool(data["confirmed"]),
                first_seen=int(data["first"]), last_seen=int(data["last"]),
                last_seq=int(data["seq"]),
                stays={str(z): Stay(int(s[0]), int(s[1]), optional_int(s[2]))
                       for z, s in data["stays"].items()},
            )  # fmt: skip
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
            raise TrackerStateError(f"track is not in the expected shape: {exc!r}") from exc
        if not track.votes:
            raise TrackerStateError(f"track {track.track_id} has no class")
        return track


def as_box(values: Sequence[Any]) -> Box:
    x1, y1, x2, y2 = (float(v) for v in values)
    return (x1, y1, x2, y2)


def optional_int(value: Any) -> int | None:
    return None if value is None else int(value)


def versioned(
    data: object, version: int, what: str, error: type[ValueError]
) -> Mapping[str, Any] | None:
    """A stored state as a mapping (None: nothing stored); ``error`` if not of ``version``."""
    if data is None:
        return None
    if not isinstance(data, Mapping) or data.get("v") != version:
        raise error(f"{what} is not version {version} state")
    return data


@dataclass(slots=True)
class TrackerState:
    """One camera's tracks, and the last frame seen (to refuse repeats)."""

    last_seq: int | None = None
    last_at: int | None = None  # epoch ms
    next_id: int = 1
    tracks: list[Track] = field(default_factory=list)

    def track(self, track_id: int) -> Track | None:
        return next((t for t in self.tracks if t.track_id == track_id), None)

    def to_json(self) -> dict[str, Any]:
        return {
            "v": STATE_VERSION, "seq": self.last_seq, "at": self.last_at,
            "next_id": self.next_id, "tracks": [t.to_json() for t in self.tracks],
        }  # fmt: skip

    @classmethod
    def from_json(cls, stored: object) -> TrackerState:
        data = versioned(stored, STATE_VERSION, "tracker state", TrackerStateError)
        if data is None:
            return cls()
        tracks = data.get("tracks")
        if not isinstance(tracks, list):
            raise TrackerStateError("tracker state: tracks must be a list")
        restored = [Track.from_json(t) for t in tracks]
        try:
            return cls(
                last_seq=optional_int(data.get("seq")), last_at=optional_int(data.get("at")),
                next_id=int(data["next_id"]), tracks=restored,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise TrackerStateError(f"tracker state is not in the expected shape: {exc!r}") from exc


@dataclass(frozen=True, slots=True)
class FrameReport:
    """What one frame did to a camera's tracks."""

    status: Literal["tracked", "ignored"]
    at: int  # epoch ms the frame counts at (its time, or the last frame's if the clock went back)
    reason: str = ""  # why a frame was ignored
    note: str = ""  # something odd but handled: a restarted sequence, a clock gone back
    # For each detection of the frame, in order: its track id, or None (below the score
    # threshold, a class no rule needs, malformed, or over the frame's limit).
    assignments: tuple[int | None, ...] = ()
    rejected: int = 0  # malformed detections (no finite box inside the frame, bad score)
    rejected_reasons: tuple[str, ...] = ()  # the distinct reasons, a few at most
    created: tuple[int, ...] = ()
    confirmed: tuple[int, ...] = ()  # confirmed by this frame
    dropped: tuple[int, ...] = ()
    tentative: frozenset[int] = frozenset()  # tracks of this frame not confirmed yet

    @property
    def confirmed_assignments(self) -> tuple[int | None, ...]:
        """``assignments`` with None for tracks not confirmed yet (a flicker has none)."""
        return tuple(None if a in self.tentative else a for a in self.assignments)


@dataclass(frozen=True, slots=True)
class _Candidate:
    index: int  # in the frame's detections
    box: Box
    class_name: str
    group: str
    score: float


def tracked_classes(camera: CameraConfig) -> frozenset[str]:
    """The classes the rules need, with the rest of their groups: a detector that calls a
    car a truck for one frame must not break the car's track."""
    named = camera.named_classes
    groups = camera.tracker.class_groups.values()
    return named | {c for group in groups if named & set(group) for c in group}


def _candidate(
    index: int, detection: object, width: int, height: int, camera: CameraConfig
) -> _Candidate | str:
    """A usable detection (its box clipped to the frame), or why it is malformed."""
    try:
        raw = tuple(float(v) for v in detection.box)  # type: ignore[attr-defined]
        score = float(detection.score)  # type: ignore[attr-defined]
        class_name = detection.class_name  # type: ignore[attr-defined]
    except (AttributeError, TypeError, ValueError) as exc:
        return f"not a detection: {exc}"
    if len(raw) != 4 or not all(math.isfinite(v) for v in raw):
        return "box is not four finite numbers"
    if not (isinstance(class_name, str) and 0 < len(class_name) <= MAX_CLASS_CHARS):
        return "class name is not a short string"
    if not 0 <= score <= 1:
        return "score outside 0..1"
    x1, y1 = max(0.0, raw[0]), max(0.0, raw[1])
    x2, y2 = min(float(width), raw[2]), min(float(height), raw[3])
    if x2 - x1 < 1 or y2 - y1 < 1:
        return "box is empty inside the frame"
    group = camera.tracker.group_of(class_name)
    return _Candidate(index, (x1, y1, x2, y2), class_name, group, score)


def _distinct(found: list[_Candidate]) -> list[_Candidate]:
    """Best first, without the boxes that repeat a better one of another class of their
    group: the detector suppresses overlaps within a class only, so one van comes as a
    truck and as a car, and would make two tracks. (Within a class, what the detector
    kept is taken as it is: two people crossing overlap.)"""
    kept: list[_Candidate] = []
    for group in {c.group for c in found}:
        mine = [c for c in found if c.group == group]
        overlap = iou_matrix(np.array([c.box for c in mine]), np.array([c.box for c in mine]))
        keep: list[int] = []
        for i in range(len(mine)):
            if all(overlap[i, j] < DUPLICATE_IOU or mine[i].class_name == mine[j].class_name
                   for j in keep):
                keep.append(i)
        kept.extend(mine[i] for i in keep)
    return sorted(kept, key=lambda c: -c.score)


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of ``a`` [N, 4] with every box of ``b`` [M, 4]: [N, M]."""
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def iou(a: Box, b: Box) -> float:
    return float(iou_matrix(np.array([a]), np.array([b]))[0, 0])


def _match(
    tracks: list[Track], found: list[_Candidate], now: int, threshold: float
) -> list[tuple[Track, _Candidate]]:
    if not tracks or not found:
        return []
    predicted = np.array([t.predicted(now) for t in tracks])
    overlap = iou_matrix(predicted, np.array([c.box for c in found]))
    rows, cols = linear_sum_assignment(1.0 - overlap)
    return [(tracks[r], found[c]) for r, c in zip(rows, cols, strict=True)
            if overlap[r, c] >= threshold]


def _r(value: float) -> float:
    # Hundredths of a pixel (or of a pixel per second) are plenty, and keep the state small.
    return round(value, 2)


def _blend(old: Box, new: Box, weight: float) -> Box:
    x1, y1, x2, y2 = (_r(weight * n + (1 - weight) * o) for o, n in zip(old, new, strict=True))
    return (x1, y1, x2, y2)


def _centre(box: Box) -> Point:
    return ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)


def _observe(track: Track, seen: _Candidate, now: int, seq: int, camera: CameraConfig) -> bool:
    """Fold a matched detection into its track; True when this confirms the track."""
    dt = (now - track.last_seen) / 1000
    if dt > 0:
        (ox, oy), (nx, ny) = _centre(track.box), _centre(seen.box)
        step = ((nx - ox) / dt, (ny - oy) / dt)
        w = 1.0 if track.hits == 1 else _VELOCITY_WEIGHT
        track.velocity = (_r(w * step[0] + (1 - w) * track.velocity[0]),
                          _r(w * step[1] + (1 - w) * track.velocity[1]))
    # The smoothed box moves with the object before it is blended, so it does not lag.
    dx, dy = track.velocity[0] * max(dt, 0), track.velocity[1] * max(dt, 0)
    x1, y1, x2, y2 = track.smooth
    track.smooth = _blend((x1 + dx, y1 + dy, x2 + dx, y2 + dy), seen.box,
                          camera.tracker.smoothing)
    track.box = tuple(_r(v) for v in seen.box)  # type: ignore[assignment]
    track.score = round(_SCORE_WEIGHT * seen.score + (1 - _SCORE_WEIGHT) * track.score, 4)
    track.votes[seen.class_name] = round(track.votes.get(seen.class_name, 0.0) + seen.score, 4)
    track.hits += 1
    track.misses = 0
    track.last_seen, track.last_seq = now, seq
    if not track.confirmed and track.hits >= camera.tracker.min_hits:
        track.confirmed = True
        return True
    return False


def _account_zones(
    track: Track, polygons: Mapping[str, tuple[Point, ...]], now: int, grace_ms: int
) -> None:
    x, y = track.anchor
    for gone in [z for z in track.stays if z not in polygons]:  # zone removed from config
        del track.stays[gone]
    for name, polygon in polygons.items():
        stay = track.stays.get(name)
        if point_in_polygon(x, y, polygon):
            if stay is None:
                track.stays[name] = Stay(now, now)
            else:
                stay.last_inside, stay.out_since = now, None
        elif stay is not None:
            if stay.out_since is None:
                stay.out_since = now
            if now - stay.out_since >= grace_ms:
                del track.stays[name]


def _order(state: TrackerState, frame: FrameDetections, camera: CameraConfig
           ) -> tuple[int, str, str]:
    """(the time the frame counts at, why it is ignored or "", a note or "")."""
    at = to_ms(frame.captured_at)
    if state.last_seq is None or state.last_at is None:
        return at, "", ""
    if frame.seq <= state.last_seq:
        if at > state.last_at + camera.tracker.max_age_seconds * 1000:
            return at, "", f"sequence restarted at {frame.seq} after {state.last_seq}"
        return at, f"duplicate or out-of-order frame: seq {frame.seq} after {state.last_seq}", ""
    if at < state.last_at:
        # Numbering says later, the clock says earlier: trust the numbering and let no
        # time pass, so no dwell time or track age goes backwards.
        return state.last_at, "", f"clock went back {(state.last_at - at) / 1000:g} s"
    return at, "", ""


def update(state: TrackerState, frame: FrameDetections, camera: CameraConfig) -> FrameReport:
    """Track one frame's detections; ``state`` is updated in place."""
    if frame.camera_id != camera.camera_id:
        raise ValueError(f"frame of camera {frame.camera_id!r} given camera "
                         f"{camera.camera_id!r}'s configuration")
    settings = camera.tracker
    now, reason, note = _order(state, frame, camera)
    if reason:
        return FrameReport("ignored", now, reason=reason,
                           assignments=(None,) * len(frame.detections))
    dropped: list[int] = []
    if note.startswith("sequence restarted"):
        dropped.extend(t.track_id for t in state.tracks)
        state.tracks.clear()

    wanted = tracked_classes(camera)
    rejected = 0
    reasons: list[str] = []
    found: list[_Candidate] = []
    for index, detection in enumerate(frame.detections):
        candidate = _candidate(index, detection, frame.width, frame.height, camera)
        if isinstance(candidate, str):
            rejected += 1
            if candidate not in reasons and len(reasons) < 5:
                reasons.append(candidate)
        elif candidate.score >= camera.score_threshold and candidate.class_name in wanted:
            found.append(candidate)
    # No more detections than tracks can be kept: the most certain ones.
    best = sorted(found, key=lambda c: -c.score)[: 4 * settings.max_tracks]
    found = _distinct(best)[: settings.max_tracks]

    assignments: list[int | None] = [None] * len(frame.detections)
    confirmed: list[int] = []
    seen: list[Track] = []
    for group in sorted({c.group for c in found} | {t.group for t in state.tracks}):
        tracks = [t for t in state.tracks if t.group == group]
        in_group = [c for c in found if c.group == group]
        pairs = _match(tracks, in_group, now, settings.iou_threshold)
        matched = {c.index for _, c in pairs}
        for track, candidate in pairs:
            if _observe(track, candidate, now, frame.seq, camera):
                confirmed.append(track.track_id)
            assignments[candidate.index] = track.track_id
            seen.append(track)
        for candidate in in_group:
            if candidate.index in matched:
                continue
            track = Track(
                track_id=state.next_id, group=group,
                votes={candidate.class_name: round(candidate.score, 4)},
                box=candidate.box, smooth=candidate.box, velocity=(0.0, 0.0),
                score=round(candidate.score, 4), hits=1, misses=0,
                confirmed=settings.min_hits <= 1, first_seen=now, last_seen=now,
                last_seq=frame.seq,
            )  # fmt: skip
            state.next_id += 1
            state.tracks.append(track)
            assignments[candidate.index] = track.track_id
            seen.append(track)
            if track.confirmed:
                confirmed.append(track.track_id)
    created = tuple(t.track_id for t in seen if t.hits == 1)

    seen_ids = {t.track_id for t in seen}
    max_age_ms = settings.max_age_seconds * 1000
    kept: list[Track] = []
    for track in state.tracks:
        if track.track_id not in seen_ids:
            track.misses += 1
            if (not track.confirmed or track.misses > settings.max_age_frames
                    or now - track.last_seen > max_age_ms):
                dropped.append(track.track_id)
                continue
        kept.append(track)
    if len(kept) > settings.max_tracks:
        # Confirmed first, then the most recently seen: a flood of new boxes cannot push
        # out the objects the rules are timing.
        kept.sort(key=lambda t: (t.confirmed, t.last_seen, t.hits), reverse=True)
        for track in kept[settings.max_tracks:]:
            dropped.append(track.track_id)
            if track.track_id in seen_ids:
                assignments = [None if a == track.track_id else a for a in assignments]
        kept = sorted(kept[: settings.max_tracks], key=lambda t: t.track_id)
    state.tracks = kept

    polygons = camera.zone_polygons(frame.width, frame.height)
    grace_ms = round(settings.exit_grace_seconds * 1000)
    for track in state.tracks:
        if track.track_id in seen_ids:
            _account_zones(track, polygons, now, grace_ms)

    state.last_seq, state.last_at = frame.seq, now
    kept_ids = {t.track_id for t in state.tracks}
    return FrameReport(
        "tracked", now, note=note, assignments=tuple(assignments), rejected=rejected,
        rejected_reasons=tuple(reasons),
        created=tuple(i for i in created if i in kept_ids),
        confirmed=tuple(i for i in confirmed if i in kept_ids), dropped=tuple(dropped),
        tentative=frozenset(t.track_id for t in state.tracks
                            if not t.confirmed and t.track_id in seen_ids),
    )
