"""Procedural day/night street scenes: the demo's built-in data (no downloads, no copied photos).

A *place* is a street of a district: where the horizon lies, how tall and how densely the
buildings stand, and per building its colour, roof, window shape (square, tall, wide, arched,
round, paired), grid and facade material (plain, floor bands, pilasters); a distant skyline, a
road with lane marks, street lamps and trees, all drawn from one seed. A *view* moves the camera
along the street, zooms and tilts a little. The same place renders

- by **day**: blue sky, sunlit facades with a shadow side, shadows cast on the road, glass that
  mirrors the sky, with per-shot weather (sunny to overcast), exposure, white balance and grain;
- by **night**: a sky glowing towards the horizon (light pollution) behind dim, warm facades lit
  from the street, a random subset of the windows lit (warm or cool), lamps with glow, sensor noise.

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
COOL_LIGHT = np.array([0.75, 0.85, 1.0], np.float32)
WINDOW_STYLES = ("square", "tall", "wide", "arched", "round", "paired")
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
    style: int  # window shape: square, tall, wide, arched, round, paired (WINDOW_STYLES)
    material: int  # 0 plain, 1 floor bands, 2 pilasters


@dataclass(frozen=True)
class Place:
    seed: int
    buildings: tuple[Building, ...]
    skyline: np.ndarray  # (64,) heights of the distant silhouette
    lamps: tuple[float, ...]  # world x of street lamps
    trees: tuple[float, ...]
    sky_tint: tuple[float, float, float]
    sun_left: bool  # which side of each building is lit
    night_light: float  # how much street light reaches the facades at night
    horizon: float  # the ground line, as a fraction of the image height from the top


@dataclass(frozen=True)
class View:
    """Camera: pan along the street (world units), zoom (>= 1), vertical shift (fraction of H)."""

    pan: float = 0.4
    zoom: float = 1.0
    tilt: float = 0.0


def make_place(seed: int) -> Place:
    """A random street drawn from ``seed`` (the same seed always gives the same place)."""
    rng = np.random.default_rng([seed, 0xD5A])
    # The district sets the coarse layout that stays recognisable at night: where the horizon
    # is, how tall the buildings are and how densely they stand.
    horizon = rng.uniform(0.62, 0.88)
    height_lo = rng.uniform(0.12, 0.45)
    height_hi = height_lo + rng.uniform(0.08, 0.3)
    max_gap = rng.uniform(0.0, 0.2)
    buildings = []
    x = rng.uniform(-0.05, 0.05)
    while x < WORLD_WIDTH:
        width = rng.uniform(0.14, 0.34)
        base = rng.uniform(0.3, 0.75, size=3)
        buildings.append(
            Building(
                x0=x,
                x1=x + width,
                top=rng.uniform(height_lo, height_hi) * horizon / 0.78,
                color=tuple(base * rng.uniform(0.7, 1.0)),
                cols=int(rng.integers(2, 5)),
                rows=int(rng.integers(3, 7)),
                roof=int(rng.integers(0, 3)),
                style=int(rng.integers(0, len(WINDOW_STYLES))),
                material=int(rng.integers(0, 3)),
            )
        )
        x += width + rng.uniform(0.0, max_gap)
    return Place(
        seed=seed,
        buildings=tuple(buildings),
        skyline=np.clip(np.cumsum(rng.normal(0, 0.03, 64)) + rng.uniform(0.15, 0.3), 0.05, 0.45),
        lamps=tuple(np.sort(rng.uniform(0, WORLD_WIDTH, int(rng.integers(4, 8))))),
        trees=tuple(np.sort(rng.uniform(0, WORLD_WIDTH, int(rng.integers(1, 5))))),
        sky_tint=tuple(rng.uniform(-0.08, 0.08, 3)),
        sun_left=bool(rng.integers(0, 2)),
        night_light=float(rng.uniform(0.35, 0.55)),
        horizon=float(horizon),
    )


def random_view(rng: np.random.Generator) -> View:
    # Views overlap enough that every pair of shots of a place shows mostly the same buildings.
    return View(pan=float(rng.uniform(0.36, 0.44)), zoom=float(rng.uniform(1.0, 1.1)),
                tilt=float(rng.uniform(-0.02, 0.02)))


def render(
    place: Place, view: View, night: bool, rng: np.random.Generator, size: tuple[int, int] = (96, 128)
) -> np.ndarray:
    """Render one view of ``place`` as an H×W×3 uint8 image, by day or by night.

    ``rng`` drives what changes between shots of the same place (lit windows, noise, light level).
    """
    h, w = size
    img = np.zeros((h, w, 3), np.float32)
    ground = int(round(h * (place.horizon + view.tilt)))
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
        img += rng.normal(0, 0.015, img.shape).astype(np.float32)  # film grain: no perfectly flat areas
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


def _window_mask(u: np.ndarray, v: np.ndarray, style: int) -> np.ndarray:
    """Where a window of ``style`` is, in its cell's coordinates ``u, v`` in [0, 1)."""
    du, dv = np.abs(u - 0.5), np.abs(v - 0.5)
    if style == 0:  # square
        return (du < 0.3) & (dv < 0.3)
    if style == 1:  # tall and narrow
        return (du < 0.2) & (dv < 0.42)
    if style == 2:  # wide band
        return (du < 0.45) & (dv < 0.2)
    if style == 3:  # arched
        return ((du < 0.27) & (v > 0.45) & (v < 0.88)) | ((u - 0.5) ** 2 + (v - 0.45) ** 2 < 0.27**2)
    if style == 4:  # round
        return du**2 + dv**2 < 0.32**2
    return ((np.abs(u - 0.3) < 0.12) | (np.abs(u - 0.7) < 0.12)) & (dv < 0.38)  # paired


def _roof(img, roof: int, facade, x0: int, x1: int, y0: int, ground: int) -> None:
    """Roof shapes give each building a silhouette that survives the night (1: a step, 2: a spire)."""
    h, w = img.shape[:2]
    if roof == 1:
        step = max((x1 - x0) // 4, 1)
        img[max(y0 - (ground - y0) // 8, 0) : max(y0, 0), max(x0 + step, 0) : min(x1 - step, w)] = facade
    elif roof == 2:
        cx = (x0 + x1) // 2
        for k in range(max((ground - y0) // 5, 1)):
            yy = y0 - k
            if 0 <= yy < h:
                img[yy, max(cx - (x1 - x0) // 10 + k // 3, 0) : min(cx + (x1 - x0) // 10 - k // 3 + 1, w)] = facade


def _building(img, b, place, night, rng, to_px, to_py, ground):
    h, w = img.shape[:2]
    x0, x1, y0 = to_px(b.x0), to_px(b.x1), to_py(b.top)
    if x1 <= 0 or x0 >= w or x1 - x0 < 2:
        return
    facade = np.array(b.color, np.float32)
    if night:  # lit by the street: dim, desaturated and warm, but the facade is still there
        facade = (0.6 * facade + 0.4 * facade.mean()) * place.night_light * np.array([1.0, 0.85, 0.65], np.float32)
    xa, xb, ya = max(x0, 0), min(x1, w), max(y0, 0)
    img[ya:ground, xa:xb] = facade
    _roof(img, b.roof, facade, x0, x1, y0, ground)
    # Windows: a grid of cells over the facade, each holding one window of the building's style;
    # by night a random subset is lit. Cell coordinates move and scale with the camera.
    top = y0 + (ground - y0) * 0.06
    cell_w, cell_h = (x1 - x0) / b.cols, (ground - top) / (b.rows + 0.6)  # the last 0.6 row: the door level
    if cell_w < 2 or cell_h < 2 or ya >= ground or xa >= xb:
        return
    yy, xx = np.mgrid[ya:ground, xa:xb].astype(np.float32)
    fx, fy = (xx + 0.5 - x0) / cell_w, (yy + 0.5 - top) / cell_h
    col, row = np.floor(fx).astype(int), np.floor(fy).astype(int)
    inside = (fy >= 0) & (row < b.rows) & (col >= 0) & (col < b.cols)
    mask = inside & _window_mask(fx - col, fy - row, b.style)
    region = img[ya:ground, xa:xb]
    if b.material and not night:  # floor bands / pilasters, drawn in cell coordinates too
        band = ((fy - row) > 0.88) if b.material == 1 else ((fx - col) > 0.88)
        region[band & inside] *= 0.8
    if night:
        lit = rng.random((b.rows, b.cols)) < rng.uniform(0.6, 0.9)
        cool = rng.random((b.rows, b.cols)) < 0.2
        level = rng.uniform(0.45, 0.75, (b.rows, b.cols))
        r, c = np.clip(row, 0, b.rows - 1), np.clip(col, 0, b.cols - 1)
        colour = np.where(cool[r, c][..., None], COOL_LIGHT, WINDOW_LIGHT) * level[r, c][..., None]
        on = mask & lit[r, c]
        region[on] = colour[on]
        region[mask & ~lit[r, c]] = (0.03, 0.03, 0.05)
    else:
        # Glass mirrors the bright sky: windows are lighter than the facade by day as by night.
        glass = np.array([0.62, 0.72, 0.85], np.float32)
        region[mask] = glass - 0.15 * (fy[mask, None] / max(b.rows, 1))
    if not night:  # the shadow side of the facade, and the shadow it casts on the road
        shade = max((x1 - x0) // 5, 1)
        sx = (slice(max(x0, 0), max(min(x0 + shade, w), 0)) if not place.sun_left
              else slice(max(x1 - shade, 0), min(x1, w)))
        img[ya:ground, sx] *= 0.62
        drop = max((ground - y0) // 4, 1)
        cast = slice(max(x1, 0), min(x1 + drop, w)) if place.sun_left else slice(max(x0 - drop, 0), max(min(x0, w), 0))
        img[ground : min(ground + max(h // 12, 1), h), cast] *= 0.55


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
        sigma = max(h * 0.035 * zoom, 1.5)
        glow = np.exp(-((yy - top) ** 2 + (xx - x) ** 2) / (2 * sigma**2))
        pool = np.exp(-(((yy - ground - h * 0.05) / (sigma * 0.8)) ** 2 + ((xx - x) / (sigma * 2.5)) ** 2) / 2)
        img += (glow[..., None] * [0.5, 0.36, 0.18] + pool[..., None] * [0.2, 0.15, 0.08]).astype(np.float32)
