"""A tiny template language for the simulator's Chinese text material.

``{a|b|c}`` picks one alternative (``{a|}`` makes ``a`` optional). A line may start with a
location tag, ``@res,vil `` (only for those location types) or ``@!res `` (all but those),
because a phrase that names a place ("小区楼下", "路边") must not be glued to an address of
another location type: the location type decides the unit and has to be readable in the text.

Templates are compiled once at import; rendering is a join over pre-split parts, which keeps
50,000 records well within a few seconds.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

LOCATION_ABBR: dict[str, str] = {
    "mr": "main_road",
    "bs": "back_street",
    "res": "residential",
    "com": "commercial",
    "park": "park_square",
    "wf": "waterfront",
    "cs": "construction_site",
    "vil": "village",
    "ind": "industrial",
}
ALL_LOCATIONS: tuple[str, ...] = tuple(LOCATION_ABBR.values())
_GROUPS: dict[str, tuple[str, ...]] = {
    "street": ("main_road", "back_street", "commercial"),
    "road": ("main_road", "back_street"),
}

Part = str | tuple[str, ...]


class GrammarError(ValueError):
    """A template line is malformed (unbalanced braces, unknown location tag)."""


def _expand_tag(token: str) -> tuple[str, ...]:
    if token in LOCATION_ABBR:
        return (LOCATION_ABBR[token],)
    if token in _GROUPS:
        return _GROUPS[token]
    raise GrammarError(f"unknown location tag {token!r}")


def parse_locs(tag: str) -> frozenset[str]:
    """``res,vil`` -> those location types; ``!res,vil`` -> every type but those."""
    tokens = [t.strip() for t in tag.split(",") if t.strip()]
    if tokens and tokens[0].startswith("!"):
        excluded = {loc for t in tokens for loc in _expand_tag(t.removeprefix("!"))}
        return frozenset(loc for loc in ALL_LOCATIONS if loc not in excluded)
    return frozenset(loc for t in tokens for loc in _expand_tag(t))


@dataclass(frozen=True, slots=True)
class Template:
    parts: tuple[Part, ...]
    locs: frozenset[str] | None  # None: suits every location type

    def render(self, rng: random.Random) -> str:
        return "".join(
            p if isinstance(p, str) else p[int(rng.random() * len(p))] for p in self.parts
        )


def compile_template(line: str) -> Template:
    locs: frozenset[str] | None = None
    text = line.strip()
    if text.startswith("@"):
        tag, _, text = text[1:].partition(" ")
        locs = parse_locs(tag)
        text = text.strip()
    parts: list[Part] = []
    i = 0
    while i < len(text):
        start = text.find("{", i)
        if start == -1:
            parts.append(text[i:])
            break
        if start > i:
            parts.append(text[i:start])
        end = text.find("}", start)
        if end == -1 or "{" in text[start + 1 : end]:
            raise GrammarError(f"unbalanced braces in {line!r}")
        parts.append(tuple(text[start + 1 : end].split("|")))
        i = end + 1
    if "}" in "".join(p for p in parts if isinstance(p, str)):
        raise GrammarError(f"stray '}}' in {line!r}")
    return Template(tuple(parts), locs)


class Phrases:
    """A list of templates, pre-split by the location types they suit."""

    __slots__ = ("templates", "_by_loc")

    def __init__(self, block: str) -> None:
        self.templates: tuple[Template, ...] = tuple(
            compile_template(line) for line in block.splitlines() if line.strip()
        )
        self._by_loc: dict[str, tuple[Template, ...]] = {
            loc: tuple(t for t in self.templates if t.locs is None or loc in t.locs)
            for loc in ALL_LOCATIONS
        }

    def __len__(self) -> int:
        return len(self.templates)

    def for_loc(self, loc: str | None) -> tuple[Template, ...]:
        return self.templates if loc is None else self._by_loc[loc]

    def pick(self, rng: random.Random, loc: str | None = None) -> str:
        """One rendered phrase suiting ``loc``; "" when none does."""
        pool = self.for_loc(loc)
        if not pool:
            return ""
        return pool[int(rng.random() * len(pool))].render(rng)


def pick(rng: random.Random, options: tuple[str, ...]) -> str:
    return options[int(rng.random() * len(options))]


def weighted(pairs: str) -> tuple[tuple[str, ...], tuple[float, ...]]:
    """``"mr:3 res:4"`` -> (("main_road", "residential"), cumulative weights)."""
    names: list[str] = []
    cum: list[float] = []
    total = 0.0
    for item in pairs.split():
        key, _, weight = item.partition(":")
        names.append(LOCATION_ABBR.get(key, key))
        total += float(weight)
        cum.append(total)
    return tuple(names), tuple(cum)
