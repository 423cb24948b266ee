"""Procedural day/night street scenes: the demo's built-in data (no downloads, no copied photos).

A *place* is a street: a row of buildings with window grids, a distant skyline, a road with
lane marks, street lamps and trees, all drawn from one seed. A *view* moves the camera along
the street, zooms and tilts a little. The same place renders

- by **day**: blue sky, sunlit facades with a shadow side, shadows cast on the road, dark glass,
  with per-shot weather (sunny to overcast), exposure and white balance;
- by **night**: a sky glowing towards the horizon (light pollution) behind dark facades, a random
  subset of windows lit, lamps with glow, sensor noise.

Geometry (what retrieval must recognise) is shared between day and night; appearance is not,
which is exactly the gap Dark Side Augmentation closes.

Example:
    >>> place = make_place(7)
    >>> day = render(place, View(), night=False, rng=np.random.default_rng(0))
    >>> day.shape, day.dtype
    ((96, 128, 3), dtype('uint8'))
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

WINDOW_LIGHT = np.array([1.0, 0.78, 0.42], np.float32)
WORLD_WIDTH = 1.8  # a place is wider than one view, so views can pan along the street


@dataclass(frozen=True)
class Building:
    x0: float  # world units, left edge
    x1: float
    top: float  # height as a fraction of the image above the ground line
    color: tuple[float, float, float]  # facade RGB in [0, 1]
    cols: int  # window grid
    rows: int
    roof: int  # 0 flat, 1 stepped, 2 spire


@dataclass(frozen=True)
class Place:
    seed: int
    buildings: tuple[Building, ...]
    skyline: np.ndarray  # (64,) heights of the distant silhouette
    lamps: tuple[float, ...]  # world x of street lamps
    trees: tuple[float, ...]
    sky_tint: tuple[float, float, float]
    sun_left: bool  # which side of each building is lit


@dataclass(frozen=True)
class View:
    """Camera: pan along the street (world units), zoom (>= 1), vertical shift (fraction of H)."""

    pan: float = 0.4
    zoom: float = 1.0
    tilt: float = 0.0


def make_place(seed: int) -> Place:
    """A random street drawn from ``seed`` (the same seed always gives the same place)."""
    rng = np.random.default_rng([seed, 0xD5A])
    buildings = []
    x = rng.uniform(-0.05, 0.05)
    while x < WORLD_WIDTH:
        width = rng.uniform(0.14, 0.34)
        base = rng.uniform(0.35, 0.85, size=3)
        buildings.append(
            Building(
                x0=x,
                x1=x + width,
                top=rng.uniform(0.25, 0.62),
                color=tuple(base * rng.uniform(0.7, 1.0)),
                cols=int(rng.integers(2, 6)),
                rows=int(rng.integers(3, 9)),
                roof=int(rng.integers(0, 3)),
            )
        )
        x += width + rng.uniform(0.0, 0.06)
    return Place(
        seed=seed,
        buildings=tuple(buildings),
        skyline=np.clip(np.cumsum(rng.normal(0, 0.03, 64)) + rng.uniform(0.15, 0.3), 0.05, 0.45),
        lamps=tuple(np.sort(rng.uniform(0, WORLD_WIDTH, int(rng.integers(4, 8))))),
        trees=tuple(np.sort(rng.uniform(0, WORLD_WIDTH, int(rng.integers(1, 5))))),
        sky_tint=tuple(rng.uniform(-0.08, 0.08, 3)),
        sun_left=bool(rng.integers(0, 2)),
    )


def random_view(rng: np.random.Generator) -> View:
    # Views overlap enough that every pair of shots of a place shows mostly the same buildings.
    return View(pan=float(rng.uniform(0.3, 0.5)), zoom=float(rng.uniform(1.0, 1.2)), tilt=float(rng.uniform(-0.03, 0.03)))


def render(
    place: Place, view: View, night: bool, rng: np.random.Generator, size: tuple[int, int] = (96, 128)
) -> np.ndarray:
    """Render one view of ``place`` as an H×W×3 uint8 image, by day or by night.

    ``rng`` drives what changes between shots of the same place (lit windows, noise, light level).
    """
    h, w = size
    img = np.zeros((h, w, 3), np.float32)
    ground = int(round(h * (0.78 + view.tilt)))
    view_width = 1.0 / view.zoom

    def to_px(xw: float) -> int:
        return int(round((xw - view.pan) / view_width * w))

    def to_py(height: float) -> int:  # height above the ground line, fraction of H (scaled by zoom)
        return int(round(ground - height * h * view.zoom))

    _sky(img, ground, place, night)
    _skyline(img, ground, place, view, night, rng, to_px, to_py)
    for b in place.buildings:
        _building(img, b, place, night, rng, to_px, to_py, ground)
    _road(img, ground, place, night, to_px)
    for tx in place.trees:
        _tree(img, to_px(tx), ground, view.zoom, night)
    for lx in place.lamps:
        _lamp(img, to_px(lx), ground, view.zoom, night, h)
    if night:
        img += rng.normal(0, 0.022, img.shape).astype(np.float32)  # sensor noise at high gain
    else:
        # Weather, time of day, white balance: colour alone must not identify a place, so a
        # network has to learn the geometry (which is also what survives the night).
        gray = img.mean(axis=2, keepdims=True)
        img = img + rng.uniform(0.0, 0.35) * (gray - img)  # sunny ... overcast
        img *= rng.uniform(0.75, 1.15) * (1 + rng.normal(0, 0.05, 3)).astype(np.float32)
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


def _sky(img, ground, place, night):
    h = img.shape[0]
    t = np.linspace(0, 1, max(ground, 1))[:, None]
    tint = np.array(place.sky_tint, np.float32)
    if night:  # light pollution: the sky glows towards the horizon, so silhouettes stay visible
        top, bottom = np.array([0.03, 0.04, 0.10]), np.array([0.30, 0.22, 0.26])
    else:
        top, bottom = np.array([0.30, 0.52, 0.88]) + tint, np.array([0.70, 0.80, 0.93]) + tint
    img[:ground] = (top * (1 - t) + bottom * t)[:, None, :]
    img[ground:] = bottom * 0.5 if night else np.array([0.45, 0.45, 0.43])
    del h


def _skyline(img, ground, place, view, night, rng, to_px, to_py):
    w = img.shape[1]
    xs = np.arange(w)
    world = view.pan + xs / w / view.zoom
    heights = np.interp(world, np.linspace(0, WORLD_WIDTH, place.skyline.size), place.skyline)
    color = np.array([0.12, 0.10, 0.14]) if night else np.array([0.55, 0.62, 0.72])
    for x, hgt in zip(xs, heights):
        y = max(to_py(hgt * 0.8), 0)
        img[y:ground, x] = color
    if night:  # a few far lights
        for _ in range(int(rng.integers(3, 12))):
            x = int(rng.integers(0, w))
            y = int(rng.integers(max(to_py(heights[x] * 0.8), 0), max(ground, 1)))
            img[y, x] = [0.9, 0.8, 0.5]


def _building(img, b, place, night, rng, to_px, to_py, ground):
    h, w = img.shape[:2]
    x0, x1, y0 = to_px(b.x0), to_px(b.x1), to_py(b.top)
    if x1 <= 0 or x0 >= w or x1 - x0 < 2:
        return
    facade = np.array(b.color, np.float32)
    if night:
        facade = facade * 0.12 + 0.02  # faint ambient light: darker than the glowing sky
    xa, xb, ya = max(x0, 0), min(x1, w), max(y0, 0)
    img[ya:ground, xa:xb] = facade
    # Roof shapes give each building a silhouette that survives the night.
    if b.roof == 1:
        step = max((x1 - x0) // 4, 1)
        img[max(y0 - (ground - y0) // 8, 0) : ya, max(x0 + step, 0) : min(x1 - step, w)] = facade
    elif b.roof == 2:
        cx = (x0 + x1) // 2
        for k in range(max((ground - y0) // 5, 1)):
            yy = y0 - k
            if 0 <= yy < h:
                img[yy, max(cx - (x1 - x0) // 10 + k // 3, 0) : min(cx + (x1 - x0) // 10 - k // 3 + 1, w)] = facade
    if not night:  # the shadow side of the facade, and the shadow it casts on the road
        shade = max((x1 - x0) // 5, 1)
        sx = slice(max(x0, 0), max(min(x0 + shade, w), 0)) if not place.sun_left else slice(max(x1 - shade, 0), min(x1, w))
        img[ya:ground, sx] *= 0.62
        drop = max((ground - y0) // 4, 1)
        cast = slice(max(x1, 0), min(x1 + drop, w)) if place.sun_left else slice(max(x0 - drop, 0), max(min(x0, w), 0))
        img[ground : min(ground + max(h // 12, 1), h), cast] *= 0.55
    # Windows: a fixed grid per building; by night a random subset is lit.
    margin_x, margin_y = (x1 - x0) / (b.cols * 2 + 1), (ground - y0) / (b.rows * 2 + 1.5)
    if margin_x < 1 or margin_y < 1:
        return
    lit = rng.random((b.rows, b.cols)) < rng.uniform(0.45, 0.85)
    for r in range(b.rows):
        for c in range(b.cols):
            wx0 = int(x0 + margin_x * (2 * c + 1))
            wy0 = int(y0 + margin_y * (2 * r + 1))
            wx1, wy1 = int(wx0 + margin_x), int(wy0 + margin_y)
            if wx1 <= 0 or wx0 >= w or wy1 <= 0:
                continue
            region = img[max(wy0, 0) : wy1, max(wx0, 0) : min(wx1, w)]
            if night:
                region[:] = WINDOW_LIGHT * rng.uniform(0.7, 1.0) if lit[r, c] else (0.03, 0.03, 0.05)
            else:
                region[:] = [0.16, 0.22, 0.32] if (r + c) % 3 else [0.32, 0.42, 0.55]


def _road(img, ground, place, night, to_px):
    h, w = img.shape[:2]
    mark_y = ground + (h - ground) * 2 // 3
    if mark_y >= h:
        return
    color = [0.35, 0.33, 0.2] if night else [0.92, 0.92, 0.85]
    for k in range(0, 40):
        xa = to_px(k * 0.09)
        if 0 <= xa < w:
            img[mark_y, xa : min(xa + max(w // 30, 1), w)] = color
    del place


def _tree(img, x, ground, zoom, night):
    h, w = img.shape[:2]
    r = max(int(h * 0.07 * zoom), 2)
    cy = ground - 2 * r
    yy, xx = np.ogrid[:h, :w]
    crown = (yy - cy) ** 2 + (xx - x) ** 2 <= r * r
    img[crown] = [0.02, 0.04, 0.02] if night else [0.18, 0.42, 0.16]
    img[max(cy, 0) : ground, max(x - 1, 0) : min(x + 1, w)] = [0.03, 0.02, 0.02] if night else [0.3, 0.2, 0.1]


def _lamp(img, x, ground, zoom, night, h):
    w = img.shape[1]
    top = ground - int(h * 0.3 * zoom)
    if not 0 <= x < w:
        return
    img[max(top, 0) : ground, x] = [0.08, 0.08, 0.08] if night else [0.2, 0.2, 0.22]
    if night:  # sodium glow around the lamp head and a pool of light on the road
        yy, xx = np.mgrid[:h, :w]
        sigma = max(h * 0.05 * zoom, 1.5)
        glow = np.exp(-((yy - top) ** 2 + (xx - x) ** 2) / (2 * sigma**2))
        pool = np.exp(-(((yy - ground - h * 0.05) / (sigma * 0.8)) ** 2 + ((xx - x) / (sigma * 2.5)) ** 2) / 2)
        img += (glow[..., None] * [1.0, 0.72, 0.35] + pool[..., None] * [0.45, 0.33, 0.18]).astype(np.float32)
