"""The dispatch rule: which unit handles an event (pure; the domain file decides).

``route`` is the rule's unit template before it is tied to a place: ``D:<department>`` (a
district department), ``S`` (the street office or town government), ``U:<utility>`` (a
citywide utility). ``unit_for`` ties a route to a district and street. The simulator labels
history with it, the router's labels are routes read back from dispatched units with
``route_of_unit``, and the dispatch stage expands its chosen route with the same code.
"""

from __future__ import annotations

from dataclasses import dataclass

from schemas.domain import Domain

STREET_ROUTE = "S"
BY_OWNER = "by_owner"
UNKNOWN_OWNER = "unknown"


class RuleError(ValueError):
    """The rule cannot be applied: an unknown code, location type or route."""


@dataclass(frozen=True, slots=True)
class UnitResolution:
    """A route tied to a place; ``unit`` is None when the place does not settle it."""

    route: str
    unit: str | None
    missing: str | None = None  # what was needed and not known: "district" or "street"


def route_for(domain: Domain, code: str, location_type: str | None, owner: str | None) -> str:
    """The rule's route for an event type at a location type (and owner, for covers)."""
    event_type = domain.event_types.get(code)
    if event_type is None:
        raise RuleError(f"unknown event code {code!r}")
    if location_type is not None and location_type not in domain.location_types:
        raise RuleError(f"unknown location type {location_type!r}")
    route = event_type.location_overrides.get(location_type or "", event_type.default_unit)
    if route == BY_OWNER:
        route = domain.owner_routes.get(owner or UNKNOWN_OWNER) or domain.owner_routes.get(
            UNKNOWN_OWNER, ""
        )
        if not route:
            raise RuleError(f"no owner route for owner {owner!r} and no 'unknown' route")
    return route


def street_office(street: str) -> str:
    """A street's handling unit: a 街道's office, or a 镇's government."""
    if street.endswith("镇"):
        return f"{street}人民政府"
    return f"{street}办事处"


def unit_for(
    domain: Domain, route: str, district: str | None, street: str | None
) -> UnitResolution:
    """Expand a route with the event's district and street, as in the domain's unit_rules."""
    if route == STREET_ROUTE:
        if street is None:
            return UnitResolution(route, None, "street")
        if street not in domain.street_district:
            raise RuleError(f"unknown street {street!r}")
        return UnitResolution(route, street_office(street))
    kind, _, name = route.partition(":")
    if kind == "U":
        utility = domain.utilities.get(name)
        if utility is None:
            raise RuleError(f"unknown utility {name!r} in route {route!r}")
        return UnitResolution(route, utility)
    if kind == "D":
        if name not in domain.departments:
            raise RuleError(f"unknown department {name!r} in route {route!r}")
        if district is None:
            return UnitResolution(route, None, "district")
        return UnitResolution(route, f"{district}{name}")
    raise RuleError(f"route {route!r} is not D:<department>, S or U:<utility>")


def dispatch_unit(
    domain: Domain,
    code: str,
    location_type: str | None,
    owner: str | None,
    district: str | None,
    street: str | None,
) -> UnitResolution:
    """The whole rule: route for (code, location type, owner), tied to district/street."""
    return unit_for(domain, route_for(domain, code, location_type, owner), district, street)


def route_of_unit(domain: Domain, unit: str) -> str | None:
    """Read the route back from a dispatched unit's name (None if it is none of ours)."""
    for key, name in domain.utilities.items():
        if unit == name:
            return f"U:{key}"
    for street in domain.street_district:
        if unit == street_office(street):
            return STREET_ROUTE
    for district in domain.districts:
        if unit.startswith(district) and unit[len(district) :] in domain.departments:
            return f"D:{unit[len(district):]}"
    return None


def all_units(domain: Domain) -> tuple[str, ...]:
    """Every unit an event can go to (what a dispatcher may choose when correcting):
    utilities, each district's departments, then every street office."""
    utilities = sorted(set(domain.utilities.values()))
    departments = [f"{d}{name}" for d in domain.districts for name in domain.departments]
    offices = [street_office(s) for s in domain.street_district]
    return (*utilities, *departments, *offices)


def all_routes(domain: Domain) -> tuple[str, ...]:
    """Every route the rule can produce, in a stable order (the router's label set)."""
    routes: set[str] = set()
    for event_type in domain.event_types.values():
        for route in (event_type.default_unit, *event_type.location_overrides.values()):
            if route == BY_OWNER:
                routes.update(domain.owner_routes.values())
            else:
                routes.add(route)
    return tuple(sorted(routes))


# Words that name a manhole or its cover; a marking counts only near one of them, so
# "污水外溢" in a drainage complaint does not make an unrelated cover the sewer's.
_COVER_WORDS = (
    "井盖", "窨井", "检查井", "雨水井", "污水井", "盖板", "井口", "井圈", "井", "盖子", "盖面",
    "盖上", "铁盖",
)
_NEAR = 16


def _is_verb_use(text: str, start: int, marking: str) -> bool:
    # 移动 is also the verb "moved": 井盖被移动了 names no owner.
    return marking == "移动" and (
        text[start - 1 : start] == "被" or text[start + 2 : start + 3] in ("了", "位", "过")
    )


def read_owner(domain: Domain, text: str) -> str:
    """The facility owner named by a cover's marking in the text, else ``unknown``.

    When two different owners are named (a report about two covers) the owner is
    ambiguous and stays ``unknown``: the rule's fallback unit sorts it out."""
    cover_at = [i for word in _COVER_WORDS for i in _positions(text, word)]
    owners: set[str] = set()
    for marking, owner in domain.owner_markings.items():
        for start in _positions(text, marking):
            near = any(abs(start - i) <= _NEAR for i in cover_at)
            if near and not _is_verb_use(text, start, marking):
                owners.add(owner)
    return owners.pop() if len(owners) == 1 else UNKNOWN_OWNER


def _positions(text: str, word: str) -> list[int]:
    found: list[int] = []
    start = text.find(word)
    while start != -1:
        found.append(start)
        start = text.find(word, start + 1)
    return found
