"""Procedural stand-in for MineRL Navigate: first-person walks through Minecraft-like voxel worlds.

The paper trains on MineRL Navigate videos (500 frames of 64x64 RGB each, an agent walking through
Minecraft). Its archive cannot be reached offline, so this module makes videos of the same kind from
numpy alone: a random voxel world (smooth noise hills and valleys, water at a sea level, sand
beaches, stone on steep or high ground, oak trees), a walker that wanders through it and comes back
to places it has seen, and a vectorised voxel ray caster (3-D DDA, Amanatides & Woo) that renders
flat Minecraft-like block colours with per-face light, distance fog and a sky with a square sun.

The world is periodic in x and z (it tiles), so a view never shows an edge; the walker stays within
`HOME_RADIUS` columns of where it started, turning back when it strays further, so hills and trees
leave the view and come back into it: long-range structure a video model has to remember.

Coordinates: x and z horizontal, y up, one unit per block; block (x, y, z) fills [x, x+1) x [y, y+1)
x [z, z+1). Yaw 0 looks along +x and grows toward +z (to the right); pitch > 0 looks up.
Everything is deterministic from the numpy Generator passed in. The walk's actions (forward, jump, the
camera's turns) are recorded in MineRL Navigate's layout (`walk_actions`) without another draw.
"""

from __future__ import annotations

import dataclasses

import numpy as np

import dataspec

SIZE = dataspec.get("minerl").frame_size  # frames are SIZE x SIZE pixels
WORLD_XZ = 64  # columns per side (periodic)
WORLD_Y = 48  # blocks high
FOV = np.radians(70.0)  # horizontal (and vertical: square frames)
MAX_DIST = 32.0  # rays stop here; fog makes blocks sky-coloured by then
FOG_START = 10.0
EYE = 1.62  # eye height above the feet
HOME_RADIUS = 14.0  # the walker turns back when further than this from its start
SPEED = 0.2  # blocks per frame when walking (Minecraft walks ~4.3 blocks/s at 20 frames/s)
MAX_TURN = 0.07  # radians per frame
MAX_TURN_ACCEL = 0.012  # radians per frame per frame

AIR, GRASS, DIRT, STONE, SAND, WATER, TRUNK, LEAVES = range(8)
SKY = 255  # render-time marker above the world: rays that reach it see the sky

# Flat colours per kind (Minecraft's palette, roughly); extra entries for faces with their own look.
_RGB = np.array(
    [
        [0.00, 0.00, 0.00],  # AIR (unused)
        [0.37, 0.62, 0.22],  # GRASS (top)
        [0.53, 0.38, 0.26],  # DIRT
        [0.49, 0.49, 0.49],  # STONE
        [0.86, 0.81, 0.60],  # SAND
        [0.24, 0.40, 0.86],  # WATER
        [0.40, 0.31, 0.19],  # TRUNK (bark)
        [0.22, 0.46, 0.12],  # LEAVES
        [0.64, 0.52, 0.32],  # 8: trunk top and bottom (rings)
    ],
    np.float32,
)
_LOG_END = 8
_FACE_LIGHT = np.array([0.80, 1.00, 0.62], np.float32)  # x-faces, top faces, z-faces; bottoms get 0.5
_SKY_ZENITH = np.array([0.47, 0.65, 1.00], np.float32)
_SKY_HORIZON = np.array([0.76, 0.86, 1.00], np.float32)
_SUN_RGB = np.array([1.00, 1.00, 0.82], np.float32)
_SUN_HALF = 0.085  # half-width of the square sun, in tangent units (~5 degrees)
_PAD = int(MAX_DIST) + 8  # periodic copy around the world, so rays index without wrapping
_PAD_Y = 4  # stone below, sky above: rays may overrun a few cells between checks


@dataclasses.dataclass(frozen=True, eq=False)
class World:
    """One voxel world. blocks (X, Y, Z) uint8 kinds; height (X, Z) int32: y of the first non-terrain
    cell of each column (terrain fills y < height; water fills height <= y < sea_level); sun: unit
    vector toward the sun."""

    blocks: np.ndarray
    height: np.ndarray
    sea_level: int
    sun: np.ndarray


def is_solid(kind: np.ndarray | int) -> np.ndarray:
    """Whether blocks of this kind stop a walker (everything but air and water)."""
    kind = np.asarray(kind)
    return (kind != AIR) & (kind != WATER)


def standable(world: World) -> np.ndarray:
    """(X, Z) bool: columns a walker may stand on: dry solid ground with three free cells above it."""
    x, z = np.indices(world.height.shape)
    free = [world.blocks[x, np.minimum(world.height + k, WORLD_Y - 1), z] == AIR for k in range(3)]
    return (world.height >= world.sea_level) & (world.height + 3 < WORLD_Y) & free[0] & free[1] & free[2]


# ----------------------------------------------------------------------------------------------
# World
# ----------------------------------------------------------------------------------------------


def _upsample(grid: np.ndarray, size: int) -> np.ndarray:
    """Periodic smoothstep interpolation of a (c, c) grid to (size, size)."""
    c = grid.shape[0]
    t = np.arange(size) * c / size
    i0 = np.floor(t).astype(int)
    f = t - i0
    s = f * f * (3 - 2 * f)
    i1 = (i0 + 1) % c
    rows = grid[i0] * (1 - s)[:, None] + grid[i1] * s[:, None]
    return rows[:, i0] * (1 - s) + rows[:, i1] * s


def _noise(rng: np.random.Generator, size: int, cells: tuple[int, ...], gain: float = 0.5) -> np.ndarray:
    """Periodic value noise: octaves of `cells` lattice points per side, scaled to [0, 1]."""
    total = sum(gain**k * _upsample(rng.random((c, c)), size) for k, c in enumerate(cells))
    return (total - total.min()) / (total.max() - total.min())


def _height_map(rng: np.random.Generator) -> np.ndarray:
    """(X, Z) int32 ground heights: flat-bottomed valleys, rounded hills."""
    n = _noise(rng, WORLD_XZ, (2, 4, 8, 16), gain=0.4)
    relief = rng.uniform(14, 22)
    return np.round(5 + relief * n**1.6).astype(np.int32)


def _slope(height: np.ndarray) -> np.ndarray:
    """Largest height difference to the four neighbours (periodic)."""
    diffs = [np.abs(height - np.roll(height, s, a)) for a in (0, 1) for s in (1, -1)]
    return np.max(diffs, axis=0)


def _near(mask: np.ndarray, r: int) -> np.ndarray:
    """(X, Z) bool: within r columns (Chebyshev, periodic) of a True cell of mask."""
    for axis in (0, 1):
        mask = np.any([np.roll(mask, s, axis) for s in range(-r, r + 1)], axis=0)
    return mask


def _terrain(height: np.ndarray, sea: int, rng: np.random.Generator) -> np.ndarray:
    """(X, Y, Z) kinds: stone with dirt under grass, sand at and under the water, stone on steep or high
    ground, water up to the sea level."""
    y = np.arange(WORLD_Y)[None, :, None]
    h = height[:, None, :]
    high = height > sea + rng.uniform(10, 14) + 3 * _noise(rng, WORLD_XZ, (8,))
    rocky = ((_slope(height) >= 3) | high)[:, None, :]
    beach = ((height <= sea + 1) & _near(height < sea, 3))[:, None, :]
    top = np.where(rocky, STONE, np.where(beach, SAND, GRASS))
    under = np.where(rocky, STONE, np.where(beach, SAND, DIRT))
    blocks = np.where(y < h - 3, STONE, np.where(y < h - 1, under, top))
    blocks = np.where(y < h, blocks, np.where(y < sea, WATER, AIR))
    return blocks.astype(np.uint8)


def _tree_sites(height: np.ndarray, blocks: np.ndarray, sea: int, rng: np.random.Generator) -> list:
    """Trunk columns: grassy, gentle ground, denser in forest patches, at least 4 apart."""
    x, z = np.indices(height.shape)
    grassy = blocks[x, np.maximum(height - 1, 0), z] == GRASS
    gentle = _slope(height) <= 1
    density = 0.004 + 0.12 * _noise(rng, WORLD_XZ, (4, 8)) ** 3
    cand = np.argwhere(grassy & gentle & (height >= sea + 2) & (rng.random(height.shape) < density))
    sites: list[tuple[int, int]] = []
    for cx, cz in cand[rng.permutation(len(cand))]:
        d = np.abs(np.array(sites, dtype=np.int64).reshape(-1, 2) - (cx, cz)) % WORLD_XZ
        if (np.minimum(d, WORLD_XZ - d).max(1, initial=0) >= 4).all():
            sites.append((int(cx), int(cz)))
    return sites


def _grow_tree(blocks: np.ndarray, x: int, ground: int, z: int, rng: np.random.Generator) -> None:
    """An oak: a trunk of 4-6 logs under a crown of leaves (5x5 layers, then 3x3), corners thinned."""
    trunk = int(rng.integers(4, 7))
    top = ground + trunk
    for dy, r in ((-2, 2), (-1, 2), (0, 1), (1, 1)):
        d = np.arange(-r, r + 1)
        corner = (np.abs(d)[:, None] == r) & (np.abs(d)[None, :] == r)
        keep = ~corner | (rng.random(corner.shape) < 0.4 * (dy < 0))
        xs, zs = (x + d) % WORLD_XZ, (z + d) % WORLD_XZ
        layer = blocks[np.ix_(xs, [top + dy], zs)][:, 0]
        blocks[np.ix_(xs, [top + dy], zs)] = np.where(keep & (layer == AIR), LEAVES, layer)[:, None]
    blocks[x, ground:top, z] = TRUNK


def random_world(rng: np.random.Generator) -> World:
    """A new world: hills and valleys from periodic value noise, a sea, beaches, stone, oak trees."""
    height = _height_map(rng)
    sea = int(np.quantile(height, rng.uniform(0.15, 0.3))) + 1
    blocks = _terrain(height, sea, rng)
    for x, z in _tree_sites(height, blocks, sea, rng):
        _grow_tree(blocks, x, int(height[x, z]), z, rng)
    azimuth, elevation = rng.uniform(0, 2 * np.pi), rng.uniform(0.2, 0.6)
    sun = np.array([np.cos(elevation) * np.cos(azimuth), np.sin(elevation), np.cos(elevation) * np.sin(azimuth)])
    return World(blocks=blocks, height=height, sea_level=sea, sun=sun.astype(np.float32))


# ----------------------------------------------------------------------------------------------
# Walker
# ----------------------------------------------------------------------------------------------


def _column(a: np.ndarray | float) -> np.ndarray:
    """The column index (periodic) that coordinate `a` falls in."""
    return np.floor(a).astype(np.int64) % WORLD_XZ


def _reachable(ok: np.ndarray, height: np.ndarray, start: tuple[int, int]) -> np.ndarray:
    """(X, Z) bool: standable columns reachable from `start` in steps of at most one block up or down."""
    reach = np.zeros_like(ok)
    reach[start] = True
    while True:
        grown = reach.copy()
        for axis in (0, 1):
            for shift in (1, -1):
                step_ok = np.abs(height - np.roll(height, shift, axis)) <= 1
                grown |= np.roll(reach, shift, axis) & ok & step_ok
        if (grown == reach).all():
            return reach
        reach = grown


def _start(ok: np.ndarray, height: np.ndarray, rng: np.random.Generator) -> tuple[int, int]:
    """A standable column in a large walkable region (the best of a few random tries)."""
    cand = np.argwhere(ok)
    best, best_area = tuple(cand[0]), -1
    for i in rng.choice(len(cand), size=min(6, len(cand)), replace=False):
        area = int(_reachable(ok, height, tuple(cand[i])).sum())
        if area > best_area:
            best, best_area = tuple(int(c) for c in cand[i]), area
        if area > 0.4 * len(cand):
            break
    return best


def _clearance(ok: np.ndarray, height: np.ndarray, x: float, z: float, headings: np.ndarray) -> np.ndarray:
    """For each heading, how far (blocks, up to 4) the walker could walk straight before a blocked
    column (not standable, or a step of more than one block)."""
    dists = np.arange(1, 21) * 0.2
    cx = _column(x + np.cos(headings)[:, None] * dists)
    cz = _column(z + np.sin(headings)[:, None] * dists)
    h = height[cx, cz]
    prev = np.concatenate([np.full((len(headings), 1), height[_column(x), _column(z)]), h[:, :-1]], 1)
    blocked = ~ok[cx, cz] | (np.abs(h - prev) > 1)
    return np.where(blocked.any(1), dists[np.argmax(blocked, 1)] - 0.2, dists[-1])


def _can_step(ok: np.ndarray, height: np.ndarray, x: float, z: float, nx: float, nz: float) -> bool:
    """Whether the walker may move from (x, z) to (nx, nz) (and a body margin beyond it)."""
    dx, dz = nx - x, nz - z
    norm = max(np.hypot(dx, dz), 1e-6)
    h0 = height[_column(x), _column(z)]
    for px, pz in ((nx, nz), (nx + 0.3 * dx / norm, nz + 0.3 * dz / norm)):
        cx, cz = _column(px), _column(pz)
        if not ok[cx, cz] or abs(int(height[cx, cz]) - int(h0)) > 1:
            return False
    return True


_PROBES = np.array([0.0, -0.5, 0.5, -1.0, 1.0, -1.6, 1.6])


def _steer(
    ok: np.ndarray,
    height: np.ndarray,
    x: float,
    z: float,
    yaw: float,
    home: np.ndarray,
    state: dict,
    rng: np.random.Generator,
) -> float:
    """Target angular velocity: away from obstacles, else wander, pulled back home when far."""
    clear = _clearance(ok, height, x, z, yaw + _PROBES)
    if clear[0] < (3.0 if state["avoid"] else 2.0) or state["blocked"]:  # (hysteresis: no dithering)
        if state["avoid"] == 0:
            right, left = clear[2::2].sum(), clear[1::2].sum()
            state["avoid"] = 1 if right > left or (right == left and rng.random() < 0.5) else -1
        return state["avoid"] * MAX_TURN
    state["avoid"] = 0
    if rng.random() < 0.03:
        state["wander"] = rng.normal(0, 0.025) if rng.random() < 0.7 else 0.0
    off = home - np.array([x, z])
    dist = np.hypot(*off)
    pull = 0.0
    if dist > HOME_RADIUS:
        diff = np.angle(np.exp(1j * (np.arctan2(off[1], off[0]) - yaw)))
        pull = np.clip(0.05 * diff * min(1.0, (dist - HOME_RADIUS) / 3), -MAX_TURN, MAX_TURN)
    return state["wander"] + pull


def _pitch(num_frames: int, rng: np.random.Generator) -> np.ndarray:
    """A small look up and down: a slow oscillation plus smoothed noise, within +-0.35 rad."""
    t = np.arange(num_frames)
    wave = rng.uniform(0.05, 0.12) * np.sin(2 * np.pi * t / rng.uniform(60, 160) + rng.uniform(0, 2 * np.pi))
    noise = np.convolve(rng.normal(0, 0.01, num_frames), 0.95 ** np.arange(120))[:num_frames]  # smoothed
    return np.clip(wave + noise - 0.04, -0.35, 0.35)


def walk(world: World, num_frames: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A first-person walk: eye positions (T, 3) (x, y, z, with x and z in [0, WORLD_XZ)), yaw (T,)
    and pitch (T,). Walks forward mostly, turns smoothly, steers around water, trees and cliffs, and
    stays near its start so it sees places again."""
    positions, yaw, pitch, _ = walk_with_keys(world, num_frames, rng)
    return positions, yaw, pitch


def walk_with_keys(
    world: World, num_frames: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """`walk`'s positions, yaw and pitch (the same draws, so the same walk), and (T,) bool: whether the
    walker held its forward key on the way to frame t (False while it stands still on purpose)."""
    trunks = (world.blocks == TRUNK).any(1)
    ok, height = standable(world) & ~_near(trunks, 1), world.height
    start = _start(ok, height, rng)
    x, z = start[0] + 0.5, start[1] + 0.5
    home = np.array([x, z])
    yaw, omega, speed, eye = rng.uniform(-np.pi, np.pi), 0.0, SPEED, height[start] + EYE
    state = {"avoid": 0, "wander": 0.0, "blocked": False}
    stop = 0
    out, forward = np.zeros((num_frames, 4)), np.zeros(num_frames, bool)
    for t in range(num_frames):
        target = _steer(ok, height, x, z, yaw, home, state, rng)
        omega = np.clip(omega + np.clip(target - omega, -MAX_TURN_ACCEL, MAX_TURN_ACCEL), -MAX_TURN, MAX_TURN)
        yaw += omega
        stop = stop - 1 if stop > 0 else (int(rng.integers(10, 30)) if rng.random() < 0.006 else 0)
        speed += 0.3 * ((0.0 if stop else SPEED) - speed)
        forward[t] = not stop
        nx, nz = x + speed * np.cos(yaw), z + speed * np.sin(yaw)
        eye = _eye_height(ok, height, x, z, nx, nz, eye)
        state["blocked"] = not _can_step(ok, height, x, z, nx, nz)
        if not state["blocked"] and eye >= height[_column(nx), _column(nz)] + EYE - 1e-6:
            x, z = nx, nz  # (up a step only once the eye has risen: jump, then move)
        ground = height[_column(x), _column(z)]
        eye = float(np.clip(eye, ground + EYE, ground + EYE + 1.3))
        out[t] = x, eye, z, yaw
    positions = np.stack([out[:, 0] % WORLD_XZ, out[:, 1], out[:, 2] % WORLD_XZ], 1)
    return positions, out[:, 3], _pitch(num_frames, rng), forward


def _eye_height(ok: np.ndarray, height: np.ndarray, x: float, z: float, nx: float, nz: float, eye: float) -> float:
    """The eye height eased (at most 0.2 blocks a frame) toward 1.62 blocks above the ground underfoot,
    or above the next position or a column up to a block further on, where that is a step up the walker
    could take."""
    ground = int(height[_column(x), _column(z)])
    dx, dz = nx - x, nz - z
    reach = np.array([0.0, 0.3, 0.6, 0.9]) / max(np.hypot(dx, dz), 1e-6)
    cx, cz = _column(nx + reach * dx), _column(nz + reach * dz)
    ahead = height[cx, cz]
    target = max([ground, *ahead[ok[cx, cz] & (np.abs(ahead - ground) <= 1)].tolist()]) + EYE
    return target if abs(target - eye) < 0.05 else eye + float(np.clip(0.35 * (target - eye), -0.2, 0.2))


# ----------------------------------------------------------------------------------------------
# Renderer
# ----------------------------------------------------------------------------------------------


def _padded(world: World) -> np.ndarray:
    """The world tiled _PAD columns beyond each side, cut just above its highest block, with stone below
    and a sky marker above: rays step through it by flat index without bounds checks."""
    top = int(np.flatnonzero((world.blocks != AIR).any((0, 2)))[-1]) + 5
    core = np.pad(world.blocks[:, :top], ((_PAD, _PAD), (0, 0), (_PAD, _PAD)), mode="wrap")
    below = np.full((core.shape[0], _PAD_Y, core.shape[2]), STONE, np.uint8)
    above = np.full((core.shape[0], _PAD_Y, core.shape[2]), SKY, np.uint8)
    return np.ascontiguousarray(np.concatenate([below, core, above], 1))


def _camera_rays(yaw: np.ndarray, pitch: np.ndarray) -> np.ndarray:
    """Unit ray directions (F, 64, 64, 3) float32, row 0 at the top, column 0 at the left."""
    yaw, pitch = np.asarray(yaw, np.float32), np.asarray(pitch, np.float32)
    fwd = np.stack([np.cos(pitch) * np.cos(yaw), np.sin(pitch), np.cos(pitch) * np.sin(yaw)], -1)
    right = np.stack([-np.sin(yaw), np.zeros_like(yaw), np.cos(yaw)], -1)
    up = np.cross(right, fwd)
    s = ((np.arange(SIZE, dtype=np.float32) + 0.5) / SIZE * 2 - 1) * np.float32(np.tan(FOV / 2))
    d = fwd[:, None, None] + s[None, None, :, None] * right[:, None, None] - s[None, :, None, None] * up[:, None, None]
    return (d / np.linalg.norm(d, axis=-1, keepdims=True)).astype(np.float32)


def cast_rays(padded: np.ndarray, origins: np.ndarray, dirs: np.ndarray) -> dict[str, np.ndarray]:
    """3-D DDA (Amanatides & Woo) of all rays at once through `padded` (from _padded).

    origins, dirs: (N, 3) float32 in padded coordinates. Returns (N,) arrays: kind (AIR where a ray
    went past MAX_DIST), t (distance to the hit), axis (0, 1, 2: the axis of the face hit) and cell
    (the flat index of the hit cell). Rays advance in lock step; finished ones are dropped every
    few steps.
    """
    n = len(dirs)
    strides = np.array([padded.shape[1] * padded.shape[2], padded.shape[2], 1], np.int32)
    cell = np.floor(origins).astype(np.int32)
    with np.errstate(divide="ignore"):
        delta = np.where(dirs != 0, np.abs(1 / dirs), np.float32(1e30)).astype(np.float32)
    tmax = (np.where(dirs > 0, cell + 1 - origins, origins - cell) * delta).astype(np.float32)
    inc = (np.where(dirs < 0, -1, 1) * strides).astype(np.int32)
    state = [np.ascontiguousarray(a[:, k]) for a in (tmax, delta, inc) for k in range(3)]
    state += [(cell @ strides).astype(np.int32), np.arange(n, dtype=np.int32)]
    out = {"kind": np.zeros(n, np.uint8), "t": np.full(n, np.inf, np.float32)}
    out |= {"axis": np.zeros(n, np.int8), "cell": np.zeros(n, np.int32)}
    flat = padded.reshape(-1)
    while len(state[-1]):
        done = np.zeros(len(state[-1]), bool)
        for _ in range(4):
            _dda_step(flat, state, done, out)
        tx, ty, tz = state[:3]
        done |= np.minimum(np.minimum(tx, ty), tz) > MAX_DIST
        keep = np.flatnonzero(~done)
        state = [a[keep] for a in state]
    out["kind"][out["t"] > MAX_DIST] = AIR  # hit in the last few steps past the fog: sky, as drawn
    return out


def _dda_step(flat: np.ndarray, state: list, done: np.ndarray, out: dict) -> None:
    """Advance every ray one cell, in place; record first hits (rays in `done` are not recorded again)."""
    tx, ty, tz, dx, dy, dz, ix, iy, iz, idx, ray = state
    mx = tx < np.minimum(ty, tz)
    nx = ~mx
    my = (ty <= tz) & nx
    mz = nx & ~my
    for t, d, i, m in ((tx, dx, ix, mx), (ty, dy, iy, my), (tz, dz, iz, mz)):
        np.add(t, d, out=t, where=m)
        np.add(idx, i, out=idx, where=m)
    j = np.flatnonzero(flat[idx])
    j = j[~done[j]]
    if not len(j):
        return
    axis = np.where(mx[j], 0, np.where(my[j], 1, 2)).astype(np.int8)
    t_exit = np.choose(axis, [tx[j], ty[j], tz[j]])
    r = ray[j]
    out["kind"][r] = flat[idx[j]]
    out["t"][r] = t_exit - np.choose(axis, [dx[j], dy[j], dz[j]])
    out["axis"][r] = axis
    out["cell"][r] = idx[j]
    done[j] = True


def _hash(*ints: np.ndarray) -> np.ndarray:
    """Per-element pseudo-random float32 in [0, 1) from integer coordinates."""
    h = np.zeros(np.shape(ints[0]), np.uint32)
    for k, a in enumerate(ints):
        h ^= (np.asarray(a).astype(np.uint32) + np.uint32(0x9E3779B9 + k)) * np.uint32(0x85EBCA6B)
        h ^= h >> np.uint32(13)
        h *= np.uint32(0xC2B2AE35)
        h ^= h >> np.uint32(16)
    return (h & np.uint32(0xFFFF)).astype(np.float32) / 65536


def _sky(world: World, dirs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sky colour (N, 3) per ray: a horizon-to-zenith gradient with a glow around the sun; and the
    same with the square sun disc drawn in."""
    up = np.clip(dirs[:, 1:2] * 2.5, 0, 1)
    toward = dirs @ world.sun
    glow = 0.25 * np.maximum(toward, 0)[:, None] ** 24
    sky = np.minimum(_SKY_HORIZON * (1 - up) + _SKY_ZENITH * up + glow, 1)
    side = np.cross(world.sun, [0.0, 1.0, 0.0]).astype(np.float32)
    side /= np.linalg.norm(side)
    lift = np.cross(side, world.sun)
    u, v = dirs @ side, dirs @ lift
    disc = (toward > 0) & (np.abs(u) < _SUN_HALF * toward) & (np.abs(v) < _SUN_HALF * toward)
    return sky, np.where(disc[:, None], _SUN_RGB, sky)


def _texel(hit: dict, origins: np.ndarray, dirs: np.ndarray, shape: tuple) -> tuple:
    """World cell (x, y, z) of each hit and face coordinates (u, v) in [0, 1); v runs up the side faces."""
    t = np.minimum(hit["t"], 2 * MAX_DIST)[:, None]
    p = origins + t * dirs
    cx, rest = np.divmod(hit["cell"], shape[1] * shape[2])
    cy, cz = np.divmod(rest, shape[2])
    f = np.clip(p - np.stack([cx, cy, cz], 1), 0, 0.999)
    axis = hit["axis"]
    u = np.where(axis == 0, f[:, 2], f[:, 0])
    v = np.where(axis == 1, f[:, 2], f[:, 1])
    return (cx - _PAD) % WORLD_XZ, cy - _PAD_Y, (cz - _PAD) % WORLD_XZ, u, v


def _shade(world: World, hit: dict, origins: np.ndarray, dirs: np.ndarray, shape: tuple) -> np.ndarray:
    """Colours (N, 3) in [0, 1]: block colour x face light x texture noise, fogged into the sky."""
    kind, axis = hit["kind"].astype(np.int64), hit["axis"]
    x, y, z, u, v = _texel(hit, origins, dirs, shape)
    tu, tv = np.floor(u * 8).astype(np.int32), np.floor(v * 8).astype(np.int32)
    side = axis != 1
    grass_edge = 0.78 - 0.12 * _hash(x, y, z, tu)
    colour_id = np.where((kind == GRASS) & side & (v < grass_edge), DIRT, kind)
    colour_id = np.where((kind == TRUNK) & ~side, _LOG_END, colour_id)
    rgb = _RGB[np.where(kind == SKY, AIR, colour_id)]
    light = np.where((axis == 1) & (dirs[:, 1] > 0), 0.5, _FACE_LIGHT[axis])
    near = np.clip(1 - hit["t"] / 16, 0, 1)
    grain = np.where(kind == LEAVES, 0.35, 0.14) * near * (_hash(x, y, z, tu * 8 + tv, axis) - 0.5)
    block = 0.94 + 0.12 * _hash(x, y, z)
    lit = rgb * (light * block * (1 + grain))[:, None]
    sky, with_sun = _sky(world, dirs)
    lit = np.where((kind == WATER)[:, None], 0.75 * lit + 0.25 * sky, lit)
    fog = np.clip((hit["t"] - FOG_START) / (MAX_DIST - FOG_START), 0, 1)[:, None]
    is_sky = ((kind == AIR) | (kind == SKY))[:, None]
    return np.where(is_sky, with_sun, lit * (1 - fog) + sky * fog)


def render(
    world: World,
    positions: np.ndarray,
    yaw: np.ndarray,
    pitch: np.ndarray,
    return_kinds: bool = False,
    chunk: int = 25,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Frames (T, 64, 64, 3) uint8 seen from eye positions (T, 3) with yaw and pitch (T,), rendered
    `chunk` frames at a time. With return_kinds, also (T, 64, 64) uint8: the block kind each pixel
    shows (AIR for sky)."""
    padded = _padded(world)
    frames = np.zeros((len(positions), SIZE, SIZE, 3), np.uint8)
    kinds = np.zeros((len(positions), SIZE, SIZE), np.uint8)
    offset = np.array([_PAD, _PAD_Y, _PAD], np.float32)
    for s in range(0, len(positions), chunk):
        dirs = _camera_rays(yaw[s : s + chunk], pitch[s : s + chunk])
        f = len(dirs)
        dirs = dirs.reshape(-1, 3)
        eye = np.asarray(positions[s : s + chunk], np.float32) + offset
        eye[:, [0, 2]] = (eye[:, [0, 2]] - _PAD) % WORLD_XZ + _PAD
        origins = np.repeat(eye, SIZE * SIZE, axis=0)
        hit = cast_rays(padded, origins, dirs)
        rgb = _shade(world, hit, origins, dirs, padded.shape)
        frames[s : s + f] = (np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8).reshape(f, SIZE, SIZE, 3)
        kinds[s : s + f] = np.where(hit["kind"] == SKY, AIR, hit["kind"]).reshape(f, SIZE, SIZE)
    return (frames, kinds) if return_kinds else frames


def walk_actions(positions: np.ndarray, yaw: np.ndarray, pitch: np.ndarray, forward: np.ndarray) -> np.ndarray:
    """(T, 11) float32 actions in MineRL Navigate's layout (dataspec.MINERL_ACTIONS) of a walk from
    `walk_with_keys`: actions[t] moves the camera from frame t to frame t + 1 (the last row, leading out
    of the walk, is zeros). camera_yaw and camera_pitch are the changes of the rendered yaw and pitch in
    degrees (MineRL's pitch grows looking down, ours looking up: the sign flips), forward the walker's
    forward key, jump 1 while its eye rises onto a higher block; the keys it never uses stay 0."""
    field = {name: i for i, name in enumerate(dataspec.MINERL_ACTIONS)}
    actions = np.zeros((len(yaw), len(field)), np.float32)
    actions[:-1, field["camera_pitch"]] = -np.degrees(np.diff(pitch))
    actions[:-1, field["camera_yaw"]] = np.degrees(np.diff(yaw))
    actions[:-1, field["forward"]] = forward[1:]
    actions[:-1, field["jump"]] = np.diff(positions[:, 1]) > 1e-9
    return actions


def minerl_video(
    num_frames: int, rng: np.random.Generator, with_actions: bool = False
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """One (T, 64, 64, 3) uint8 walk through a new random world; `with_actions`: and its (T, 11) actions
    (`walk_actions`), recorded from the same walk (the frames do not change)."""
    world = random_world(rng)
    positions, yaw, pitch, forward = walk_with_keys(world, num_frames, rng)
    frames = render(world, positions, yaw, pitch)
    return (frames, walk_actions(positions, yaw, pitch, forward)) if with_actions else frames


def video(
    num_frames: int, rng: np.random.Generator, split: str = "train", with_actions: bool = False
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """The generators' interface: one (T, 64, 64, 3) walk (the split only chooses the seed), with its
    actions when `with_actions`."""
    return minerl_video(num_frames, rng, with_actions)
