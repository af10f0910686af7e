"""The reference domain (districts, streets, roads, taxonomy, departments).

Loaded from the JSON file named by ``Settings.domain_file``; a deployment swaps in
its own records with the same shape.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class DomainError(ValueError):
    """The domain file is missing or not in the expected shape."""


# "上水/自来水 water, 污水 sewer, ..." inside the by_owner rule's parenthesis.
_MARKING_PAIR = re.compile(r"([^\s,，:：()（）]+)\s+([a-z_]+)")


def _owner_markings(by_owner_rule: str) -> dict[str, str]:
    """Cover marking -> owner key, read from the domain's own by_owner rule text so that a
    deployment's file (not our code) says which markings exist."""
    inside = re.search(r"\(([^)]*)\)", by_owner_rule)
    if inside is None:
        return {}
    markings: dict[str, str] = {}
    for words, owner in _MARKING_PAIR.findall(inside.group(1)):
        if owner == "markings":
            continue
        for word in words.split("/"):
            word = word.removeprefix("cover:").strip()
            if word and not word.isascii():
                markings[word] = owner
    return markings


@dataclass(frozen=True, slots=True)
class EventType:
    code: str
    event_class: str
    name: str
    urgency: str
    default_unit: str
    # location_type -> unit route that replaces default_unit there (the dispatch rule).
    location_overrides: dict[str, str] = field(default_factory=dict)
    description: str = ""


@dataclass(frozen=True, slots=True)
class Domain:
    version: int
    districts: tuple[str, ...]
    # Every accepted spelling (canonical names and aliases) -> canonical district.
    district_names: dict[str, str]
    # street -> district; a street names exactly one district in the reference data.
    street_district: dict[str, str]
    # road -> districts it runs through (some roads exist in more than one district).
    road_districts: dict[str, tuple[str, ...]]
    location_types: tuple[str, ...]
    event_types: dict[str, EventType]
    urgency_minutes: dict[str, int]
    # department name -> what it handles.
    departments: dict[str, str] = field(default_factory=dict)
    # utility key (water, gas...) -> the citywide company's name.
    utilities: dict[str, str] = field(default_factory=dict)
    # facility owner (read from a manhole cover's marking) -> unit route.
    owner_routes: dict[str, str] = field(default_factory=dict)
    # marking on a cover -> owner key, parsed from unit_rules["by_owner"].
    owner_markings: dict[str, str] = field(default_factory=dict)

    def canonical_district(self, name: str) -> str | None:
        return self.district_names.get(name)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Domain:
        try:
            district_names: dict[str, str] = {}
            street_district: dict[str, str] = {}
            road_districts: dict[str, list[str]] = {}
            for district, info in data["districts"].items():
                district_names[district] = district
                for alias in info.get("aliases", []):
                    district_names[alias] = district
                for street in info["streets"]:
                    street_district[street] = district
                for road in info.get("roads", []):
                    road_districts.setdefault(road, []).append(district)
            event_types = {
                t["code"]: EventType(
                    code=t["code"],
                    event_class=t["class"],
                    name=t["name"],
                    urgency=t["urgency"],
                    default_unit=t.get("default_unit", ""),
                    location_overrides=dict(t.get("location_overrides", {})),
                    description=t.get("description", ""),
                )
                for t in data["taxonomy"]
            }
            return cls(
                version=int(data.get("version", 1)),
                districts=tuple(data["districts"]),
                district_names=district_names,
                street_district=street_district,
                road_districts={k: tuple(v) for k, v in road_districts.items()},
                location_types=tuple(data["location_types"]),
                event_types=event_types,
                urgency_minutes={
                    k: int(v["respond_minutes"]) for k, v in data["urgency_levels"].items()
                },
                departments=dict(data.get("departments", {})),
                utilities=dict(data.get("utilities", {})),
                owner_routes=dict(data.get("owner_routes", {})),
                owner_markings=_owner_markings(data.get("unit_rules", {}).get("by_owner", "")),
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise DomainError(f"domain data is not in the expected shape: {exc!r}") from exc

    @classmethod
    def load(cls, path: Path) -> Domain:
        try:
            raw = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise DomainError(
                f"cannot read the domain file {path} ({exc.strerror}); "
                "set CITYSTREAM_DOMAIN_FILE to your deployment's domain JSON"
            ) from exc
        try:
            return cls.from_dict(json.loads(raw))
        except json.JSONDecodeError as exc:
            raise DomainError(f"domain file {path} is not valid JSON: {exc}") from exc
