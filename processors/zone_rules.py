"""Zone rules: a camera's tracked objects in, city events out.

Pure: the camera's configuration, its tracker state after a frame and the rules' memory in,
events out (the memory is updated). ``step_camera`` runs tracker and rules on one frame
from the camera's JSON table value and gives back the next one, so a Faust agent keeps a
single table keyed by camera id.

- ``dwell``: one event per object per stay. A confirmed track whose stay in the zone
  (``processors.tracker``) reaches ``min_seconds`` fires once, however long it then stays.
  The memory keeps where fired objects were last seen inside; a stay that begins within
  ``cooldown_seconds`` of that, by the same track or by a new track whose box overlaps the
  fired one (the tracker lost the object behind a bus and found it again), is the same
  incident and does not fire.
- ``pile``, ``crowd``, ``occupied``: one event per episode. An episode begins when the
  count of confirmed objects of the classes in the zone reaches the threshold, fires when
  it has lasted ``min_seconds``, and ends when the count has stayed below the threshold
  for ``rearm_seconds`` (dips shorter than that belong to the episode).

An event's id is made from the camera, the rule and the track's stay (or the episode's
start), so replaying the same frames into the same state gives the same ids, and the
warehouse stores a repeated event once.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from processors.camera_config import CameraConfig, DwellRule, EpisodeRule, threshold
from processors.tracker import (
    Box,
    FrameDetections,
    FrameReport,
    Track,
    TrackerState,
    TrackerStateError,
    as_box,
    from_ms,
    iou,
    optional_int,
    update,
    versioned,
)
from schemas.records import CityEvent, to_wire

STATE_VERSION = 1
# Fired objects remembered per dwell rule: enough for a full street of parked cars.
MAX_FIRED = 256

ZONE_NAMES = {
    "no_parking": "禁停区域", "fire_lane": "消防通道", "pavement": "人行道",
    "market_free": "禁止摆摊区域", "any": "监控区域",
}  # fmt: skip
CLASS_NAMES = {
    "person": "行人", "car": "车辆", "truck": "货车", "bus": "客车", "motorcycle": "摩托车",
    "bicycle": "自行车", "garbage": "垃圾", "stall": "摊位", "fallen_tree": "倒伏树木",
    "pothole": "路面坑洞", "smoke": "烟雾", "fire": "明火", "water": "积水",
}  # fmt: skip
_VEHICLES = frozenset({"car", "truck", "bus", "motorcycle", "bicycle"})


class RuleStateError(ValueError):
    """A stored rule memory is not in the expected shape."""


@dataclass(slots=True)
class Fired:
    """A dwell rule's memory of an object it fired for (epoch ms)."""

    entered: int  # the stay it fired for (or the stay that continued it)
    last: int  # last seen inside the zone
    box: Box  # where


@dataclass(slots=True)
class Episode:
    above: int | None = None  # when the count reached the threshold
    below: int | None = None  # when it last fell below it, during an episode
    fired: bool = False


@dataclass(slots=True)
class RuleState:
    fired: dict[str, dict[int, Fired]] = field(default_factory=dict)  # dwell rule -> track
    episodes: dict[str, Episode] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "v": STATE_VERSION,
            "fired": {rule: [[tid, f.entered, f.last, list(f.box)] for tid, f in mem.items()]
                      for rule, mem in self.fired.items()},
            "episodes": {rule: [e.above, e.below, e.fired] for rule, e in self.episodes.items()},
        }

    @classmethod
    def from_json(cls, stored: object) -> RuleState:
        data = versioned(stored, STATE_VERSION, "rule state", RuleStateError)
        if data is None:
            return cls()
        try:
            fired = {
                str(rule): {int(tid): Fired(int(entered), int(last), as_box(box))
                            for tid, entered, last, box in entries}
                for rule, entries in data["fired"].items()
            }
            episodes = {
                str(rule): Episode(optional_int(above), optional_int(below), bool(done))
                for rule, (above, below, done) in data["episodes"].items()
            }
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
            raise RuleStateError(f"rule state is not in the expected shape: {exc!r}") from exc
        return cls(fired, episodes)


@dataclass(frozen=True, slots=True)
class VisionEvent:
    """A rule's hit: what the camera saw, where, since when."""

    camera_id: str
    rule: str
    rule_kind: str
    zone: str
    zone_kind: str
    code: str | None
    class_name: str  # the object's class; an episode's most common class
    confidence: float  # the object's average detection score; an episode's mean over objects
    track_ids: tuple[int, ...]
    first_seen: datetime  # dwell: when the object entered the zone; else the episode's start
    at: datetime  # the frame that fired it
    box: Box  # the object's smoothed box; an episode's objects' union box (frame pixels)
    seq: int
    count: int  # objects: 1 for dwell
    seconds: float  # how long the stay or the episode had lasted when it fired
    key: str  # the stay or episode, within the rule

    @property
    def event_id(self) -> str:
        return vision_event_id(self.camera_id, self.rule, self.key)


def vision_event_id(camera_id: str, rule: str, key: str) -> str:
    """Deterministic, at most 47 characters of the wire's id alphabet."""
    digest = hashlib.blake2b(f"{camera_id}\x1f{rule}\x1f{key}".encode(), digest_size=10)
    return f"v-{camera_id[:24]}-{digest.hexdigest()}"


def _event(
    camera: CameraConfig, rule: DwellRule | EpisodeRule, tracks: list[Track], class_name: str,
    first: int, now: int, seq: int, key: str,
) -> VisionEvent:
    boxes = [t.smooth for t in tracks]
    box = (min(b[0] for b in boxes), min(b[1] for b in boxes),
           max(b[2] for b in boxes), max(b[3] for b in boxes))
    return VisionEvent(
        camera_id=camera.camera_id, rule=rule.name, rule_kind=rule.kind, zone=rule.zone,
        zone_kind=camera.zone(rule.zone).kind, code=rule.code, class_name=class_name,
        confidence=round(sum(t.score for t in tracks) / len(tracks), 4),
        track_ids=tuple(sorted(t.track_id for t in tracks)), first_seen=from_ms(first),
        at=from_ms(now), box=box, seq=seq, count=len(tracks), seconds=(now - first) / 1000,
        key=key,
    )  # fmt: skip


def _dwell(
    camera: CameraConfig, rule: DwellRule, tracker: TrackerState, memory: dict[int, Fired],
    now: int, seq: int,
) -> list[VisionEvent]:
    cooldown_ms = rule.cooldown_seconds * 1000
    by_id = {t.track_id: t for t in tracker.tracks}
    for track_id, fired in memory.items():
        track = by_id.get(track_id)
        stay = track.stays.get(rule.zone) if track is not None else None
        if track is None or stay is None:
            continue
        if stay.entered == fired.entered or stay.entered - fired.last < cooldown_ms:
            # The stay it fired for, or a return within the cool-down: the same incident.
            fired.entered, fired.last, fired.box = stay.entered, stay.last_inside, track.smooth
    events: list[VisionEvent] = []
    for track in tracker.tracks:
        stay = track.stays.get(rule.zone)
        if (stay is None or not track.confirmed or track.last_seen != now
                or track.class_name not in rule.classes
                or stay.dwell_ms < rule.min_seconds * 1000):
            continue
        known = memory.get(track.track_id)
        if known is not None and known.entered == stay.entered:
            continue  # fired for this stay already
        same_place = any(
            other != track.track_id and stay.entered - fired.last < cooldown_ms
            and iou(fired.box, track.smooth) >= rule.same_place_iou
            for other, fired in memory.items()
        )
        memory[track.track_id] = Fired(stay.entered, stay.last_inside, track.smooth)
        if not same_place:
            events.append(_event(camera, rule, [track], track.class_name, stay.entered, now,
                                 seq, f"t{track.track_id}@{stay.entered}"))
    for track_id, fired in list(memory.items()):
        track = by_id.get(track_id)
        stay = track.stays.get(rule.zone) if track is not None else None
        if (stay is None or stay.entered != fired.entered) and now - fired.last > cooldown_ms:
            del memory[track_id]  # its stay is over and its cool-down past: nothing to recall
    if len(memory) > MAX_FIRED:
        for track_id in sorted(memory, key=lambda i: memory[i].last)[: len(memory) - MAX_FIRED]:
            del memory[track_id]
    return events


def _episode(
    camera: CameraConfig, rule: EpisodeRule, tracker: TrackerState, episode: Episode,
    now: int, seq: int,
) -> VisionEvent | None:
    counted = [t for t in tracker.tracks
               if t.confirmed and rule.zone in t.stays and t.class_name in rule.classes]
    if len(counted) >= threshold(rule):
        episode.below = None
        if episode.above is None:
            episode.above = now
        if not episode.fired and now - episode.above >= rule.min_seconds * 1000:
            episode.fired = True
            common = Counter(t.class_name for t in counted).most_common(1)[0][0]
            return _event(camera, rule, counted, common, episode.above, now, seq,
                          f"e@{episode.above}")
    elif episode.above is not None:
        if episode.below is None:
            episode.below = now
        if now - episode.below >= rule.rearm_seconds * 1000:
            episode.above, episode.below, episode.fired = None, None, False
    return None


def apply_rules(
    camera: CameraConfig, tracker: TrackerState, state: RuleState, frame: FrameDetections,
    report: FrameReport,
) -> list[VisionEvent]:
    """The rule hits of a tracked frame (``report`` from ``tracker.update`` on it);
    ``state`` is updated in place. Memory of rules no longer configured is dropped."""
    if report.status != "tracked":
        return []
    names = {r.name for r in camera.rules}
    for mapping in (state.fired, state.episodes):
        for gone in [name for name in mapping if name not in names]:
            del mapping[gone]
    events: list[VisionEvent] = []
    for rule in camera.rules:
        if isinstance(rule, DwellRule):
            memory = state.fired.setdefault(rule.name, {})
            events.extend(_dwell(camera, rule, tracker, memory, report.at, frame.seq))
        else:
            episode = state.episodes.setdefault(rule.name, Episode())
            hit = _episode(camera, rule, tracker, episode, report.at, frame.seq)
            if hit is not None:
                events.append(hit)
    return events


@dataclass(frozen=True, slots=True)
class CameraStep:
    value: Mapping[str, Any]  # the camera's next table value (the same one when ignored)
    events: tuple[VisionEvent, ...]
    tracking: FrameReport
    reset: str = ""  # why the stored value was unreadable and tracking started afresh


def empty_value() -> dict[str, Any]:
    return {"tracker": TrackerState().to_json(), "rules": RuleState().to_json()}


def step_camera(
    value: Mapping[str, Any] | None, frame: FrameDetections, camera: CameraConfig
) -> CameraStep:
    """One frame of one camera: its table value in, the next value and the events out.
    A duplicate or out-of-order frame leaves the value as it is and raises nothing."""
    reset = ""
    try:
        if value is not None and not isinstance(value, Mapping):
            raise RuleStateError(f"camera state is a {type(value).__name__}, not an object")
        tracker = TrackerState.from_json((value or {}).get("tracker"))
        rules = RuleState.from_json((value or {}).get("rules"))
    except (TrackerStateError, RuleStateError) as exc:
        # A state this version cannot read: lose some seconds of tracking, not the camera.
        tracker, rules, reset = TrackerState(), RuleState(), str(exc)
    report = update(tracker, frame, camera)
    if report.status != "tracked":
        return CameraStep(value if value is not None else empty_value(), (), report, reset)
    events = apply_rules(camera, tracker, rules, frame, report)
    new_value = {"tracker": tracker.to_json(), "rules": rules.to_json()}
    return CameraStep(new_value, tuple(events), report, reset)


def _amount(count: int, class_name: str) -> str:
    if class_name == "person":
        return f"{count}人"
    return f"{count}辆" if class_name in _VEHICLES else f"{count}处"


def describe(event: VisionEvent, camera: CameraConfig) -> str:
    """A short Chinese text naming the problem: 摄像头cam-1检测到消防通道内车辆停留超过120秒."""
    zone = camera.zone(event.zone)
    place = zone.label or ZONE_NAMES.get(zone.kind, "监控区域")
    thing = CLASS_NAMES.get(event.class_name, event.class_name)
    rule = next((r for r in camera.rules if r.name == event.rule), None)
    seconds = f"{rule.min_seconds:g}" if rule is not None else f"{event.seconds:.0f}"
    amount = _amount(event.count, event.class_name)
    what = {
        "dwell": f"内{thing}停留超过{seconds}秒",
        "crowd": f"内人员聚集{event.count}人",
        "pile": f"内{thing}堆放{amount}",
        "occupied": f"被{thing}占用超过{seconds}秒",
    }.get(event.rule_kind, f"内{thing}")
    return f"摄像头{camera.camera_id}检测到{place}{what}"


def to_city_event(
    event: VisionEvent, camera: CameraConfig, snapshot_uri: str | None = None
) -> dict[str, Any]:
    """The ``city_event`` wire record for the dispatch path, validated (a record made here
    is never a dead letter): the camera's place, the problem in words, the camera's
    evidence (class, confidence, the blurred snapshot)."""
    return camera_event(camera, event_id=event.event_id, at=event.at,
                        description=describe(event, camera), code=event.code,
                        detected_class=event.class_name, confidence=event.confidence,
                        snapshot_uri=snapshot_uri)


def camera_event(
    camera: CameraConfig, *, event_id: str, at: datetime, description: str,
    code: str | None, detected_class: str, confidence: float, snapshot_uri: str | None,
) -> dict[str, Any]:
    """A camera's ``city_event``: its place from the configuration, its evidence."""
    loc = camera.location
    record: dict[str, Any] = {
        "kind": "city_event", "schema_version": 1, "event_id": event_id,
        "source": "camera", "reported_at": at.isoformat(),
        "description": description, "code": code,
        "district": loc.district, "street": loc.street, "road": loc.road,
        "address": loc.address, "location_type": loc.location_type,
        "lon": loc.lon, "lat": loc.lat,
        "camera_id": camera.camera_id, "detected_class": detected_class,
        "confidence": round(confidence, 4), "snapshot_uri": snapshot_uri,
    }  # fmt: skip
    return to_wire(CityEvent.model_validate({k: v for k, v in record.items() if v is not None}))
