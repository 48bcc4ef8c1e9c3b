"""Offline stand-ins for the paper's datasets, written once under ``<datadir>/generated/<dataset>/``.

Each dataset's module has ``video(num_frames, rng, split) -> (T, 64, 64, C) uint8``. Video i of a
split uses ``np.random.default_rng([GEN_SEEDS[split], i])``: fixed seeds, never the run's seed, so
every run of every config sees the same data, and a smaller set is a prefix of a larger one.
"""

from __future__ import annotations

import importlib
import os
import pathlib
from typing import Any

import numpy as np

SIZE = 64  # frames are SIZE x SIZE pixels
GENERATOR_VERSION = 1  # part of the generated file names: bump when a generator changes its output
GEN_SEEDS = {"train": 1, "test": 2}  # fixed per split, so generated data never depends on config.seed

# dataset -> (module, channels, frames per train video, frames per test video)
GENERATORS = {
    "mmnist": ("generators.mmnist", 1, 100, 1000),
    "mazes": ("generators.mazes", 3, 300, 300),
    "minerl": ("generators.minerl", 3, 500, 500),
}


def generate(dataset: str, num_videos: int, num_frames: int, seed: int, split: str = "train") -> np.ndarray:
    """(N, T, 64, 64, C) uint8 videos of `dataset`; video i depends only on (seed, i)."""
    channels = GENERATORS[dataset][1]
    out = np.zeros((num_videos, num_frames, SIZE, SIZE, channels), np.uint8)
    _fill(out, dataset, split, seed)
    return out


def _fill(out: np.ndarray, dataset: str, split: str, seed: int, progress: bool = False) -> None:
    """Write generated videos into `out` (N, T, 64, 64, C); video i uses the seed (seed, i)."""
    video = importlib.import_module(GENERATORS[dataset][0]).video
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


def ensure_generated(config: Any, split: str, progress: bool = True) -> pathlib.Path:
    """Generate one split unless its file exists; written to a temp file, then renamed (atomic),
    so an interrupted generation is redone, never read."""
    path = generated_file(config, split)
    if path.exists():
        return path
    _, channels, train_frames, test_frames = GENERATORS[config.dataset]
    frames = train_frames if split == "train" else test_frames
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        shape = (count(config, split), frames, SIZE, SIZE, channels)
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
        _fill(out, config.dataset, split, GEN_SEEDS[split], progress)
        out.flush()
        del out
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # an interrupted run leaves no partial file behind
    print(f"generated {path}", flush=True)  # the progress bar showed the time it took
    return path
