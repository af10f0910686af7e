"""Per-camera video analytics configuration: where a camera is, its zones, the rules on them.

Operators set a camera up the way video analytics products are set up: zones drawn on the
camera's picture (polygons in image pixels at a stated reference resolution), and rules on
the zones that turn tracked objects into city events:

- ``dwell``: one object of the given classes standing in the zone at least ``min_seconds``
  (a car in a fire lane for 120 s: D03). One event per object; the same object, or another
  at the same place, does not fire again until it has been away ``cooldown_seconds``.
- ``pile``: at least ``min_count`` objects of the classes in the zone at once (bicycles
  piled on a pavement: D04), for ``min_seconds``.
- ``crowd``: at least ``min_people`` people in the zone at once, for ``min_seconds``.
- ``occupied``: the zone holds any object of the classes for ``min_seconds`` (a stall on a
  market-free street: D01).

Pile, crowd and occupied fire once per episode: the count must then stay below the
threshold for ``rearm_seconds`` before the rule can fire again.

Files are JSON (the project has no YAML library; JSON needs none). One camera per file,
``infra/cameras/<name>.json``. Pure: no Kafka, Triton, ClickHouse or image imports.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from schemas.domain import Domain
from schemas.records import RecordId

ZoneKind = Literal["no_parking", "fire_lane", "pavement", "market_free", "any"]
Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.\-]{1,40}$")]
ClassName = Annotated[str, Field(min_length=1, max_length=40)]
Seconds = Annotated[float, Field(ge=0, le=7 * 24 * 3600)]

# COCO classes the tracker groups by default: a detector often calls one car a truck in
# one frame and a car in the next, or a motorbike a bicycle; a track keeps them together.
DEFAULT_CLASS_GROUPS: dict[str, tuple[str, ...]] = {
    "person": ("person",),
    "vehicle": ("car", "truck", "bus"),
    "two_wheeler": ("motorcycle", "bicycle"),
}


class CameraConfigError(ValueError):
    """A camera configuration is missing, unreadable or invalid; the message says where."""


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CameraLocation(_Frozen):
    """Where the camera looks: copied onto every city event it raises."""

    district: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    street: Annotated[str, Field(max_length=200)] | None = None
    road: Annotated[str, Field(max_length=200)] | None = None
    address: Annotated[str, Field(max_length=500)] | None = None
    location_type: Annotated[str, Field(max_length=200)] | None = None
    lon: Annotated[float, Field(ge=-180, le=180)] | None = None
    lat: Annotated[float, Field(ge=-90, le=90)] | None = None


Point = tuple[float, float]


def _cross(o: Point, a: Point, b: Point) -> float:
    return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])


def _segments_cross(p1: Point, p2: Point, q1: Point, q2: Point) -> bool:
    """Whether two segments share a point (touching counts)."""
    d1, d2 = _cross(q1, q2, p1), _cross(q1, q2, p2)
    d3, d4 = _cross(p1, p2, q1), _cross(p1, p2, q2)
    if ((d1 > 0 > d2) or (d1 < 0 < d2)) and ((d3 > 0 > d4) or (d3 < 0 < d4)):
        return True

    def on(a: Point, b: Point, c: Point, d: float) -> bool:
        return d == 0 and min(a[0], b[0]) <= c[0] <= max(a[0], b[0]) and min(
            a[1], b[1]) <= c[1] <= max(a[1], b[1])

    return on(q1, q2, p1, d1) or on(q1, q2, p2, d2) or on(p1, p2, q1, d3) or on(p1, p2, q2, d4)


def polygon_area(points: tuple[Point, ...]) -> float:
    """Unsigned area (shoelace)."""
    total = 0.0
    for i, (x1, y1) in enumerate(points):
        x2, y2 = points[(i + 1) % len(points)]
        total += x1 * y2 - x2 * y1
    return abs(total) / 2


def self_intersection(points: tuple[Point, ...]) -> tuple[int, int] | None:
    """The first pair of edges (by index) that meet other than at their shared corner."""
    n = len(points)
    edges = [(points[i], points[(i + 1) % n]) for i in range(n)]
    for i in range(n):
        for j in range(i + 1, n):
            if j == i + 1 or (i == 0 and j == n - 1):
                continue  # neighbours share a corner by construction
            if _segments_cross(*edges[i], *edges[j]):
                return i, j
    return None


def point_in_polygon(x: float, y: float, points: tuple[Point, ...]) -> bool:
    """Even-odd ray casting; a point exactly on an edge may fall either way."""
    inside = False
    j = len(points) - 1
    for i, (xi, yi) in enumerate(points):
        xj, yj = points[j]
        if (yi > y) != (yj > y) and x < (xj - xi) * (y - yi) / (yj - yi) + xi:
            inside = not inside
        j = i
    return inside


class Zone(_Frozen):
    name: Name
    kind: ZoneKind
    # How events name the place to people, e.g. 北门消防通道; the kind's name when empty.
    label: Annotated[str, Field(max_length=40)] = ""
    polygon: Annotated[tuple[tuple[float, float], ...], Field(min_length=3, max_length=64)]

    @field_validator("polygon")
    @classmethod
    def _simple_polygon(cls, polygon: tuple[Point, ...]) -> tuple[Point, ...]:
        if len(set(polygon)) != len(polygon):
            raise ValueError("polygon repeats a point")
        crossing = self_intersection(polygon)
        if crossing is not None:
            raise ValueError(
                f"polygon is self-intersecting (edges {crossing[0]} and {crossing[1]} cross); "
                "list the points in order around the zone"
            )
        if polygon_area(polygon) < 1.0:
            raise ValueError("polygon has no area (its points lie on a line)")
        return polygon

    def scaled(self, sx: float, sy: float) -> tuple[Point, ...]:
        return tuple((x * sx, y * sy) for x, y in self.polygon)


class _Rule(_Frozen):
    # Stable: event ids are made from it, so renaming a rule re-raises its open events.
    name: Name
    zone: Name

    @model_validator(mode="before")
    @classmethod
    def _default_name(cls, data: Any) -> Any:
        if isinstance(data, dict) and "name" not in data and "zone" in data:
            return {**data, "name": f"{data['zone']}.{data.get('kind', 'rule')}"}
        return data


Code = Annotated[str, Field(pattern=r"^[A-Z][0-9]{2}$")]
Classes = Annotated[tuple[ClassName, ...], Field(min_length=1, max_length=20)]


class DwellRule(_Rule):
    kind: Literal["dwell"]
    classes: Classes
    min_seconds: Seconds
    code: Code
    # The object (or another at the same place) must have been out of the zone this long
    # before a new stay can fire again: a car that pulls out and back in is one event.
    cooldown_seconds: Seconds = 600.0
    # A new track whose box overlaps a fired one's last box this much (IoU) is taken for
    # the same object: the tracker lost it (occlusion, detector misses) and found it again.
    same_place_iou: Annotated[float, Field(gt=0, le=1)] = 0.5


class _EpisodeRule(_Rule):
    # How long the count must hold before the rule fires (short dips under the threshold
    # shorter than rearm_seconds do not restart it).
    min_seconds: Seconds = 0.0
    # How long the count must stay below the threshold before the episode ends.
    rearm_seconds: Seconds = 60.0


class PileRule(_EpisodeRule):
    kind: Literal["pile"]
    classes: Classes
    min_count: Annotated[int, Field(ge=2, le=1000)]
    code: Code


class CrowdRule(_EpisodeRule):
    kind: Literal["crowd"]
    min_people: Annotated[int, Field(ge=2, le=1000)]
    # The taxonomy has no code for a gathering: with None, dispatch classifies the text.
    code: Code | None = None

    @property
    def classes(self) -> tuple[str, ...]:
        return ("person",)


class OccupiedRule(_EpisodeRule):
    kind: Literal["occupied"]
    classes: Classes
    min_seconds: Seconds = 60.0
    code: Code


Rule = Annotated[DwellRule | PileRule | CrowdRule | OccupiedRule, Field(discriminator="kind")]
EpisodeRule = PileRule | CrowdRule | OccupiedRule


def threshold(rule: EpisodeRule) -> int:
    """How many objects make an episode."""
    if isinstance(rule, PileRule):
        return rule.min_count
    if isinstance(rule, CrowdRule):
        return rule.min_people
    return 1


class TrackerSettings(_Frozen):
    # Least IoU between a track's predicted box and a detection for them to match.
    iou_threshold: Annotated[float, Field(gt=0, le=1)] = 0.3
    # Frames in a row a new object must be seen before its track counts (and can fire).
    min_hits: Annotated[int, Field(ge=1, le=100)] = 3
    # A confirmed track unseen for more frames or seconds than this is dropped.
    max_age_frames: Annotated[int, Field(ge=0, le=10_000)] = 30
    max_age_seconds: Annotated[float, Field(gt=0, le=3600)] = 5.0
    max_tracks: Annotated[int, Field(ge=1, le=1000)] = 64
    # Weight of a new observation in the smoothed box (1: no smoothing).
    smoothing: Annotated[float, Field(gt=0, le=1)] = 0.6
    # A stay in a zone ends only after the object has been seen outside it this long, so
    # a box jittering across the zone's edge does not restart its dwell time.
    exit_grace_seconds: Seconds = 3.0
    class_groups: dict[Name, Classes] = Field(
        default_factory=lambda: dict(DEFAULT_CLASS_GROUPS)
    )
    # Classes tracked though no rule names them (e.g. for the detection records' track ids).
    extra_classes: tuple[ClassName, ...] = ()

    @field_validator("class_groups")
    @classmethod
    def _disjoint(cls, groups: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
        seen: dict[str, str] = {}
        for group, classes in groups.items():
            for name in classes:
                if name in seen and seen[name] != group:
                    raise ValueError(f"class {name!r} is in groups {seen[name]!r} and {group!r}")
                seen[name] = group
        return groups

    def group_of(self, class_name: str) -> str:
        for group, classes in self.class_groups.items():
            if class_name in classes:
                return group
        return class_name  # a class no group names is tracked on its own


class OcrSettings(_Frozen):
    """Reading what is written in view (small ads B01, banners B02): one frame every
    ``every_seconds`` (OCR takes about a second a frame on a CPU core), and one event per
    code per ``cooldown_seconds`` (a poster stays up for days)."""

    every_seconds: Annotated[float, Field(gt=0)] = 60.0
    cooldown_seconds: Annotated[float, Field(gt=0)] = 3600.0


class CameraConfig(_Frozen):
    camera_id: RecordId
    location: CameraLocation = CameraLocation()
    # The resolution the polygons were drawn at: (width, height) in pixels.
    reference_size: tuple[Annotated[int, Field(gt=0, le=16384)],
                          Annotated[int, Field(gt=0, le=16384)]]
    zones: Annotated[tuple[Zone, ...], Field(max_length=32)] = ()
    rules: Annotated[tuple[Rule, ...], Field(max_length=64)] = ()
    score_threshold: Annotated[float, Field(ge=0, le=1)] = 0.35
    tracker: TrackerSettings = TrackerSettings()
    ocr: OcrSettings | None = None  # None: this camera's frames are not read

    @model_validator(mode="after")
    def _consistent(self, info: ValidationInfo) -> CameraConfig:
        width, height = self.reference_size
        names = [z.name for z in self.zones]
        if twice := _twice(names):
            raise ValueError(f"zone name {twice!r} is used twice")
        for zone in self.zones:
            for x, y in zone.polygon:
                if not (0 <= x <= width and 0 <= y <= height):
                    raise ValueError(
                        f"zone {zone.name!r}: point ({x:g}, {y:g}) lies outside the "
                        f"{width}×{height} reference frame"
                    )
        if twice := _twice([r.name for r in self.rules]):
            raise ValueError(f"rule name {twice!r} is used twice; give the rules distinct names")
        for rule in self.rules:
            if rule.zone not in names:
                raise ValueError(
                    f"rule {rule.name!r} names zone {rule.zone!r}, which is not one of "
                    f"{sorted(names)}"
                )
        context = info.context or {}
        domain: Domain | None = context.get("domain")
        if domain is not None:
            _check_domain(self, domain)
        known: Collection[str] | None = context.get("classes")
        if known is not None:
            for rule in self.rules:
                unknown = sorted(set(rule.classes) - set(known))
                if unknown:
                    raise ValueError(
                        f"rule {rule.name!r}: the detector has no class {unknown}"
                    )
        return self

    def zone(self, name: str) -> Zone:
        for zone in self.zones:
            if zone.name == name:
                return zone
        raise KeyError(f"camera {self.camera_id!r} has no zone {name!r}")

    def zone_polygons(self, width: int, height: int) -> dict[str, tuple[Point, ...]]:
        """Each zone's polygon in a frame of this size. A frame of another size is taken as
        the reference picture resized (stretched), as a stream's second profile is."""
        sx, sy = width / self.reference_size[0], height / self.reference_size[1]
        return {z.name: z.scaled(sx, sy) for z in self.zones}

    @property
    def named_classes(self) -> frozenset[str]:
        """The classes the rules name, and the tracker's extra ones."""
        named = {c for rule in self.rules for c in rule.classes}
        return frozenset(named | set(self.tracker.extra_classes))


def _twice(names: list[str]) -> str | None:
    return next((n for i, n in enumerate(names) if n in names[:i]), None)


def _check_domain(config: CameraConfig, domain: Domain) -> None:
    for rule in config.rules:
        if rule.code is not None and rule.code not in domain.event_types:
            raise ValueError(f"rule {rule.name!r}: code {rule.code!r} is not in the taxonomy")
    loc = config.location
    if loc.district is not None and domain.canonical_district(loc.district) is None:
        raise ValueError(f"location.district {loc.district!r} is not a district of the city")
    if loc.location_type is not None and loc.location_type not in domain.location_types:
        raise ValueError(
            f"location.location_type {loc.location_type!r} is not one of "
            f"{list(domain.location_types)}"
        )


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False):
        where = ".".join(str(p) for p in err["loc"])
        message = err["msg"].removeprefix("Value error, ")
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts)


def parse_camera_config(
    data: object,
    domain: Domain | None = None,
    classes: Collection[str] | None = None,
    source: str = "camera config",
) -> CameraConfig:
    """Validate decoded JSON as a camera's configuration. With ``domain``, codes, district
    and location type must be the city's; with ``classes``, the rules' classes must be
    among the detector's."""
    context = {"domain": domain, "classes": classes}
    try:
        return CameraConfig.model_validate(data, context=context)
    except ValidationError as exc:
        raise CameraConfigError(f"{source}: {_describe(exc)}") from exc


def load_camera_config(
    path: Path, domain: Domain | None = None, classes: Collection[str] | None = None
) -> CameraConfig:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CameraConfigError(f"cannot read camera config {path}: {exc.strerror}") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CameraConfigError(f"camera config {path} is not valid JSON: {exc}") from exc
    return parse_camera_config(data, domain, classes, source=str(path))


def load_camera_configs(
    paths: Iterable[Path] | Path,
    domain: Domain | None = None,
    classes: Collection[str] | None = None,
) -> dict[str, CameraConfig]:
    """Every camera's configuration by camera id, from a folder's ``*.json`` or a list of
    files; two files for one camera id is an error."""
    files = sorted(paths.glob("*.json")) if isinstance(paths, Path) else list(paths)
    configs: dict[str, CameraConfig] = {}
    where: dict[str, Path] = {}
    for path in files:
        config = load_camera_config(path, domain, classes)
        if config.camera_id in configs:
            raise CameraConfigError(
                f"camera {config.camera_id!r} is configured twice: {where[config.camera_id]} "
                f"and {path}"
            )
        configs[config.camera_id] = config
        where[config.camera_id] = path
    return configs
