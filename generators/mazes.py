"""Maze walks: first-person views of random labmaze mazes from a vectorised numpy raycaster.

A stand-in for the paper's GQN mazes: textured walls of distinct colours, a checkerboard floor,
a ceiling and fog, and a camera that walks and turns smoothly along shortest paths between random cells;
its moves (turn, forward) are recorded as actions (`walk_actions`).
"""

from __future__ import annotations

import collections
import dataclasses
import math

import numpy as np

import dataspec

SIZE = dataspec.get("mazes").frame_size  # frames are SIZE x SIZE pixels

_MAZE_SIZE = 13  # cells per side (odd, as labmaze wants)
_FOV = np.deg2rad(66.0)  # horizontal field of view
_WALK_SPEED = 0.12  # cells per frame
_TURN_SPEED = np.deg2rad(9.0)  # radians per frame
_FOG = 0.12  # exponential fog density per cell of distance
_PALETTE = np.array(
    [
        [0.80, 0.25, 0.20],
        [0.25, 0.55, 0.85],
        [0.30, 0.70, 0.30],
        [0.85, 0.75, 0.25],
        [0.65, 0.35, 0.75],
        [0.90, 0.55, 0.20],
        [0.30, 0.75, 0.75],
        [0.75, 0.75, 0.75],
    ],
    np.float32,
)  # wall colours; each maze colours its walls in blocks from this palette


@dataclasses.dataclass(frozen=True)
class Maze:
    """A maze layout and its look: walls (H, W) bool, wall colours (H, W, 3), floor/ceiling colours."""

    walls: np.ndarray
    wall_rgb: np.ndarray
    floor_rgb: np.ndarray  # (2, 3): the two checkerboard colours
    ceiling_rgb: np.ndarray  # (3,)


def random_maze(rng: np.random.Generator) -> Maze:
    """A random labmaze layout with block-wise wall colours and random floor/ceiling tints."""
    import labmaze

    layout = labmaze.RandomMaze(
        height=_MAZE_SIZE,
        width=_MAZE_SIZE,
        max_rooms=4,
        room_min_size=3,
        room_max_size=5,
        spawns_per_room=0,
        objects_per_room=0,
        random_seed=int(rng.integers(2**31)),
        simplify=False,
    )
    walls = np.array(layout.entity_layer) == "*"
    blocks = rng.integers(0, len(_PALETTE), size=(_MAZE_SIZE // 3 + 1,) * 2)
    idx = np.repeat(np.repeat(blocks, 3, axis=0), 3, axis=1)[:_MAZE_SIZE, :_MAZE_SIZE]
    floor = rng.uniform(0.25, 0.6, size=3).astype(np.float32)
    return Maze(walls, _PALETTE[idx], np.stack([floor, floor * 0.7]), rng.uniform(0.6, 0.9, size=3).astype(np.float32))


def _bfs_path(walls: np.ndarray, start: tuple[int, int], goal: tuple[int, int]) -> list[tuple[int, int]]:
    """Shortest 4-connected path of free (row, col) cells from start to goal, both included."""
    parent = {start: start}
    queue = collections.deque([start])
    while queue:
        cell = queue.popleft()
        if cell == goal:
            break
        r, c = cell
        for nxt in ((r + 1, c), (r - 1, c), (r, c + 1), (r, c - 1)):
            if not walls[nxt] and nxt not in parent:
                parent[nxt] = cell
                queue.append(nxt)
    path = [goal]
    while path[-1] != start:
        path.append(parent[path[-1]])
    return path[::-1]


def _wrap(angle: float) -> float:
    return (angle + math.pi) % (2 * math.pi) - math.pi


def maze_walk(walls: np.ndarray, num_frames: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Camera positions (T, 2) as (x, y) and headings (T,) of a walk between random free cells.

    The camera moves along straight lines between cell centres (so it never enters a wall),
    turns toward its next waypoint at a bounded rate, and slows down while turning.
    """
    free = np.argwhere(~walls)
    cell = tuple(free[rng.integers(len(free))])
    pos = np.array([cell[1] + 0.5, cell[0] + 0.5])
    heading = rng.uniform(-math.pi, math.pi)
    waypoints: list[tuple[int, int]] = []
    positions, headings = np.zeros((num_frames, 2)), np.zeros(num_frames)
    for t in range(num_frames):
        while not waypoints:
            goal = tuple(free[rng.integers(len(free))])
            waypoints = _bfs_path(walls, cell, goal)[1:]
        target = np.array([waypoints[0][1] + 0.5, waypoints[0][0] + 0.5])
        delta = target - pos
        dist = float(np.hypot(*delta))
        turn = _wrap(math.atan2(delta[1], delta[0]) - heading) if dist > 1e-6 else 0.0
        heading = _wrap(heading + float(np.clip(turn, -_TURN_SPEED, _TURN_SPEED)))
        step = _WALK_SPEED * max(0.0, math.cos(turn)) ** 2
        if dist <= step:
            pos, cell = target, waypoints.pop(0)
        else:
            pos = pos + delta / dist * step
        positions[t], headings[t] = pos, heading
    return positions, headings


def _ray_directions(headings: np.ndarray) -> np.ndarray:
    """(F, W, 2) direction of the ray through each pixel column (camera plane at distance 1)."""
    forward = np.stack([np.cos(headings), np.sin(headings)], -1)[:, None]
    right = np.stack([-np.sin(headings), np.cos(headings)], -1)[:, None] * np.tan(_FOV / 2)
    camera_x = (2 * (np.arange(SIZE) + 0.5) / SIZE - 1)[None, :, None]
    return forward + right * camera_x


def cast_rays(walls: np.ndarray, pos: np.ndarray, rays: np.ndarray) -> dict[str, np.ndarray]:
    """DDA through the grid for all rays at once.

    Args: walls (H, W) bool; pos (F, 2) camera (x, y); rays (F, W, 2) directions.
    Returns (F, W) arrays: dist (perpendicular), side (0: hit an x-face), u (texture coordinate
    along the wall in [0, 1)), and the hit cell's row and col.
    """
    p = np.broadcast_to(pos[:, None], rays.shape)
    cell = np.floor(p).astype(np.int64)
    with np.errstate(divide="ignore"):
        delta = np.abs(1.0 / rays)
    step = np.where(rays < 0, -1, 1)
    side_dist = np.where(rays < 0, (p - cell) * delta, (cell + 1 - p) * delta)
    hit = np.zeros(rays.shape[:2], bool)
    side = np.zeros(rays.shape[:2], np.int64)
    for _ in range(walls.shape[0] + walls.shape[1]):
        go_x = side_dist[..., 0] < side_dist[..., 1]
        axis = np.where(go_x, 0, 1)
        move = ~hit
        side = np.where(move, axis, side)
        sel = move[..., None] & (np.arange(2) == axis[..., None])
        side_dist = side_dist + np.where(sel, delta, 0.0)
        cell = cell + np.where(sel, step, 0)
        hit |= walls[cell[..., 1], cell[..., 0]]
        if hit.all():
            break
    dist = np.take_along_axis(side_dist - delta, side[..., None], -1)[..., 0]
    along = np.take_along_axis(p + dist[..., None] * rays, (1 - side)[..., None], -1)[..., 0]
    return {
        "dist": np.maximum(dist, 1e-3),
        "side": side,
        "u": along - np.floor(along),
        "row": cell[..., 1],
        "col": cell[..., 0],
    }


def _is_mortar(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Brick texture: whether wall coordinates u (along, in [0, 1)) and v (down) fall on mortar."""
    course = np.floor(v * 4)
    return (v * 4 - course < 0.12) | (np.mod(u * 2 + 0.5 * course, 1.0) < 0.08)


def _fogged(rgb: np.ndarray, dist: np.ndarray) -> np.ndarray:
    """Colours `rgb` (..., 3) in [0, 1] seen through grey fog at distance `dist`, packed as uint32."""
    keep = np.exp(-_FOG * dist)[..., None]
    rgb8 = (255 * (rgb * keep + 0.5 * (1 - keep)) + 0.5).astype(np.uint32)
    return rgb8[..., 0] | rgb8[..., 1] << 8 | rgb8[..., 2] << 16


def _unpack(image: np.ndarray) -> np.ndarray:
    """(..., 3) uint8 view of colours packed as uint32 (little-endian RGBA)."""
    return image.astype("<u4").view(np.uint8).reshape(*image.shape, 4)[..., :3]


def _background(maze: Maze, positions: np.ndarray, rays: np.ndarray) -> np.ndarray:
    """Ceiling and checkerboard floor (F, 64, 64) as packed colours, fogged by distance."""
    half = SIZE // 2
    row_dist = half / (np.arange(half) + 0.5)  # floor distance per row below the horizon
    floor = _fogged(maze.floor_rgb[:, None], row_dist).reshape(-1)  # (2 * H/2,): checker, then row
    ceiling = _fogged(maze.ceiling_rgb, row_dist)[::-1]  # (H/2,), top row first
    spot = positions[:, None, None] + row_dist[None, :, None, None] * rays[:, None]  # (F, H/2, W, 2)
    checker = np.floor(spot).astype(np.int32).sum(-1) & 1
    lower = np.take(floor, checker * half + np.arange(half)[None, :, None])
    upper = np.broadcast_to(ceiling[None, :, None], lower.shape)
    return np.concatenate([upper, lower], axis=1)


def render_maze(maze: Maze, positions: np.ndarray, headings: np.ndarray) -> np.ndarray:
    """First-person views (F, 64, 64, 3) uint8 from camera positions (F, 2) and headings (F,)."""
    rays = _ray_directions(headings)
    hit = cast_rays(maze.walls, positions, rays)
    y = (np.arange(SIZE, dtype=np.float32) + 0.5 - SIZE / 2)[None, :, None]  # row relative to the horizon
    v = y * (hit["dist"].astype(np.float32) / SIZE)[:, None, :] + 0.5  # (F, H, W): 0 top of wall, 1 bottom
    mortar = _is_mortar(hit["u"].astype(np.float32)[:, None], v)
    shade = np.where(hit["side"] == 0, 1.0, 0.75)[..., None]
    lit = maze.wall_rgb[hit["row"], hit["col"]] * shade  # (F, W, 3)
    wall = np.where(mortar, _fogged(lit * 0.55, hit["dist"])[:, None], _fogged(lit, hit["dist"])[:, None])
    return _unpack(np.where((v >= 0) & (v < 1), wall, _background(maze, positions, rays)))


def walk_actions(positions: np.ndarray, headings: np.ndarray) -> np.ndarray:
    """(T, 2) float32 actions of a walk from `maze_walk`, the mazes' own moves (dataspec.py): actions[t]
    moves the camera from frame t to frame t + 1 (the last row, leading out of the walk, is zeros): turn
    (degrees, > 0 turns the view to the right) and forward (the distance walked, as a share of the full
    walking speed)."""
    actions = np.zeros((len(headings), 2), np.float32)
    actions[:-1, 0] = np.degrees((np.diff(headings) + math.pi) % (2 * math.pi) - math.pi)
    actions[:-1, 1] = np.hypot(*np.diff(positions, axis=0).T) / _WALK_SPEED
    return actions


def video(
    num_frames: int, rng: np.random.Generator, split: str = "train", with_actions: bool = False
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """One (T, 64, 64, 3) walk through a new random maze (the split only chooses the seed); with
    `with_actions`, also its (T, 2) actions (`walk_actions`, from the same walk: the frames do not change)."""
    maze = random_maze(rng)
    positions, headings = maze_walk(maze.walls, num_frames, rng)
    frames = render_maze(maze, positions, headings)
    return (frames, walk_actions(positions, headings)) if with_actions else frames
