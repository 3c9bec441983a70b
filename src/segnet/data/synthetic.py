"""Procedural road scenes labelled with CamVid's 11 classes: the demo dataset, no download.

Every scene is a street seen from a car through one pinhole camera, so objects shrink with
distance and the road, pavements, walls and fences share one vanishing point. With lengths in
camera heights, a point at lateral offset ``X`` and height ``h`` whose ground contact lies ``q``
pixels below the horizon projects to::

    x = vx + X * q,    y = horizon + (1 - h) * q,    depth = focal / q

so ``q`` (0 at the horizon, ``height - horizon`` on the last row) is an object's scale in
pixels per camera height. Things are painted far to near, which resolves occlusion.

Colours are not the palette's: each class has its own colour distribution (re-drawn per scene
and per object), textures (windows, paving, leaves, lane markings), and the whole image gets
shadows, an illumination ramp, a colour cast, gamma, blur and Gaussian noise. Road and pavement
are both grey, overcast sky is as pale as a lane marking, cars come in any colour: a network
has to use shape and context, not a per-pixel lookup. Void (label 11) marks unlabelled street
clutter (bins, boxes) so ``ignore_index`` is exercised.

``render_scene(np.random.default_rng([seed, i]), height=H, width=W)`` is deterministic, and
fast (numpy only): about 7 ms at 120x160 and 55 ms at 360x480 on one busy CPU core.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import SegNetError
from ..files import write_json
from .base import DatasetInfo, SegmentationDataset, Transform
from .classes import CAMVID_CLASSES, CAMVID_PALETTE, CAMVID_VOID
from .io import write_png

SKY, BUILDING, POLE, ROAD, PAVEMENT, TREE, SIGN, FENCE, CAR, PEDESTRIAN, BICYCLIST = range(11)

MIN_SIZE = 32  # the smallest input every registered model accepts

Box = tuple[slice, slice]
Colour = np.ndarray  # (3,) or (h, w, 3) float32, 0..255 before lighting

# Typical colours (RGB) per material; each use jitters them.
_CAR_PAINTS = ((225, 225, 220), (160, 162, 165), (35, 35, 40), (150, 25, 30), (30, 50, 120),
               (85, 90, 95), (40, 80, 50), (200, 170, 60))  # fmt: skip
_FACADES = ((150, 80, 60), (190, 170, 140), (135, 135, 130), (205, 200, 190), (110, 95, 80),
            (170, 120, 90))  # fmt: skip
_PAVINGS = ((165, 165, 160), (180, 170, 150), (150, 105, 90), (130, 130, 135))
_CLOTHES = ((30, 30, 35), (60, 60, 70), (25, 40, 90), (120, 30, 30), (190, 190, 185),
            (90, 70, 50), (40, 70, 40), (150, 120, 90))  # fmt: skip
_SKIN = ((225, 185, 160), (190, 140, 110), (120, 80, 60))
_FENCES = ((120, 85, 55), (45, 70, 45), (120, 120, 125), (200, 200, 195))


@dataclass(frozen=True)
class _Street:
    """Camera and street layout of one scene; lateral offsets in camera heights (left < 0)."""

    height: int
    width: int
    horizon: float  # pixel row of the horizon (and of the vanishing point)
    vx: float  # pixel column of the vanishing point
    focal: float  # pixels; depth = focal / q
    kerbs: tuple[float, float]  # lateral X of the left and right road edges
    walls: tuple[float, float]  # lateral X of the building fronts

    @property
    def q_max(self) -> float:
        return self.height - self.horizon

    def x(self, lateral: float, q: float) -> float:
        return self.vx + lateral * q

    def ground(self, q: float) -> float:
        return self.horizon + q


class _Canvas:
    """Image and labels painted back to front, plus noise fields the textures share."""

    def __init__(self, rng: np.random.Generator, *, height: int, width: int) -> None:
        self.rng = rng
        self.height, self.width = height, width
        self.image = np.zeros((height, width, 3), np.float32)
        self.labels = np.full((height, width), CAMVID_VOID, np.uint8)
        self.ys = np.arange(height, dtype=np.float32)[:, None] + 0.5  # (H, 1) pixel centres
        self.xs = np.arange(width, dtype=np.float32)[None, :] + 0.5  # (1, W)
        # (H, W) ~N(0, 1) fields: per-pixel speckle, leaf-sized grain, large blotches.
        self.fine = rng.standard_normal((height, width), dtype=np.float32)
        self.grain = _smooth_noise(rng, height, width, cell=max(2.0, height / 40))
        self.blotch = _smooth_noise(rng, height, width, cell=max(height, width) / 5)

    def box(self, top: float, bottom: float, left: float, right: float) -> Box | None:
        """Pixel box covering [top, bottom) x [left, right), clipped; None when empty."""
        y0, y1 = max(int(np.floor(top)), 0), min(int(np.ceil(bottom)), self.height)
        x0, x1 = max(int(np.floor(left)), 0), min(int(np.ceil(right)), self.width)
        return (slice(y0, y1), slice(x0, x1)) if y0 < y1 and x0 < x1 else None

    def coords(self, box: Box) -> tuple[np.ndarray, np.ndarray]:
        """Pixel-centre rows and columns of a box, both (h, w) (broadcast views)."""
        ys, xs = np.broadcast_arrays(self.ys[box[0]], self.xs[:, box[1]])
        return ys, xs

    def texture(self, box: Box, base: Colour, *, fine: float = 0.0, grain: float = 0.0,
                blotch: float = 0.0) -> np.ndarray:  # fmt: skip
        """(h, w, 3) colour: ``base`` with relative brightness noise of the given strengths."""
        gain = 1.0 + fine * self.fine[box] + grain * self.grain[box] + blotch * self.blotch[box]
        return np.asarray(base, np.float32) * gain[..., None]

    def paint(self, box: Box, mask: np.ndarray, colour: Colour, label: int) -> None:
        """Writes ``colour`` and ``label`` where ``mask`` (h, w) is set inside ``box``."""
        np.copyto(self.image[box], colour, where=mask[..., None])
        np.copyto(self.labels[box], np.uint8(label), where=mask)


def render_scene(
    rng: np.random.Generator, *, height: int, width: int
) -> tuple[np.ndarray, np.ndarray]:
    """One random street: RGB uint8 (H, W, 3) and CamVid labels uint8 (H, W), void = 11."""
    _check_size(height=height, width=width)
    canvas = _Canvas(rng, height=height, width=width)
    street = _random_street(rng, height=height, width=width)
    sky = _draw_sky(canvas, street)
    _draw_skyline(canvas, street, sky)
    _draw_ground(canvas, street)
    for side in (0, 1):
        _draw_wall(canvas, street, side)
    if rng.random() < 0.5:
        _draw_fence(canvas, street, side=int(rng.integers(2)))
    things = _random_things(rng, street)
    for q, draw in sorted(things, key=lambda thing: thing[0]):  # far (small q) first
        draw(canvas, street, q)
    return _finish(canvas, street), canvas.labels


def _random_street(rng: np.random.Generator, *, height: int, width: int) -> _Street:
    kerbs = (-rng.uniform(0.9, 2.0), rng.uniform(0.9, 2.0))
    # A pavement 1-2.5 camera heights wide, or an open side: a plaza up to a far building line.
    walls = tuple(
        kerb + sign * (rng.uniform(1.0, 2.5) if rng.random() < 0.75 else rng.uniform(4.0, 9.0))
        for kerb, sign in zip(kerbs, (-1.0, 1.0))
    )
    return _Street(
        height=height, width=width, horizon=height * rng.uniform(0.3, 0.5),
        vx=width * rng.uniform(0.3, 0.7), focal=float(width), kerbs=kerbs, walls=walls,
    )  # fmt: skip


def _random_things(
    rng: np.random.Generator, street: _Street
) -> list[tuple[float, Callable[[_Canvas, _Street, float], None]]]:
    """(q, draw) for each object standing in the street."""
    counts = {
        _draw_car: rng.integers(0, 4), _draw_pedestrian: rng.integers(0, 4),
        _draw_bicyclist: rng.integers(0, 2) + (rng.random() < 0.2), _draw_tree: rng.integers(0, 4),
        _draw_pole: rng.integers(1, 4), _draw_clutter: rng.integers(0, 3) * (rng.random() < 0.5),
    }  # fmt: skip
    things = []
    for draw, count in counts.items():
        for _ in range(int(count)):
            # Depth spread so that near (large) objects are rarer than far ones.
            things.append((street.q_max * rng.uniform(0.3, 1.02) ** 2.2, draw))
    return things


# ---------------------------------------------------------------- background: sky, ground, walls


def _draw_sky(c: _Canvas, street: _Street) -> np.ndarray:
    """Sky down to the horizon (overcast or blue, paler towards it); returns the horizon colour."""
    rng = c.rng
    if rng.random() < 0.6:  # overcast, as in most of CamVid
        top = rng.uniform(150, 215) + rng.normal(0, 5, 3)
        bottom = top + rng.uniform(10, 35)
    else:
        top = np.array([rng.uniform(50, 120), rng.uniform(110, 170), rng.uniform(180, 240)])
        bottom = top + (235 - top) * rng.uniform(0.3, 0.7)
    rows = slice(0, min(int(np.ceil(street.horizon)) + 1, c.height))  # the ground covers the rest
    t = np.clip(c.ys[rows] / street.horizon, 0, 1)[..., None]  # (h, 1, 1)
    colour = (top + (bottom - top) * t).astype(np.float32)  # (h, 1, 3)
    c.image[rows] = colour * (1 + rng.uniform(0.03, 0.12) * c.blotch[rows, :, None])
    c.labels[rows] = SKY
    return bottom


def _draw_skyline(c: _Canvas, street: _Street, sky: np.ndarray) -> None:
    """Distant buildings on the horizon around the vanishing point, hazy towards the sky colour."""
    rng = c.rng
    x = street.vx - c.width * rng.uniform(0.1, 0.4)
    end = street.vx + c.width * rng.uniform(0.1, 0.4)
    while x < end:
        step = c.width * rng.uniform(0.03, 0.1)
        if rng.random() < 0.8:
            top = street.horizon - c.height * rng.uniform(0.02, 0.2)
            box = c.box(top, street.horizon + 1, x, x + step)
            if box is not None:
                haze = rng.uniform(0.3, 0.7)
                base = (1 - haze) * _jitter(rng, _pick(rng, _FACADES), 20) + haze * sky
                colour = c.texture(box, base, fine=0.03, grain=0.06)
                c.paint(box, np.ones(colour.shape[:2], bool), colour, BUILDING)
        x += step


def _draw_ground(c: _Canvas, street: _Street) -> None:
    """Road between the kerbs (asphalt, lane markings, crossings), pavement everywhere else."""
    rng = c.rng
    asphalt = _jitter(rng, [rng.uniform(60, 115)] * 3, 6)
    paving, tile = _jitter(rng, _pick(rng, _PAVINGS), 12), rng.uniform(0.4, 1.0)
    left, right = street.kerbs
    centre, dash = left + (right - left) * rng.uniform(0.4, 0.6), rng.uniform(1.5, 4.0)
    box = c.box(street.horizon, c.height, 0, c.width)
    ys, xs = c.coords(box)
    q = np.maximum(ys - street.horizon, 1e-3)  # (h, W)
    lateral, depth = (xs - street.vx) / q, street.focal / q  # ground X and depth of each pixel
    road = (lateral >= left) & (lateral <= right)

    marking = (np.abs(lateral - centre) < 0.05) & ((depth / dash + rng.random()) % 1 < 0.5)
    marking |= (np.abs(lateral - left - 0.15) < 0.04) | (np.abs(lateral - right + 0.15) < 0.04)
    if rng.random() < 0.3:  # zebra crossing
        near = rng.uniform(3, 20)
        marking |= (depth > near) & (depth < near + 2.5) & ((lateral / 0.5) % 1 < 0.5)
    marking &= road
    joints = ~road & (((depth / tile) % 1 < 0.08) | ((lateral / tile) % 1 < 0.06))
    kerb = ~road & ((np.abs(lateral - left) < 0.1) | (np.abs(lateral - right) < 0.1))

    gain = 1 + 0.05 * c.fine[box] + 0.07 * c.grain[box] + 0.11 * c.blotch[box]  # (h, W)
    gain *= np.where(joints, np.float32(0.8), np.where(kerb, np.float32(1.15), np.float32(1)))
    colour = np.where(road[..., None], asphalt, paving) * gain[..., None]  # (h, W, 3)
    colour[marking] = np.float32(rng.uniform(170, 235)) * gain[marking, None]
    c.image[box] = colour
    c.labels[box] = np.where(road, np.uint8(ROAD), np.uint8(PAVEMENT))


def _draw_wall(c: _Canvas, street: _Street, side: int) -> None:
    """Building fronts along one side: segments of random height (or gaps), with windows."""
    rng = c.rng
    wall = street.walls[side]
    # Facade segments along the street, 4-15 camera heights long, up to a random far end.
    ends = np.cumsum(rng.uniform(4, 15, 16)) + street.focal / (street.q_max * 1.5)
    n = int(np.searchsorted(ends, rng.uniform(25, 80))) + 1
    heights = np.where(rng.random(n) < 0.15, 0.0, rng.uniform(2.5, 10, n))
    bases = np.stack([_jitter(rng, _pick(rng, _FACADES), 18) for _ in range(n)])  # (n, 3)
    glass = np.stack([_glass(rng) for _ in range(n)])  # (n, 3)
    floor, spacing = rng.uniform(1.6, 2.4, n), rng.uniform(1.2, 3.0, n)

    q = (c.xs[0] - street.vx) / wall  # (W,): scale of the wall's foot in each column
    columns = np.flatnonzero((q > 0.3) & (street.focal / np.maximum(q, 1e-3) < ends[n - 1]))
    if columns.size == 0:
        return
    q = q[columns[0] : columns[-1] + 1]  # visible columns are contiguous
    depth = street.focal / q
    segment = np.minimum(np.searchsorted(ends, depth), n - 1)
    top = street.horizon + (1 - heights[segment]) * q
    box = c.box(top.min(), street.ground(q.max()), columns[0], columns[-1] + 1)
    if box is None:
        return
    ys, _ = c.coords(box)
    h = 1 - (ys - street.horizon) / q  # (h, w) height on the wall, camera heights
    mask = (h >= 0) & (h <= heights[segment])
    storey = (h / floor[segment]) % 1
    windows = (storey > 0.35) & (storey < 0.8) & ((depth / spacing[segment]) % 1 < 0.55) & (h > 0.9)
    colour = np.where(windows[..., None], glass[segment], bases[segment]).astype(np.float32)
    colour *= (1 + 0.04 * c.fine[box] + 0.06 * c.grain[box] + 0.1 * c.blotch[box])[..., None]
    colour[windows] *= (0.8 + 0.4 * (h[windows] % 1))[:, None]  # sky reflections vary
    c.paint(box, mask, colour, BUILDING)


def _draw_fence(c: _Canvas, street: _Street, *, side: int) -> None:
    """A slatted or solid fence just in front of one building line, over a stretch of street."""
    rng = c.rng
    kerb, wall = street.kerbs[side], street.walls[side]
    lateral = wall + (kerb - wall) * rng.uniform(0.05, 0.2)
    near = street.focal / street.q_max * rng.uniform(0.7, 2.0)
    far, fence_height = near + rng.uniform(5, 30), rng.uniform(0.5, 1.0)
    pitch, fill = rng.uniform(0.15, 0.4), rng.uniform(0.3, 0.7)
    base = _jitter(rng, _pick(rng, _FENCES), 15)
    see_through = rng.random() < 0.5

    q = (c.xs[0] - street.vx) / lateral  # (W,)
    depth = street.focal / np.maximum(q, 1e-3)
    columns = np.flatnonzero((q > 0.3) & (depth > near) & (depth < far))
    if columns.size == 0:
        return
    q, depth = q[columns[0] : columns[-1] + 1], depth[columns[0] : columns[-1] + 1]
    box = c.box(street.horizon + (1 - fence_height) * q.min(), street.ground(q.max()),
                columns[0], columns[-1] + 1)  # fmt: skip
    if box is None:
        return
    ys, _ = c.coords(box)
    h = 1 - (ys - street.horizon) / q  # (h, w)
    mask = (h >= 0) & (h < fence_height)
    slats = (depth / pitch) % 1 < fill
    rails = (np.abs(h - 0.15) < 0.05) | (np.abs(h - fence_height + 0.08) < 0.05)
    colour = c.texture(box, base, fine=0.05, grain=0.1)
    if see_through:  # only slats and rails
        mask &= slats | rails
    else:  # solid boards, joints darker
        colour[~slats & ~rails] *= 0.7
    c.paint(box, mask, colour, FENCE)


# ---------------------------------------------------------------- things standing in the street


def _draw_car(c: _Canvas, street: _Street, q: float) -> None:
    """Rear view of a car or van in a lane: body, cabin, rear window, lights, plate, wheels."""
    rng = c.rng
    left, right = street.kerbs
    lateral = rng.uniform(left + 0.7, right - 0.7) if right - left > 1.4 else (left + right) / 2
    half, tall = rng.uniform(0.55, 0.68) * q, rng.uniform(0.9, 1.4) * q
    cx, ground = street.x(lateral, q), street.ground(q)
    shadow = c.box(ground - 0.1 * q, ground + 0.05 * q, cx - 1.2 * half, cx + 1.2 * half)
    if shadow is not None:  # darkens whatever is below, label unchanged
        ys, xs = c.coords(shadow)
        blob = ((xs - cx) / (1.2 * half)) ** 2 + ((ys - ground + 0.02 * q) / (0.07 * q)) ** 2 < 1
        c.image[shadow][blob] *= 0.5
    box = c.box(ground - tall, ground, cx - half, cx + half)
    if box is None:
        return
    ys, xs = c.coords(box)
    u, v = (xs - cx) / half, (ground - ys) / tall  # (h, w): -1..1 across, 0 ground .. 1 roof
    taper = 0.85 - 0.2 * (v - 0.6) / 0.4
    wheels = (v < 0.3) & (np.abs(u) > 0.6) & (np.abs(u) < 0.95)
    body = (v >= 0.15) & (v < 0.6) & (np.abs(u) <= 1)
    cabin = (v >= 0.6) & (np.abs(u) < taper)
    window = (v > 0.64) & (v < 0.94) & (np.abs(u) < taper - 0.1)
    paint = _jitter(rng, _pick(rng, _CAR_PAINTS), 12)
    colour = c.texture(box, paint, fine=0.03, grain=0.03) * (1.1 - 0.3 * v)[..., None]
    colour[(v >= 0.15) & (v < 0.22)] *= 0.6  # bumper
    colour[window] = _glass(rng) * 0.7
    lamp = (v > 0.42) & (v < 0.52) & (np.abs(u) > 0.72) & (np.abs(u) < 0.95)
    colour[lamp] = _jitter(rng, (200, 30, 30), 20)
    plate = (v > 0.25) & (v < 0.33) & (np.abs(u) < 0.22)
    colour[plate] = _jitter(rng, (220, 215, 180), 10)
    colour[wheels & ~body] = _jitter(rng, (30, 30, 32), 5)
    c.paint(box, wheels | body | cabin, colour, CAR)


def _draw_pedestrian(c: _Canvas, street: _Street, q: float) -> None:
    """A walking figure on a pavement (sometimes crossing the road)."""
    rng = c.rng
    lateral = _pavement_x(rng, street) if rng.random() < 0.85 else rng.uniform(*street.kerbs)
    size = rng.uniform(1.0, 1.25) * q  # standing height in pixels
    cx, ground = street.x(lateral, q), street.ground(q)
    box = c.box(ground - size, ground, cx - 0.3 * size, cx + 0.3 * size)
    if box is None:
        return
    ys, xs = c.coords(box)
    stride = rng.uniform(-0.12, 0.12) * size
    hip, neck = (ground - 0.5 * size, cx), (ground - 0.82 * size, cx)
    head = (ground - 0.92 * size, cx)
    hand = (ground - 0.5 * size, cx + 0.6 * stride + 0.1 * size)
    legs = (_segment(ys, xs, hip, (ground, cx - stride), 0.045 * size)
            | _segment(ys, xs, hip, (ground, cx + stride), 0.045 * size))  # fmt: skip
    torso = _segment(ys, xs, hip, neck, 0.09 * size) | _segment(ys, xs, neck, hand, 0.03 * size)
    for mask, base in ((legs, _pick(rng, _CLOTHES)), (torso, _pick(rng, _CLOTHES)),
                       (_disc(ys, xs, head, 0.065 * size), _pick(rng, _SKIN))):  # fmt: skip
        colour = c.texture(box, _jitter(rng, base, 15), fine=0.06, grain=0.08)
        c.paint(box, mask, colour, PEDESTRIAN)


def _draw_bicyclist(c: _Canvas, street: _Street, q: float) -> None:
    """Side view of a rider on a bicycle, near one kerb: wheels, frame, legs, torso, head."""
    rng = c.rng
    side = int(rng.integers(2))
    lateral = street.kerbs[side] + (0.35 if side == 0 else -0.35)
    cx, ground = street.x(lateral, q), street.ground(q)
    facing = 1.0 if rng.random() < 0.5 else -1.0
    box = c.box(ground - 1.3 * q, ground, cx - 0.65 * q, cx + 0.65 * q)
    if box is None:
        return
    ys, xs = c.coords(box)
    radius, axle = 0.23 * q, ground - 0.23 * q
    back, front = (axle, cx - facing * 0.38 * q), (axle, cx + facing * 0.38 * q)
    seat, pedal = (ground - 0.6 * q, cx - facing * 0.12 * q), (axle, cx)
    bar = (ground - 0.7 * q, cx + facing * 0.3 * q)
    thin = 0.025 * q
    wheels = _ring(ys, xs, back, radius, thin * 1.5) | _ring(ys, xs, front, radius, thin * 1.5)
    frame = (_segment(ys, xs, back, seat, thin) | _segment(ys, xs, seat, pedal, thin)
             | _segment(ys, xs, pedal, front, thin) | _segment(ys, xs, bar, front, thin)
             | _segment(ys, xs, seat, bar, thin))  # fmt: skip
    shoulder = (ground - 1.05 * q, cx + facing * 0.08 * q)
    rider = (_segment(ys, xs, seat, shoulder, 0.1 * q) | _segment(ys, xs, seat, pedal, 0.05 * q)
             | _segment(ys, xs, shoulder, bar, 0.035 * q))  # fmt: skip
    head = _disc(ys, xs, (ground - 1.17 * q, cx + facing * 0.13 * q), 0.08 * q)
    for mask, base in ((wheels, (35, 35, 38)), (frame, _pick(rng, _CAR_PAINTS)),
                       (rider, _pick(rng, _CLOTHES)), (head, _pick(rng, _SKIN))):  # fmt: skip
        c.paint(box, mask, c.texture(box, _jitter(rng, base, 15), fine=0.06, grain=0.06), BICYCLIST)


def _draw_tree(c: _Canvas, street: _Street, q: float) -> None:
    """A trunk on the pavement and a blobby canopy made of overlapping discs with leaf grain."""
    rng = c.rng
    cx, ground = street.x(_pavement_x(rng, street), q), street.ground(q)
    trunk_top, radius = rng.uniform(1.2, 2.8) * q, rng.uniform(0.6, 1.5) * q
    trunk_half = max(rng.uniform(0.06, 0.12) * q, 0.6)
    box = c.box(ground - trunk_top, ground, cx - trunk_half, cx + trunk_half)
    if box is not None:
        colour = c.texture(box, _jitter(rng, (90, 70, 55), 15), fine=0.08, grain=0.15)
        c.paint(box, np.ones(colour.shape[:2], bool), colour, TREE)
    centre = (ground - trunk_top - 0.5 * radius, cx)
    reach = 1.6 * radius  # the discs below stay within it
    box = c.box(centre[0] - reach, centre[0] + reach, cx - reach, cx + reach)
    if box is None:
        return
    ys, xs = c.coords(box)
    canopy = _disc(ys, xs, centre, radius * 0.7)
    for _ in range(int(rng.integers(4, 9))):
        offset = rng.normal(0, 0.45, 2) * radius
        lobe = (centre[0] + offset[0], cx + offset[1])
        canopy |= _disc(ys, xs, lobe, radius * rng.uniform(0.35, 0.7))
    base = _jitter(rng, (rng.uniform(40, 100), rng.uniform(75, 140), rng.uniform(20, 70)), 10)
    colour = c.texture(box, base, fine=0.12, grain=0.3, blotch=0.1)
    c.paint(box, canopy, colour, TREE)


def _draw_pole(c: _Canvas, street: _Street, q: float) -> None:
    """A thin pole near a kerb; often carrying a sign or a traffic light."""
    rng = c.rng
    side = int(rng.integers(2))
    lateral = street.kerbs[side] + (-1 if side == 0 else 1) * rng.uniform(0.15, 0.5)
    cx, ground = street.x(lateral, q), street.ground(q)
    top = ground - rng.uniform(2.2, 4.0) * q
    half = max(0.03 * q, 0.5)
    box = c.box(top, ground, cx - half, cx + half)
    if box is not None:
        _, xs = c.coords(box)
        base = _jitter(rng, _pick(rng, ((140, 140, 145), (40, 40, 42), (50, 75, 60))), 12)
        colour = c.texture(box, base, fine=0.05) * (1.1 - 0.4 * np.abs(xs - cx) / half)[..., None]
        c.paint(box, np.ones(colour.shape[:2], bool), colour, POLE)
    if rng.random() < 0.7:
        _draw_sign(c, (top + rng.uniform(0.15, 0.4) * q, cx), rng.uniform(0.18, 0.3) * q)


def _draw_sign(c: _Canvas, centre: tuple[float, float], size: float) -> None:
    """A round, triangular or rectangular road sign, or a traffic light, centred on a pole."""
    rng = c.rng
    cy, cx = centre
    box = c.box(cy - size, cy + size, cx - size, cx + size)
    if box is None:
        return
    ys, xs = c.coords(box)
    dy, dx = ys - cy, xs - cx
    kind = rng.integers(4)
    inner = np.zeros(dy.shape, bool)
    if kind == 0:  # round: red ring or blue disc
        outer, inner = dx**2 + dy**2 < size**2, dx**2 + dy**2 < (0.72 * size) ** 2
    elif kind == 1:  # warning triangle, apex up
        outer = (dy < 0.8 * size) & (np.abs(dx) < 0.58 * (dy + size))
        inner = (dy < 0.62 * size) & (np.abs(dx) < 0.58 * (dy + 0.55 * size))
    elif kind == 2:  # rectangular direction sign
        outer = (np.abs(dx) < size) & (np.abs(dy) < 0.6 * size)
    else:  # traffic light: dark housing, one lit lamp
        outer = (np.abs(dx) < 0.4 * size) & (np.abs(dy) < size)
        lamp = -0.6 + 0.6 * rng.integers(3)
        inner = dx**2 + (dy - lamp * size) ** 2 < (0.25 * size) ** 2
    colours = (((190, 30, 35), (230, 230, 225)), ((200, 40, 35), (235, 230, 220)),
               ((30, 70, 160), (225, 225, 225)), ((25, 25, 28), (240, 200, 60)))  # fmt: skip
    rim, face = colours[kind]
    colour = c.texture(box, _jitter(rng, rim, 15), fine=0.05)
    colour[inner] = _jitter(rng, face, 15)
    c.paint(box, outer | inner, colour, SIGN)


def _draw_clutter(c: _Canvas, street: _Street, q: float) -> None:
    """Unlabelled street furniture (bins, boxes, bollards): void, so training ignores it."""
    rng = c.rng
    cx, ground = street.x(_pavement_x(rng, street), q), street.ground(q)
    half, tall = rng.uniform(0.15, 0.4) * q, rng.uniform(0.3, 0.9) * q
    box = c.box(ground - tall, ground, cx - half, cx + half)
    if box is not None:
        colour = c.texture(box, rng.uniform(30, 220, 3), fine=0.05, grain=0.1)
        c.paint(box, np.ones(colour.shape[:2], bool), colour, CAMVID_VOID)


# ---------------------------------------------------------------- lighting and camera


def _finish(c: _Canvas, street: _Street) -> np.ndarray:
    """Shadows, illumination ramp, colour cast, blur, gamma and noise -> uint8 (H, W, 3)."""
    rng = c.rng
    ramp_x, ramp_y = rng.uniform(-0.2, 0.2), rng.uniform(-0.1, 0.1)
    light = rng.uniform(0.65, 1.25) * (
        1 + ramp_x * (2 * c.xs / c.width - 1) + ramp_y * (2 * c.ys / c.height - 1)
    )  # (H, W)
    if rng.random() < 0.4:  # a building's shadow across the street: one side of a slanted line
        slope = rng.uniform(-1.5, 1.5)
        cut = c.xs - street.vx - slope * (c.ys - street.horizon) - rng.uniform(-0.3, 0.3) * c.width
        shade = (cut * rng.choice((-1, 1)) > 0) & (c.ys > street.horizon)
        light = light * np.where(shade, np.float32(rng.uniform(0.5, 0.75)), np.float32(1))
    image = c.image * light[..., None] * rng.uniform(0.9, 1.1, 3).astype(np.float32)
    _blur(image)
    gamma = 255 * (np.arange(256, dtype=np.float32) / 255) ** np.float32(rng.uniform(0.8, 1.25))
    image = gamma[np.clip(image + 0.5, 0, 255).astype(np.uint8)]  # (H, W, 3)
    image += _gaussian_noise(rng, image.shape, sigma=rng.uniform(2, 7))
    return np.clip(image + 0.5, 0, 255).astype(np.uint8)


def _blur(image: np.ndarray) -> None:
    """In-place [1, 2, 1] / 4 blur of (H, W, 3) along both axes: the lens, and soft label edges."""
    for axis in (0, 1):
        inner = image[1:-1] if axis == 0 else image[:, 1:-1]
        sides = image[:-2] + image[2:] if axis == 0 else image[:, :-2] + image[:, 2:]
        sides *= 0.25
        inner *= 0.5
        inner += sides


def _gaussian_noise(
    rng: np.random.Generator, shape: tuple[int, ...], *, sigma: float
) -> np.ndarray:
    """float32 noise ~N(0, sigma): the sum of 4 uniform random bytes (Irwin-Hall), 2-3x faster
    than ``standard_normal`` and indistinguishable from it at 8-bit precision."""
    size = int(np.prod(shape))
    total = np.frombuffer(rng.bytes(4 * size), np.uint8).reshape(4, size).sum(0, dtype=np.int16)
    scale = np.float32(sigma / np.sqrt(4 * (256**2 - 1) / 12))  # std of the sum: 147.8
    return ((total - 510).astype(np.float32) * scale).reshape(shape)


# ---------------------------------------------------------------- shapes and colours


def _disc(ys: np.ndarray, xs: np.ndarray, centre: tuple[float, float], radius: float) -> np.ndarray:
    radius = max(radius, 0.7)
    return (ys - centre[0]) ** 2 + (xs - centre[1]) ** 2 < radius**2


def _ring(ys: np.ndarray, xs: np.ndarray, centre: tuple[float, float], radius: float,
          width: float) -> np.ndarray:  # fmt: skip
    distance = np.sqrt((ys - centre[0]) ** 2 + (xs - centre[1]) ** 2)
    return np.abs(distance - radius) < max(width, 0.5)


def _segment(ys: np.ndarray, xs: np.ndarray, start: tuple[float, float], end: tuple[float, float],
             half_width: float) -> np.ndarray:  # fmt: skip
    """Pixels within ``half_width`` (at least half a pixel) of the segment start-end (y, x)."""
    (y0, x0), (y1, x1) = start, end
    dy, dx = y1 - y0, x1 - x0
    t = np.clip(((ys - y0) * dy + (xs - x0) * dx) / max(dy * dy + dx * dx, 1e-6), 0, 1)
    return (ys - y0 - t * dy) ** 2 + (xs - x0 - t * dx) ** 2 < max(half_width, 0.55) ** 2


def _pavement_x(rng: np.random.Generator, street: _Street) -> float:
    """A lateral position on either pavement, between the kerb and the building line."""
    side = int(rng.integers(2))
    kerb, wall = street.kerbs[side], street.walls[side]
    return kerb + (wall - kerb) * rng.uniform(0.15, 0.8)


def _glass(rng: np.random.Generator) -> np.ndarray:
    """Window glass: dark, or reflecting a pale sky."""
    if rng.random() < 0.6:
        return _jitter(rng, (45, 55, 70), 12)
    return _jitter(rng, (150, 165, 180), 20)


def _pick(rng: np.random.Generator, options: tuple) -> np.ndarray:
    return np.asarray(options[int(rng.integers(len(options)))], np.float32)


def _jitter(rng: np.random.Generator, colour: Colour, spread: float) -> np.ndarray:
    """(3,) float32 colour moved by a per-channel N(0, spread) offset."""
    moved = np.asarray(colour, np.float32) + rng.normal(0, spread, 3)
    return np.clip(moved, 0, 255).astype(np.float32)


def _smooth_noise(rng: np.random.Generator, height: int, width: int, *, cell: float) -> np.ndarray:
    """(H, W) float32 noise, about N(0, 1), varying over ``cell`` pixels: a bilinearly upsampled
    random grid, as two small matrix products (rows (H, gh) @ grid (gh, gw) @ columns (gw, W))."""
    grid = rng.standard_normal((int(height / cell) + 2, int(width / cell) + 2), dtype=np.float32)

    def hat(size: int, knots: int) -> np.ndarray:  # (size, knots) linear interpolation weights
        position = np.arange(size, dtype=np.float32)[:, None] / cell  # in grid steps
        return np.maximum(0, 1 - np.abs(position - np.arange(knots, dtype=np.float32)))

    # x1.6 restores unit variance, which interpolating between knots lowers.
    return 1.6 * hat(height, grid.shape[0]) @ grid @ hat(width, grid.shape[1]).T


# ---------------------------------------------------------------- dataset and folder export


def _check_size(*, height: int, width: int) -> None:
    _check_count(height=height, minimum=MIN_SIZE)
    _check_count(width=width, minimum=MIN_SIZE)


def _check_count(*, minimum: int, **argument: int) -> None:
    """Raises SegNetError naming the argument unless it is an integer >= ``minimum``."""
    ((name, value),) = argument.items()
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < minimum:
        raise SegNetError(f"synthetic: {name} must be an integer >= {minimum}, got {value!r}")


class SyntheticRoadScenes(SegmentationDataset):
    """``num_images`` procedural street scenes; scene ``i`` depends only on ``(seed, i)``."""

    info = DatasetInfo(class_names=CAMVID_CLASSES, palette=CAMVID_PALETTE, ignore_index=CAMVID_VOID)

    def __init__(
        self,
        *,
        num_images: int,
        height: int = 120,
        width: int = 160,
        seed: int = 0,
        transform: Transform | None = None,
    ) -> None:
        _check_count(num_images=num_images, minimum=1)
        _check_count(seed=seed, minimum=0)
        _check_size(height=height, width=width)
        super().__init__(transform=transform)
        self.height, self.width, self.seed = int(height), int(width), int(seed)
        self.names = [f"synthetic_{i:04d}" for i in range(int(num_images))]

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        index = range(len(self.names))[index]  # negative indices; IndexError past the end
        rng = np.random.default_rng([self.seed, index])
        return render_scene(rng, height=self.height, width=self.width)


def write_synthetic_dataset(
    root: Path,
    *,
    num_train: int,
    num_val: int,
    height: int = 120,
    width: int = 160,
    seed: int = 0,
) -> Path:
    """Writes scenes in the generic folder layout and returns ``root``.

    ``root/{train,val}/images/NAME.png`` (RGB), ``root/{train,val}/masks/NAME.png`` (mode "L",
    one class index per pixel, 11 = void) and ``root/classes.json`` (names, palette,
    ignore_index), so ``--dataset folder --data root`` reads it back. Train holds scenes
    ``0..num_train-1`` of ``seed``, val the next ``num_val``: no scene is in both. Every file is
    written atomically.
    """
    _check_count(num_train=num_train, minimum=1)
    _check_count(num_val=num_val, minimum=0)
    num_train, num_val = int(num_train), int(num_val)
    scenes = SyntheticRoadScenes(
        num_images=num_train + num_val, height=height, width=width, seed=seed
    )
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    info = SyntheticRoadScenes.info
    spec = {"names": info.class_names, "palette": info.palette, "ignore_index": info.ignore_index}
    write_json(root / "classes.json", spec)
    splits = {"train": range(num_train), "val": range(num_train, num_train + num_val)}
    for split, indices in splits.items():
        if not indices:
            continue
        for folder in ("images", "masks"):
            (root / split / folder).mkdir(parents=True, exist_ok=True)
        for index in indices:
            image, mask = scenes.load(index)
            name = scenes.names[index]
            for folder, array in (("images", image), ("masks", mask)):
                write_png(root / split / folder / f"{name}.png", array)
    return root
