"""Composed scenes for the city classes the COCO model lacks: real background photos with
objects rendered procedurally and pasted on, each with its exact box. Pure numpy + cv2,
seeded: the same seed, index and inputs give the same scene, byte for byte.

No package we can install carries photos of garbage piles, vendor stalls, fallen trees,
potholes, fires or flooded roads, so the objects are drawn here:

* ``garbage_pile`` (A01): a heap of bags and cartons, irregular shaded blobs, with debris;
* ``vendor_stall`` (D01): a striped canopy on poles over a table of goods;
* ``fallen_tree`` (F01): a bark-textured trunk lying across, branches and a leafy crown
  (the crown textured with scikit-image's ``grass.png``);
* ``pothole`` (E03): a dark broken patch of the road itself, gravel-textured
  (``gravel.png``), with a crumbled rim, flattened by perspective;
* ``smoke_fire`` (K02): noise flames in fire colours under a rising grey plume (sometimes
  smoke alone);
* ``road_water`` (E05): a flat puddle reflecting the scene above it, with specular glints.

Upright objects are scaled by their distance from a random horizon, warped slightly,
lit like the ground around them, blurred and given a contact shadow; flat ones are
rendered from the ground they lie on. Backgrounds (``models.vision.city`` loads them)
already show people, cars and bicycles: the original detector's confident detections on
them become labels too (``add_pseudo_labels``), so fine-tuning keeps the COCO classes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

CITY_CLASSES = (
    "garbage_pile", "vendor_stall", "fallen_tree", "pothole", "smoke_fire", "road_water",
)  # fmt: skip
# The event codes of /work/shared/domain/qingdao.json's taxonomy each class reports.
CITY_CODES = {
    "garbage_pile": "A01",  # 暴露垃圾
    "vendor_stall": "D01",  # 占道经营
    "fallen_tree": "F01",  # 树木倒伏
    "pothole": "E03",  # 道路破损
    "smoke_fire": "K02",  # 火情烟雾
    "road_water": "E05",  # 排水不畅 (雨后积水)
}
SCENE_WIDTH, SCENE_HEIGHT = 640, 480
TEXTURE_NAMES = ("gravel", "grass")
# Smoke is faint at its edges: its box is where it is at least this opaque.
_BOX_ALPHA = {"smoke_fire": 0.25}
_MIN_BOX = 14  # pixels on the 640×480 scene: smaller objects are not labelled, not pasted


@dataclass(frozen=True)
class Scene:
    """A composed scene: ``image`` BGR uint8; ``boxes`` [K, 4] (x1, y1, x2, y2) in its
    pixels, ``labels`` [K] class names; ``pasted`` marks pixels covered by pasted objects;
    ``background`` is the cropped photo before pasting (for pseudo-labels)."""

    image: np.ndarray
    boxes: np.ndarray
    labels: tuple[str, ...]
    pasted: np.ndarray
    background: np.ndarray
    source: str
    pseudo: tuple[bool, ...] = field(default=())


# ------------------------------------------------------------------------------- noise


def fractal_noise(
    rng: np.random.Generator, h: int, w: int, base: int = 3, octaves: int = 4
) -> np.ndarray:
    """Smooth value noise in 0..1, [h, w] float32: octaves of upsampled random grids."""
    out = np.zeros((h, w), np.float32)
    amp, total = 1.0, 0.0
    for octave in range(octaves):
        cells = base * 2**octave
        gh = max(2, round(cells * h / max(h, w))) + 1
        gw = max(2, round(cells * w / max(h, w))) + 1
        grid = rng.random((gh, gw)).astype(np.float32)
        out += amp * cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)
        total += amp
        amp *= 0.5
    out /= total
    lo, hi = float(out.min()), float(out.max())
    return (out - lo) / (hi - lo) if hi > lo else np.zeros_like(out)


def blob_mask(
    rng: np.random.Generator, h: int, w: int, irregularity: float = 0.3, points: int = 18
) -> np.ndarray:
    """An irregular closed shape filling an h×w box, as a float32 mask 0..1 (anti-aliased)."""
    angles = np.linspace(0, 2 * np.pi, points, endpoint=False)
    # Smooth radius changes: random values circularly blurred.
    raw = rng.normal(0, 1, points)
    smooth = np.array([raw[(np.arange(i - 2, i + 3)) % points].mean() for i in range(points)])
    radii = np.clip(1.0 + irregularity * smooth / (smooth.std() + 1e-6), 0.45, 1.6)
    radii /= radii.max()
    xs = (w - 1) / 2 + radii * np.cos(angles) * (w - 1) / 2
    ys = (h - 1) / 2 + radii * np.sin(angles) * (h - 1) / 2
    mask = np.zeros((h, w), np.uint8)
    pts = np.stack([xs, ys], axis=1) * 16
    cv2.fillPoly(mask, [pts.astype(np.int32)], 255, lineType=cv2.LINE_AA, shift=4)
    return mask.astype(np.float32) / 255.0


def _texture(
    textures: Mapping[str, np.ndarray], name: str, rng: np.random.Generator, h: int, w: int
) -> np.ndarray:
    """A random crop of a grey texture, resized to h×w, float32 0..1."""
    tex = textures[name]
    th, tw = tex.shape[:2]
    scale = rng.uniform(0.3, 1.0)
    ch, cw = max(8, int(th * scale)), max(8, int(tw * scale))
    y, x = int(rng.integers(0, th - ch + 1)), int(rng.integers(0, tw - cw + 1))
    crop = tex[y : y + ch, x : x + cw].astype(np.float32) / 255.0
    return cv2.resize(crop, (w, h), interpolation=cv2.INTER_LINEAR)


def _shade(rgb: Sequence[float], h: int, w: int) -> np.ndarray:
    return np.broadcast_to(np.asarray(rgb, np.float32), (h, w, 3)).copy()


# --------------------------------------------------------------------------- renderers
# Each upright renderer returns (patch BGR float32 0..255, alpha float32 0..1) of size h×w.

_BAG_COLOURS = (
    (30, 30, 32), (38, 72, 42), (150, 95, 40), (215, 215, 210), (70, 120, 170),
    (60, 160, 200), (40, 40, 150), (120, 120, 120), (90, 150, 190), (200, 190, 160),
)  # fmt: skip


def render_garbage(
    rng: np.random.Generator, w: int, h: int, textures: Mapping[str, np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    patch = np.zeros((h, w, 3), np.float32)
    alpha = np.zeros((h, w), np.float32)
    count = int(rng.integers(4, 13))
    # Lower bags first, so higher ones sit on top.
    items = sorted(
        ((rng.uniform(0.2, 0.8), rng.uniform(0.45, 0.85) ** 0.7) for _ in range(count)),
        key=lambda p: -p[1],
    )
    for cx, cy in items:
        bw = int(w * rng.uniform(0.18, 0.42))
        bh = int(bw * rng.uniform(0.6, 1.1))
        bw, bh = max(bw, 6), max(bh, 6)
        x0 = int(np.clip(cx * w - bw / 2, 0, w - bw))
        y0 = int(np.clip(cy * h - bh / 2 + (h - cy * h) * 0.3, 0, h - bh))
        carton = rng.random() < 0.25
        if carton:
            mask = np.zeros((bh, bw), np.float32)
            cv2.rectangle(mask, (1, 1), (bw - 2, bh - 2), 1.0, -1)
            colour = (
                70 + rng.uniform(-15, 15),
                120 + rng.uniform(-20, 20),
                165 + rng.uniform(-20, 20),
            )
        else:
            mask = blob_mask(rng, bh, bw, irregularity=rng.uniform(0.15, 0.4))
            colour = _BAG_COLOURS[int(rng.integers(len(_BAG_COLOURS)))]
        wrinkles = fractal_noise(rng, bh, bw, base=int(rng.integers(3, 7)))
        light = np.linspace(1.25, 0.65, bh, dtype=np.float32)[:, None]  # lit from above
        shade = (0.7 + 0.6 * wrinkles) * light
        colour_img = _shade(colour, bh, bw) * shade[..., None]
        if not carton:
            # A glossy highlight where the bag bulges towards the light.
            hx, hy = rng.uniform(0.3, 0.6) * bw, rng.uniform(0.2, 0.4) * bh
            yy, xx = np.mgrid[0:bh, 0:bw]
            glint = np.exp(-(((xx - hx) / (0.2 * bw)) ** 2 + ((yy - hy) / (0.15 * bh)) ** 2))
            colour_img += (60 * rng.uniform(0.2, 1.0) * glint)[..., None]
        region = (slice(y0, y0 + bh), slice(x0, x0 + bw))
        patch[region] = patch[region] * (1 - mask[..., None]) + colour_img * mask[..., None]
        alpha[region] = np.maximum(alpha[region], mask)
    # Loose debris at the foot of the heap.
    for _ in range(int(rng.integers(3, 15))):
        dw, dh = int(rng.integers(2, max(3, w // 12))), int(rng.integers(2, max(3, h // 14)))
        x, y = (
            int(rng.integers(0, max(1, w - dw))),
            int(rng.integers(int(h * 0.75), max(int(h * 0.75) + 1, h - dh))),
        )
        colour = _BAG_COLOURS[int(rng.integers(len(_BAG_COLOURS)))]
        cv2.rectangle(patch, (x, y), (x + dw, y + dh), colour, -1)
        cv2.rectangle(alpha, (x, y), (x + dw, y + dh), 1.0, -1)
    return patch, alpha


_CANOPY_COLOURS = (
    ((40, 40, 200), (235, 235, 235)), ((180, 110, 30), (235, 235, 235)),
    ((50, 150, 40), (230, 230, 230)), ((30, 140, 240), (40, 40, 200)),
    ((170, 100, 20), (170, 100, 20)), ((200, 60, 30), (40, 200, 230)),
    ((60, 60, 60), (60, 60, 60)), ((40, 180, 220), (40, 180, 220)),
)  # fmt: skip


def render_stall(
    rng: np.random.Generator, w: int, h: int, textures: Mapping[str, np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    patch = np.zeros((h, w, 3), np.float32)
    alpha = np.zeros((h, w), np.float32)
    canopy_h = int(h * rng.uniform(0.22, 0.38))
    first, second = _CANOPY_COLOURS[int(rng.integers(len(_CANOPY_COLOURS)))]
    stripes = int(rng.integers(4, 12))
    top_inset = rng.uniform(0.0, 0.18) * w  # a trapezoid: the canopy slopes away
    pts = np.array([[top_inset, 0], [w - 1 - top_inset, 0], [w - 1, canopy_h], [0, canopy_h]])
    canopy_mask = np.zeros((h, w), np.float32)
    cv2.fillPoly(canopy_mask, [pts.astype(np.int32)], 1.0)
    xs = np.arange(w)
    stripe = ((xs * stripes // w) % 2).astype(np.float32)[None, :, None]
    canopy = _shade(first, h, w) * (1 - stripe) + _shade(second, h, w) * stripe
    canopy *= np.linspace(1.15, 0.8, h, dtype=np.float32)[:, None, None]
    canopy *= (0.85 + 0.3 * fractal_noise(rng, h, w, base=4))[..., None]
    # A scalloped valance along the canopy's lower edge.
    scallops = int(rng.integers(0, 2)) * stripes
    if scallops:
        r = max(2, w // (2 * scallops))
        for k in range(scallops):
            cx = int((k + 0.5) * w / scallops)
            cv2.circle(canopy_mask, (cx, canopy_h), r, 1.0, -1)
    patch = canopy * canopy_mask[..., None]
    alpha = canopy_mask.copy()
    # Poles down to the ground.
    pole_w = max(1, w // 60)
    for px in (int(w * 0.04), int(w * 0.96)) if rng.random() < 0.7 else (int(w * 0.5),):
        cv2.rectangle(patch, (px - pole_w, canopy_h), (px + pole_w, h - 1), (50, 50, 55), -1)
        cv2.rectangle(alpha, (px - pole_w, canopy_h), (px + pole_w, h - 1), 1.0, -1)
    # The table, its cloth and the goods on it.
    table_top = int(h * rng.uniform(0.55, 0.7))
    tx0, tx1 = int(w * rng.uniform(0.02, 0.12)), int(w * rng.uniform(0.88, 0.98))
    cloth = tuple(float(c) for c in rng.uniform(40, 230, 3))
    cloth_bottom = int(h * rng.uniform(0.85, 1.0)) - 1
    cv2.rectangle(patch, (tx0, table_top), (tx1, cloth_bottom), cloth, -1)
    cv2.rectangle(alpha, (tx0, table_top), (tx1, cloth_bottom), 1.0, -1)
    for lx in (tx0 + 2, tx1 - 2):
        cv2.line(patch, (lx, cloth_bottom), (lx, h - 1), (40, 40, 40), max(1, pole_w))
        cv2.line(alpha, (lx, cloth_bottom), (lx, h - 1), 1.0, max(1, pole_w))
    goods_h = max(3, int(h * rng.uniform(0.06, 0.14)))
    x = tx0
    while x < tx1 - 3:
        gw = int(rng.integers(max(3, w // 25), max(4, w // 8)))
        gh = int(goods_h * rng.uniform(0.6, 1.3))
        colour = tuple(float(c) for c in rng.uniform(20, 250, 3))
        y0 = max(canopy_h + 1, table_top - gh)
        if rng.random() < 0.5:
            cv2.rectangle(patch, (x, y0), (min(tx1, x + gw), table_top), colour, -1)
            cv2.rectangle(alpha, (x, y0), (min(tx1, x + gw), table_top), 1.0, -1)
        else:
            centre = (x + gw // 2, table_top - gh // 2)
            cv2.ellipse(patch, centre, (max(1, gw // 2), max(1, gh // 2)), 0, 0, 360, colour, -1)
            cv2.ellipse(alpha, centre, (max(1, gw // 2), max(1, gh // 2)), 0, 0, 360, 1.0, -1)
        x += gw + int(rng.integers(0, 4))
    patch *= (0.9 + 0.2 * fractal_noise(rng, h, w, base=6))[..., None]
    return patch, alpha


def render_tree(
    rng: np.random.Generator, w: int, h: int, textures: Mapping[str, np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """A tree lying on its side: roots at the left, crown to the right (flipped at paste)."""
    patch = np.zeros((h, w, 3), np.float32)
    alpha = np.zeros((h, w), np.float32)
    base_y = h * rng.uniform(0.6, 0.8)
    t0, t1 = h * rng.uniform(0.16, 0.3), h * rng.uniform(0.06, 0.12)
    crown_start = rng.uniform(0.35, 0.55)
    trunk_end = rng.uniform(0.75, 0.95) * w
    # Trunk polygon, tapering; bark as noise stretched along the trunk.
    top = [(0, base_y - t0 / 2), (trunk_end, base_y - t1 / 2 - h * 0.05)]
    bottom = [(trunk_end, base_y + t1 / 2 - h * 0.05), (0, base_y + t0 / 2)]
    trunk_mask = np.zeros((h, w), np.float32)
    cv2.fillPoly(trunk_mask, [np.array(top + bottom, np.int32)], 1.0, lineType=cv2.LINE_AA)
    bark_noise = cv2.resize(
        rng.random((int(rng.integers(6, 14)), int(rng.integers(2, 5)))).astype(np.float32), (w, h)
    )
    bark_noise = (
        cv2.resize(fractal_noise(rng, max(4, h // 3), w, base=8), (w, h)) * 0.5 + 0.5 * bark_noise
    )
    bark = np.asarray((40, 65, 95), np.float32) * (0.6 + 0.8 * bark_noise[..., None])
    bark *= np.clip(1.2 - 0.8 * np.abs(np.linspace(-1, 1, h))[:, None, None], 0.4, 1.2)
    patch = bark * trunk_mask[..., None]
    alpha = trunk_mask.copy()
    # Branches leaving the crown part of the trunk.
    for _ in range(int(rng.integers(3, 8))):
        x0 = rng.uniform(crown_start, 0.9) * w
        y0 = base_y - h * 0.03
        x1 = x0 + rng.uniform(0.05, 0.2) * w
        y1 = rng.uniform(0.05, 0.5) * h if rng.random() < 0.7 else rng.uniform(base_y, h - 1)
        thick = max(1, int(t1 * rng.uniform(0.3, 0.6)))
        cv2.line(patch, (int(x0), int(y0)), (int(x1), int(y1)), (35, 55, 80), thick, cv2.LINE_AA)
        cv2.line(alpha, (int(x0), int(y0)), (int(x1), int(y1)), 1.0, thick, cv2.LINE_AA)
    # The crown: leafy clumps, ragged at the edges.
    cx0 = int(crown_start * w)
    crown_w, crown_h = w - cx0, int(h * rng.uniform(0.75, 0.98))
    leaves = np.zeros((crown_h, crown_w), np.float32)
    for _ in range(int(rng.integers(4, 9))):
        cw_, ch_ = int(crown_w * rng.uniform(0.3, 0.6)), int(crown_h * rng.uniform(0.35, 0.7))
        cw_, ch_ = max(cw_, 6), max(ch_, 6)
        x = int(rng.integers(0, max(1, crown_w - cw_)))
        y = int(rng.integers(0, max(1, crown_h - ch_)))
        leaves[y : y + ch_, x : x + cw_] = np.maximum(
            leaves[y : y + ch_, x : x + cw_], blob_mask(rng, ch_, cw_, 0.35)
        )
    ragged = fractal_noise(rng, crown_h, crown_w, base=12, octaves=3)
    leaves = np.clip((leaves * (0.6 + 0.8 * ragged) - 0.45) * 4, 0, 1)
    grass = _texture(textures, "grass", rng, crown_h, crown_w)
    hue = np.asarray((rng.uniform(20, 50), rng.uniform(90, 150), rng.uniform(40, 80)), np.float32)
    if rng.random() < 0.2:  # autumn leaves
        hue = np.asarray((30, rng.uniform(90, 140), rng.uniform(140, 190)), np.float32)
    foliage = hue * (0.45 + 1.0 * grass[..., None]) * (0.7 + 0.5 * ragged[..., None])
    y_off = int(max(0, base_y - crown_h * rng.uniform(0.55, 0.85)))
    crown_h = min(crown_h, h - y_off)
    region = (slice(y_off, y_off + crown_h), slice(cx0, cx0 + crown_w))
    leaves, foliage = leaves[:crown_h], foliage[:crown_h]
    patch[region] = patch[region] * (1 - leaves[..., None]) + foliage * leaves[..., None]
    alpha[region] = np.maximum(alpha[region], leaves)
    # Torn roots and earth at the base.
    if rng.random() < 0.6:
        rh, rw = max(6, int(t0 * 2.2)), max(6, int(w * 0.08))
        roots = blob_mask(rng, rh, rw, 0.5)
        y0 = int(np.clip(base_y - rh / 2, 0, h - rh))
        earth = (
            np.asarray((45, 60, 75), np.float32)
            * (0.6 + 0.6 * fractal_noise(rng, rh, rw, 6))[..., None]
        )
        patch[y0 : y0 + rh, :rw] = (
            patch[y0 : y0 + rh, :rw] * (1 - roots[..., None]) + earth * roots[..., None]
        )
        alpha[y0 : y0 + rh, :rw] = np.maximum(alpha[y0 : y0 + rh, :rw], roots)
    return patch, alpha


def _fire_ramp(heat: np.ndarray) -> np.ndarray:
    """Heat 0..1 → flame colour (BGR): dark red, orange, yellow, near white."""
    stops = np.array([0.0, 0.35, 0.65, 0.85, 1.0], np.float32)
    colours = np.array(
        [(10, 10, 90), (0, 40, 200), (10, 130, 250), (60, 220, 255), (210, 250, 255)], np.float32
    )
    return np.stack([np.interp(heat, stops, colours[:, c]) for c in range(3)], axis=-1)


def render_fire(
    rng: np.random.Generator, w: int, h: int, textures: Mapping[str, np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    u = (xx / max(w - 1, 1)) * 2 - 1  # -1..1 across
    v = 1 - yy / max(h - 1, 1)  # 0 at the bottom, 1 at the top
    smoke_only = rng.random() < 0.25
    flame_top = 0.0 if smoke_only else rng.uniform(0.25, 0.5)
    patch = np.zeros((h, w, 3), np.float32)
    alpha = np.zeros((h, w), np.float32)
    # Smoke: a plume widening as it rises, swaying, from the top of the flames up.
    sway = rng.uniform(-0.4, 0.4) * v**1.5
    width = 0.25 + 0.75 * v
    envelope = np.exp(-(((u - sway) / width) ** 2) * 2.5) * np.clip(v * 3, 0, 1)
    puffs = fractal_noise(rng, h, w, base=int(rng.integers(3, 6)), octaves=5)
    density = np.clip(envelope * (0.4 + puffs) - 0.2, 0, 1) * rng.uniform(0.6, 0.95)
    grey = rng.uniform(50, 200)
    smoke = _shade((grey, grey, grey * rng.uniform(0.95, 1.05)), h, w)
    smoke *= (0.75 + 0.5 * puffs)[..., None]
    patch += smoke * density[..., None]
    alpha = np.maximum(alpha, density)
    if not smoke_only:
        flicker = fractal_noise(rng, h, w, base=int(rng.integers(6, 12)), octaves=4)
        # Several tongues of different heights, leaning with the plume.
        tongues = np.zeros((h, w), np.float32)
        for _ in range(int(rng.integers(2, 6))):
            cx, top = rng.normal(0, 0.22), flame_top * rng.uniform(0.45, 1.0)
            spread, lean = rng.uniform(0.15, 0.4), rng.uniform(-0.5, 0.5)
            profile = np.clip(1 - v / top, 0, 1)
            tongue = np.exp(-(((u - cx - lean * v) / (spread * (profile**0.7 + 0.05))) ** 2))
            tongues = np.maximum(tongues, tongue * profile**0.5)
        heat = np.clip(tongues * (0.4 + 1.0 * flicker) * 1.3 - 0.15, 0, 1)
        flame_alpha = np.clip(heat * 2.5, 0, 1)
        flame = _fire_ramp(heat)
        patch = patch * (1 - flame_alpha[..., None]) + flame * flame_alpha[..., None]
        alpha = np.maximum(alpha, flame_alpha)
        # Whatever burns: a dark heap at the base.
        bh = max(4, int(h * 0.08))
        fuel = blob_mask(rng, bh, max(6, int(w * 0.7)), 0.4)
        x0 = (w - fuel.shape[1]) // 2
        region = (slice(h - bh, h), slice(x0, x0 + fuel.shape[1]))
        patch[region] = patch[region] * (1 - fuel[..., None]) + 25 * fuel[..., None]
        alpha[region] = np.maximum(alpha[region], fuel)
    return patch, alpha


UPRIGHT: dict[str, Callable[..., tuple[np.ndarray, np.ndarray]]] = {
    "garbage_pile": render_garbage,
    "vendor_stall": render_stall,
    "fallen_tree": render_tree,
    "smoke_fire": render_fire,
}
# Width (fraction of the scene's width, at the bottom edge) and height/width ratio.
_SIZE = {
    "garbage_pile": (0.3, (0.45, 0.8)),
    "vendor_stall": (0.45, (0.7, 1.0)),
    "fallen_tree": (0.75, (0.3, 0.45)),
    "smoke_fire": (0.22, (1.2, 2.2)),
    "pothole": (0.3, (0.25, 0.5)),
    "road_water": (0.5, (0.18, 0.4)),
}


# --------------------------------------------------------------------- flat renderers
# Rendered from the ground under them: (spot on the canvas) → (patch, alpha) of its size.


@dataclass(frozen=True)
class Spot:
    """Where a flat object goes: the float canvas and the box (x, y, w, h) on it."""

    canvas: np.ndarray
    x: int
    y: int
    w: int
    h: int

    def ground(self) -> np.ndarray:
        return self.canvas[self.y : self.y + self.h, self.x : self.x + self.w].astype(np.float32)


def render_pothole(
    rng: np.random.Generator, spot: Spot, textures: Mapping[str, np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    ground, h, w = spot.ground(), spot.h, spot.w
    mask = blob_mask(rng, h, w, irregularity=rng.uniform(0.25, 0.5), points=24)
    # A ragged edge: the asphalt breaks off unevenly.
    mask = np.clip(
        (mask * (0.75 + 0.5 * fractal_noise(rng, h, w, base=10, octaves=3)) - 0.3) * 3, 0, 1
    )
    inner = cv2.erode(mask, np.ones((3, 3), np.uint8), iterations=max(1, min(h, w) // 12))
    rim = np.clip(mask - inner, 0, 1)
    gravel = _texture(textures, "gravel", rng, h, w)
    depth = np.linspace(rng.uniform(0.25, 0.45), rng.uniform(0.5, 0.8), h, dtype=np.float32)[
        :, None
    ]
    mean = ground.reshape(-1, 3).mean(axis=0)
    hole = (0.5 * ground + 0.5 * mean) * depth[..., None] * (0.5 + 0.9 * gravel[..., None])
    crumbs = ground * (0.85 + 0.35 * gravel[..., None])
    patch = hole * inner[..., None] + crumbs * (rim * (1 - inner))[..., None]
    if rng.random() < 0.3:  # rain left in it
        water = np.clip(inner - 0.3, 0, 1) * rng.uniform(0.4, 0.8)
        patch = (
            patch * (1 - water[..., None])
            + (mean * 0.35 + np.array([20, 10, 0])) * water[..., None]
        )
    return patch, mask


def render_water(
    rng: np.random.Generator, spot: Spot, textures: Mapping[str, np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    ground, h, w = spot.ground(), spot.h, spot.w
    mask = np.zeros((h, w), np.float32)
    for _ in range(int(rng.integers(1, 4))):
        bw, bh = int(w * rng.uniform(0.5, 1.0)), int(h * rng.uniform(0.5, 1.0))
        bw, bh = max(bw, 4), max(bh, 4)
        bx, by = int(rng.integers(0, w - bw + 1)), int(rng.integers(0, h - bh + 1))
        mask[by : by + bh, bx : bx + bw] = np.maximum(
            mask[by : by + bh, bx : bx + bw], blob_mask(rng, bh, bw, 0.4)
        )
    mask = cv2.GaussianBlur(mask, (0, 0), max(1.0, min(h, w) / 30))
    # The reflection: the scene above the puddle, upside down and squashed, blurred.
    above_h = min(spot.y, h * 3)
    if above_h >= 4:
        above = spot.canvas[spot.y - above_h : spot.y, spot.x : spot.x + w][::-1].astype(np.float32)
        reflection = cv2.resize(above, (w, h), interpolation=cv2.INTER_AREA)
    else:
        reflection = np.full((h, w, 3), 180, np.float32)
    reflection = cv2.GaussianBlur(reflection, (0, 0), rng.uniform(0.8, 3.0))
    ripple = fractal_noise(rng, h, w, base=int(rng.integers(6, 14)), octaves=3)
    tint = np.array([rng.uniform(1.0, 1.2), 1.0, rng.uniform(0.8, 1.0)], np.float32)
    mirror = rng.uniform(0.35, 0.7)
    water = ground * 0.45 * (1 - mirror) + reflection * mirror * tint * (
        0.8 + 0.3 * ripple[..., None]
    )
    glints = (rng.random((h, w)) > rng.uniform(0.994, 0.9995)).astype(np.float32)
    glints = cv2.GaussianBlur(glints, (0, 0), 0.8) * 3
    water += rng.uniform(80, 200) * np.clip(glints, 0, 1)[..., None]
    return water, mask


FLAT: dict[str, Callable[..., tuple[np.ndarray, np.ndarray]]] = {
    "pothole": render_pothole,
    "road_water": render_water,
}
assert set(UPRIGHT) | set(FLAT) == set(CITY_CLASSES)


# ----------------------------------------------------------------------------- pasting


def _warp(
    rng: np.random.Generator, patch: np.ndarray, alpha: np.ndarray, angle: float
) -> tuple[np.ndarray, np.ndarray]:
    """A slight random perspective and a rotation by ``angle`` degrees, on a canvas large
    enough to hold the result (cropped to the object afterwards)."""
    h, w = alpha.shape
    src = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float32)
    jitter = rng.uniform(-0.08, 0.08, (4, 2)).astype(np.float32) * np.array([w, h], np.float32)
    dst = src + jitter
    theta = np.deg2rad(angle)
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]], np.float32)
    dst = (dst - dst.mean(axis=0)) @ rot.T
    dst -= dst.min(axis=0)
    out_w, out_h = int(np.ceil(dst[:, 0].max())) + 1, int(np.ceil(dst[:, 1].max())) + 1
    matrix = cv2.getPerspectiveTransform(src, dst.astype(np.float32))
    warped = cv2.warpPerspective(patch, matrix, (out_w, out_h), flags=cv2.INTER_LINEAR)
    warped_alpha = cv2.warpPerspective(alpha, matrix, (out_w, out_h), flags=cv2.INTER_LINEAR)
    return warped, warped_alpha


def _box_of(alpha: np.ndarray, threshold: float) -> tuple[int, int, int, int] | None:
    ys, xs = np.nonzero(alpha >= threshold)
    if not len(xs):
        return None
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def _overlaps(
    box: tuple[int, int, int, int], boxes: Sequence[tuple[int, int, int, int]], limit: float
) -> bool:
    x1, y1, x2, y2 = box
    for bx1, by1, bx2, by2 in boxes:
        inter = max(0, min(x2, bx2) - max(x1, bx1)) * max(0, min(y2, by2) - max(y1, by1))
        smaller = min((x2 - x1) * (y2 - y1), (bx2 - bx1) * (by2 - by1))
        if smaller > 0 and inter / smaller > limit:
            return True
    return False


def _blend(canvas: np.ndarray, patch: np.ndarray, alpha: np.ndarray, x: int, y: int) -> None:
    """Alpha-blend ``patch`` into the float canvas at (x, y), clipped to the canvas."""
    h, w = alpha.shape
    cy0, cx0 = max(0, y), max(0, x)
    cy1, cx1 = min(canvas.shape[0], y + h), min(canvas.shape[1], x + w)
    if cy1 <= cy0 or cx1 <= cx0:
        return
    a = alpha[cy0 - y : cy1 - y, cx0 - x : cx1 - x, None]
    p = patch[cy0 - y : cy1 - y, cx0 - x : cx1 - x]
    canvas[cy0:cy1, cx0:cx1] = canvas[cy0:cy1, cx0:cx1] * (1 - a) + p * a


def place_object(
    rng: np.random.Generator,
    canvas: np.ndarray,
    label: str,
    horizon: float,
    taken: Sequence[tuple[int, int, int, int]],
    textures: Mapping[str, np.ndarray],
) -> tuple[tuple[int, int, int, int], np.ndarray] | None:
    """Render ``label`` and paste it on the float canvas (in place) standing on the ground
    below ``horizon`` (a fraction of the height); returns its box and the alpha it was
    pasted with (canvas-sized), or None when no free spot was found."""
    height, width = canvas.shape[:2]
    base_frac, (ratio_lo, ratio_hi) = _SIZE[label]
    for _ in range(12):
        # Farther (closer to the horizon) is smaller: scale by the foot's depth.
        foot = rng.uniform(horizon + 0.12, 1.0) * height
        depth = (foot / height - horizon) / (1 - horizon)
        w = int(width * base_frac * depth * rng.uniform(0.6, 1.35))
        h = int(w * rng.uniform(ratio_lo, ratio_hi))
        if w < _MIN_BOX or h < _MIN_BOX // 2 or w > width * 0.95 or h > height * 0.9:
            continue
        x = int(rng.integers(-w // 8, width - w + w // 8 + 1))
        if label in FLAT:
            y = int(min(foot, height) - h)
            x = int(np.clip(x, 0, width - w))
            if y < 0:
                continue
            patch, alpha = FLAT[label](rng, Spot(canvas, x, y, w, h), textures)
            ox, oy = x, y
        else:
            patch, alpha = UPRIGHT[label](rng, w, h, textures)
            if rng.random() < 0.5:
                patch, alpha = patch[:, ::-1], alpha[:, ::-1]
            angle = rng.uniform(-20, 20) if label == "fallen_tree" else rng.uniform(-4, 4)
            patch, alpha = _warp(
                rng, np.ascontiguousarray(patch), np.ascontiguousarray(alpha), angle
            )
            ox, oy = x, int(foot - alpha.shape[0])
            if oy < 0:
                continue
        local = _box_of(alpha, _BOX_ALPHA.get(label, 0.5))
        if local is None:
            continue
        full = (ox + local[0], oy + local[1], ox + local[2], oy + local[3])
        box = (max(0, full[0]), max(0, full[1]), min(width, full[2]), min(height, full[3]))
        visible = (
            (box[2] - box[0])
            * (box[3] - box[1])
            / max(1, (full[2] - full[0]) * (full[3] - full[1]))
        )
        if box[2] - box[0] < _MIN_BOX or box[3] - box[1] < _MIN_BOX or visible < 0.7:
            continue
        if _overlaps(box, taken, 0.3):
            continue
        if label in UPRIGHT:
            _light_like_ground(rng, canvas, patch, alpha, ox, oy)
            _contact_shadow(rng, canvas, box, label)
        sigma = rng.uniform(0.0, 1.2)
        if sigma > 0.3:
            patch = cv2.GaussianBlur(patch, (0, 0), sigma)
            alpha = cv2.GaussianBlur(alpha, (0, 0), sigma)
        _blend(canvas, patch, alpha, ox, oy)
        placed = np.zeros((height, width), np.float32)
        _blend(placed[..., None], np.ones((*alpha.shape, 1), np.float32), alpha, ox, oy)
        return box, placed
    return None


def _light_like_ground(
    rng: np.random.Generator,
    canvas: np.ndarray,
    patch: np.ndarray,
    alpha: np.ndarray,
    x: int,
    y: int,
) -> None:
    """Scale the patch's brightness towards the scene's around it (in place)."""
    h, w = alpha.shape
    y0, y1 = max(0, y), min(canvas.shape[0], y + h)
    x0, x1 = max(0, x), min(canvas.shape[1], x + w)
    if y1 <= y0 or x1 <= x0:
        return
    local = float(canvas[y0:y1, x0:x1].mean())
    gain = np.clip((local / 128.0) ** 0.5 * rng.uniform(0.8, 1.2), 0.5, 1.4)
    patch *= gain


def _contact_shadow(
    rng: np.random.Generator, canvas: np.ndarray, box: tuple[int, int, int, int], label: str
) -> None:
    x1, y1, x2, y2 = box
    shadow = np.zeros(canvas.shape[:2], np.float32)
    centre = ((x1 + x2) // 2, y2 - 1)
    axes = (
        max(1, int((x2 - x1) * 0.55)),
        max(1, int((y2 - y1) * (0.12 if label != "smoke_fire" else 0.05))),
    )
    cv2.ellipse(shadow, centre, axes, 0, 0, 360, rng.uniform(0.2, 0.45), -1)
    shadow = cv2.GaussianBlur(shadow, (0, 0), max(1.0, axes[1] / 2))
    canvas *= (1 - shadow)[..., None]


# ------------------------------------------------------------------------------ scenes


def crop_background(
    rng: np.random.Generator, photo: np.ndarray, size: tuple[int, int] = (SCENE_WIDTH, SCENE_HEIGHT)
) -> np.ndarray:
    """A random crop of ``photo`` with the scene's aspect ratio (at least 60% of the
    largest such crop), resized to ``size``, maybe mirrored."""
    width, height = size
    ph, pw = photo.shape[:2]
    aspect = width / height
    max_w = min(pw, ph * aspect)
    cw = max_w * rng.uniform(0.6, 1.0)
    ch = cw / aspect
    x = rng.uniform(0, pw - cw)
    y = rng.uniform(0, ph - ch)
    crop = photo[int(y) : int(y + ch), int(x) : int(x + cw)]
    crop = cv2.resize(crop, (width, height), interpolation=cv2.INTER_AREA)
    return crop[:, ::-1].copy() if rng.random() < 0.5 else crop


def compose_scene(
    rng: np.random.Generator,
    photos: Sequence[tuple[str, np.ndarray]],
    textures: Mapping[str, np.ndarray],
    *,
    max_objects: int = 3,
    empty_fraction: float = 0.1,
    size: tuple[int, int] = (SCENE_WIDTH, SCENE_HEIGHT),
) -> Scene:
    """One scene: a crop of a random photo with 0..``max_objects`` city objects."""
    if not photos:
        raise ValueError("no background photos given")
    missing = [name for name in TEXTURE_NAMES if name not in textures]
    if missing:
        raise ValueError(f"textures missing: {missing}")
    source, photo = photos[int(rng.integers(len(photos)))]
    background = crop_background(rng, photo, size)
    canvas = background.astype(np.float32)
    # Global light: the pasted objects then take the same change as the scene.
    horizon = rng.uniform(0.2, 0.5)
    count = 0 if rng.random() < empty_fraction else int(rng.integers(1, max_objects + 1))
    boxes: list[tuple[int, int, int, int]] = []
    labels: list[str] = []
    pasted = np.zeros(canvas.shape[:2], np.float32)
    for _ in range(count):
        label = CITY_CLASSES[int(rng.integers(len(CITY_CLASSES)))]
        placed = place_object(rng, canvas, label, horizon, boxes, textures)
        if placed is None:
            continue
        box, alpha = placed
        boxes.append(box)
        labels.append(label)
        pasted = np.maximum(pasted, alpha)
    gain, bias = rng.uniform(0.8, 1.2), rng.uniform(-15, 15)
    canvas = canvas * gain + bias + rng.normal(0, rng.uniform(0.5, 4.0), canvas.shape)
    image = np.clip(canvas, 0, 255).round().astype(np.uint8)
    return Scene(
        image=image,
        boxes=np.asarray(boxes, np.float32).reshape(-1, 4),
        labels=tuple(labels),
        pasted=pasted > 0.5,
        background=background,
        source=source,
        pseudo=(False,) * len(labels),
    )


def add_pseudo_labels(
    scene: Scene,
    boxes: np.ndarray,
    labels: Sequence[str],
    max_covered: float = 0.3,
) -> Scene:
    """The scene with the original detector's detections on its background added as
    labels, except those whose box is more than ``max_covered`` hidden by pasted objects."""
    keep_boxes, keep_labels = [scene.boxes], list(scene.labels)
    pseudo = list(scene.pseudo)
    for box, label in zip(np.asarray(boxes, np.float32).reshape(-1, 4), labels, strict=True):
        x1, y1, x2, y2 = (int(round(float(v))) for v in box)
        area = max(0, x2 - x1) * max(0, y2 - y1)
        if area == 0:
            continue
        covered = float(scene.pasted[max(0, y1) : y2, max(0, x1) : x2].sum()) / area
        if covered <= max_covered:
            keep_boxes.append(box[None])
            keep_labels.append(label)
            pseudo.append(True)
    return Scene(
        image=scene.image,
        boxes=np.concatenate(keep_boxes).astype(np.float32),
        labels=tuple(keep_labels),
        pasted=scene.pasted,
        background=scene.background,
        source=scene.source,
        pseudo=tuple(pseudo),
    )


def scene_rng(seed: int, index: int) -> np.random.Generator:
    """The generator of scene ``index`` of a set: independent of the other scenes, so a
    set can be made in any order or in parts."""
    return np.random.default_rng([seed, index])
