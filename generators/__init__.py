"""Offline stand-ins for the paper's datasets, written once under ``<datadir>/generated/<dataset>/``.

Each dataset's module (its entry in dataspec.py names it) has ``video(num_frames, rng, split) -> (T, S, S, C)
uint8`` with S the dataset's frame size. Video i of a
split uses ``np.random.default_rng([GEN_SEEDS[split], i])``: fixed seeds, never the run's seed, so
every run of every config sees the same data, and a smaller set is a prefix of a larger one.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib
import os
import pathlib
from collections.abc import Iterator
from typing import Any

import numpy as np

import cli
import dataspec

GENERATOR_VERSION = 1  # part of the generated file names: bump when a generator changes its output
GEN_SEEDS = {"train": 1, "test": 2}  # fixed per split, so generated data never depends on config.seed


def generate(dataset: str, num_videos: int, num_frames: int, seed: int, split: str = "train") -> np.ndarray:
    """(N, T, S, S, C) uint8 videos of `dataset`; video i depends only on (seed, i)."""
    spec = dataspec.get(dataset)
    out = np.zeros((num_videos, num_frames, spec.frame_size, spec.frame_size, spec.channels), np.uint8)
    _fill(out, dataset, split, seed)
    return out


def _fill(out: np.ndarray, dataset: str, split: str, seed: int, progress: bool = False) -> None:
    """Write generated videos into `out` (N, T, S, S, C); video i uses the seed (seed, i)."""
    video = importlib.import_module(dataspec.get(dataset).generator).video
    indices = range(len(out))
    if progress:
        from tqdm import tqdm

        indices = tqdm(indices, desc=f"generating {dataset} {split}", unit="video", dynamic_ncols=True)
    for i in indices:
        out[i] = video(out.shape[1], np.random.default_rng([seed, i]), split)


def count(config: Any, split: str) -> int:
    return config.num_gen_train if split == "train" else config.num_gen_test


def generated_dir(config: Any) -> pathlib.Path:
    """Folder of the generated stand-in of config.dataset."""
    return pathlib.Path(config.datadir) / "generated" / config.dataset


def generated_file(config: Any, split: str) -> pathlib.Path:
    """The .npy file of one generated split; its name holds the video count and generator version."""
    return generated_dir(config) / f"{split}-n{count(config, split)}-v{GENERATOR_VERSION}.npy"


@contextlib.contextmanager
def _generating(folder: pathlib.Path) -> Iterator[None]:
    """One generator at a time in `folder`: an exclusive flock on <folder>/lock, which the kernel
    releases when its holder ends, killed or not. Whoever holds it may remove every temporary
    file there, since no other generator can be writing one."""
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / "lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting for another process generating data in {folder}", flush=True)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the flock


def _remove_leftovers(folder: pathlib.Path) -> None:
    """Delete the temporary files of generations that were killed (kill -9, power loss) before
    they could remove their own; call it only while holding the folder's lock."""
    for tmp in sorted(folder.glob("*.npy.tmp-*")):
        size = tmp.stat().st_size
        tmp.unlink(missing_ok=True)
        print(f"removed {tmp} ({size / 2**20:.0f} MiB), left by an interrupted generation", flush=True)


def ensure_generated(config: Any, split: str, progress: bool = True) -> pathlib.Path:
    """Generate one split unless its file exists; written to a temp file, then renamed (atomic),
    so an interrupted generation is redone, never read. One process generates at a time (others
    wait and then read its file), and it first removes what killed generations left."""
    path = generated_file(config, split)
    if path.exists():
        return path
    with _generating(path.parent):
        if path.exists():  # made by the process we waited for
            return path
        _remove_leftovers(path.parent)
        _generate(config, split, path, progress)
    print(f"generated {path}", flush=True)  # the progress bar showed the time it took
    return path


def _generate(config: Any, split: str, path: pathlib.Path, progress: bool) -> None:
    """Write one split into a temporary file beside `path`, then rename it to `path`."""
    spec = dataspec.get(config.dataset)
    frames = spec.train_frames if split == "train" else spec.test_frames
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        with cli.undone_on_stop(lambda: tmp.unlink(missing_ok=True)):  # a stop by a signal removes it too
            shape = (count(config, split), frames, spec.frame_size, spec.frame_size, spec.channels)
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
            _fill(out, config.dataset, split, GEN_SEEDS[split], progress)
            out.flush()
            del out
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # an interrupted run leaves no partial file behind
