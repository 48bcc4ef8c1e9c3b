"""Offline stand-ins for the paper's datasets, written once under ``<datadir>/generated/<dataset>/``.

Each dataset's module (its entry in dataspec.py names it) has ``video(num_frames, rng, split) -> (T, S, S, C)
uint8`` with S the dataset's frame size; a dataset with actions (its entry's ``actions``) also has
``video(num_frames, rng, split, with_actions=True) -> (frames, actions (T, A) float32)``, the same frames
and the actions that moved the camera, recorded without another random draw. Video i of a
split uses ``np.random.default_rng([GEN_SEEDS[split], i])``: fixed seeds, never the run's seed, so
every run of every config sees the same data, and a smaller set is a prefix of a larger one. A split's
actions are written beside its frames (``<split>-n<N>-v<version>-actions.npy``).
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


def generate(
    dataset: str, num_videos: int, num_frames: int, seed: int, split: str = "train", with_actions: bool = False
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """(N, T, S, S, C) uint8 videos of `dataset`; video i depends only on (seed, i). `with_actions` (a
    dataset with actions): also their (N, T, A) float32 actions."""
    spec = dataspec.get(dataset)
    assert spec.actions or not with_actions, f"{dataset} has no actions"
    out = np.zeros((num_videos, num_frames, spec.frame_size, spec.frame_size, spec.channels), np.uint8)
    actions = np.zeros((num_videos, num_frames, len(spec.actions)), np.float32) if with_actions else None
    _fill(out, dataset, split, seed, actions=actions)
    return (out, actions) if with_actions else out


def _fill(
    out: np.ndarray, dataset: str, split: str, seed: int, progress: bool = False, actions: np.ndarray | None = None
) -> None:
    """Write generated videos into `out` (N, T, S, S, C) and, unless None, their actions into `actions`
    (N, T, A); video i uses the seed (seed, i)."""
    video = importlib.import_module(dataspec.get(dataset).generator).video
    indices = range(len(out))
    if progress:
        from tqdm import tqdm

        indices = tqdm(indices, desc=f"generating {dataset} {split}", unit="video", dynamic_ncols=True)
    for i in indices:
        rng = np.random.default_rng([seed, i])
        if actions is None:
            out[i] = video(out.shape[1], rng, split)
        else:
            out[i], actions[i] = video(out.shape[1], rng, split, with_actions=True)


def count(config: Any, split: str) -> int:
    return config.num_gen_train if split == "train" else config.num_gen_test


def generated_dir(config: Any) -> pathlib.Path:
    """Folder of the generated stand-in of config.dataset."""
    return pathlib.Path(config.datadir) / "generated" / config.dataset


def generated_file(config: Any, split: str) -> pathlib.Path:
    """The .npy file of one generated split; its name holds the video count and generator version."""
    return generated_dir(config) / f"{split}-n{count(config, split)}-v{GENERATOR_VERSION}.npy"


def actions_file(config: Any, split: str) -> pathlib.Path:
    """The .npy file of a generated split's actions (N, T, A) float32, beside its frames (datasets with
    actions; a split generated before actions were recorded has none)."""
    frames = generated_file(config, split)
    return frames.with_name(f"{frames.stem}-actions.npy")


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
    """Write one split (and its actions, for a dataset with actions) into temporary files beside `path`,
    then rename them: the actions first, so that the frames' file marks a complete split."""
    spec = dataspec.get(config.dataset)
    frames = spec.train_frames if split == "train" else spec.test_frames
    actions_path = actions_file(config, split)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    tmp_actions = actions_path.with_name(f"{actions_path.name}.tmp-{os.getpid()}")

    def remove_temporaries() -> None:
        for p in (tmp, tmp_actions):
            p.unlink(missing_ok=True)

    try:
        with cli.undone_on_stop(remove_temporaries):  # a stop by a signal removes them too
            shape = (count(config, split), frames, spec.frame_size, spec.frame_size, spec.channels)
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
            actions = None
            if spec.actions:
                actions = np.lib.format.open_memmap(
                    tmp_actions, mode="w+", dtype=np.float32, shape=(*shape[:2], len(spec.actions))
                )
            _fill(out, config.dataset, split, GEN_SEEDS[split], progress, actions)
            out.flush()
            del out
            if actions is not None:
                actions.flush()
                del actions
                os.replace(tmp_actions, actions_path)
            os.replace(tmp, path)
    finally:
        remove_temporaries()  # an interrupted run leaves no partial file behind
