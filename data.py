"""The videos a run reads: one interface over the paper's archives and the offline stand-ins,
and the grain loaders over it.

Two sources give the same thing, uint8 videos of shape (T, 64, 64, C):

- ``paper``: the archives the paper used, prepared by the TF-free tfds builders of ``builders.py``
  into array_record files under ``<datadir>/<name>/``.
- ``generated``: the offline stand-ins of ``generators/``, written once under
  ``<datadir>/generated/<dataset>/``; they depend on fixed seeds, never on the run's seed.

Loaders cut videos into consecutive clips (the remainder dropped), as the paper's code did.
Training clips are shuffled per epoch with ``config.seed`` and the iterator's state is a small
JSON dict, so a resumed run continues the exact same stream of batches.

    python data.py prepare --config configs/mazes.yml [--data_source paper]   # ahead of training
"""

from __future__ import annotations

import os
import pathlib
import sys
from collections.abc import Sequence
from typing import Any

import grain
import jax
import numpy as np
from absl import logging as absl_logging

import builders
import dataspec
import generators
from errors import DataError

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
    """What the config's validation cannot know: the split asked for."""
    if split not in ("train", "test"):
        raise DataError(f"split {split!r} is not valid; valid: train, test")


def check_source(config: Any) -> None:
    """Check, before a model is built or a run folder made, that config's data can be had:
    datadir is a folder (or can be made) that can be written where data is still to be written,
    and a paper archive is prepared, in the manual folder or reachable. Raises DataError with one line."""
    _check_config(config, "train")
    datadir = pathlib.Path(config.datadir)
    if datadir.exists() and not datadir.is_dir():
        raise DataError(f"key 'datadir' got '{config.datadir}', which is a file; pass a folder for the datasets")
    if config.data_source == "paper":
        if not builders.paper_builder(config).is_prepared():
            _check_writable(datadir, config)
        builders.check_available(config)
    elif not all(generators.generated_file(config, split).exists() for split in ("train", "test")):
        _check_writable(generators.generated_dir(config), config)


def _check_writable(folder: pathlib.Path, config: Any) -> None:
    """`folder` exists and can be written, or can be made: its nearest existing parent is a folder we may write."""
    there = folder
    while not there.exists() and there != there.parent:
        there = there.parent
    if not there.is_dir():
        raise DataError(f"key 'datadir' got '{config.datadir}', inside {there}, which is a file; pass a folder")
    if not os.access(there, os.W_OK | os.X_OK):
        raise DataError(f"key 'datadir' got '{config.datadir}': cannot write in {there}; pass a writable --datadir")


def open_videos(config: Any, split: str) -> Videos:
    """The videos of one split of config.dataset from config.data_source, preparing them if needed."""
    _check_config(config, split)
    if config.data_source == "generated":
        array = np.load(generators.ensure_generated(config, split, config.progress), mmap_mode="r")
        return Videos(config.dataset, split, array, array.shape[1], lambda a, i: a[i])
    builder = builders.prepare_paper(config)
    source = builder.as_data_source(split=split)
    if len(source) == 0:
        raise DataError(f"{builder.data_dir}: split '{split}' of {builder.name} holds no videos")
    length = len(source[0]["video"])
    return Videos(builder.name, split, source, length, lambda s, i: s[i]["video"])


def describe_source(config: Any) -> str:
    """One line saying which data a run uses, for logs (nothing is ever substituted silently)."""
    _check_config(config, "train")
    if config.data_source == "generated":
        kind = dataspec.get(config.dataset).description
        return (
            f"{config.dataset}: generated {kind} ({config.num_gen_train} train / {config.num_gen_test} test videos) "
            f"at {generators.generated_dir(config)}"
        )
    archive = dataspec.get(config.dataset)
    where = pathlib.Path(config.datadir) / archive.archive
    return f"{config.dataset}: paper archive {archive.archive} ({archive.url}) prepared at {where}"


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


def _check_length(videos: Videos, seq_len: int, key: str) -> None:
    if videos.length < seq_len:
        raise DataError(
            f"key '{key}' got {seq_len}; the {videos.name} {videos.split} videos have {videos.length} frames"
        )


def _read_options(batch_size: int) -> grain.ReadOptions:
    """Clips read ahead on several threads, for loaders that batch after reading."""
    return grain.ReadOptions(num_threads=max(4, os.cpu_count() or 1), prefetch_buffer_size=max(16, 2 * batch_size))


# The train loader reads whole batches ahead: a few are enough to keep the step fed, and each is
# batch_size clips, so that reading more would hold gigabytes for large batches.
TRAIN_READ_AHEAD = grain.ReadOptions(num_threads=4, prefetch_buffer_size=4)


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
    _check_length(videos, config.seq_len, "seq_len")
    clips = _Clips(videos, config.seq_len, videos.length // config.seq_len, len(videos))
    batch = config.batch_size // count
    if len(clips) * config.num_epochs < config.batch_size:
        raise DataError(
            f"{videos.name} train: {len(clips)} clips x {config.num_epochs} epochs is fewer than one batch "
            f"(batch_size = {config.batch_size}); use more videos, a shorter seq_len or more epochs"
        )
    ds = grain.MapDataset.source(clips).shuffle(seed=int(config.seed)).repeat(config.num_epochs)
    # Global batch s is clips [s*B, (s+1)*B) of the stream; process p reads its rows [p*b, (p+1)*b),
    # so the assembled batch equals a single process's, row for row (and so do the model's noises).
    ds = ds.batch(batch, drop_remainder=True)[index::count]
    return iter(ds.to_iter_dataset(TRAIN_READ_AHEAD))


MEAN_FRAME_VIDEOS = 1000  # the training videos the mean frame is taken over (all of mmnist's; a cap for large archives)


def mean_frame(config: Any) -> np.ndarray:
    """The mean frame (H, W, C) in [0, 1] over every frame of the first MEAN_FRAME_VIDEOS training videos:
    the constant prediction of least squared error, scored by evaluations as a reference (references.py)."""
    videos = open_videos(config, "train")
    count = min(len(videos), MEAN_FRAME_VIDEOS)
    total = sum(np.asarray(videos[i], np.float64).sum(axis=0) for i in range(count))
    return (total / (count * videos.length * 255.0)).astype(np.float32)


def make_eval_loader(
    config: Any,
    seq_len: int,
    batch_size: int,
    num_videos: int | None = None,
    split: str = "test",
    key: str = "eval_seq_len",
) -> grain.IterDataset:
    """Batches (b, seq_len, 64, 64, C) uint8 of the first seq_len frames of each video, in order.

    One clip per video, taken from its start; the first `num_videos` videos (all when None);
    the last batch may be smaller. Not sharded: every process sees the same batches.
    Iterating the result again starts from the first batch.
    """
    videos = open_videos(config, split)
    _check_length(videos, seq_len, key)
    count = len(videos) if num_videos is None else min(num_videos, len(videos))
    ds = grain.MapDataset.source(_Clips(videos, seq_len, 1, count)).to_iter_dataset(_read_options(batch_size))
    return ds.batch(batch_size, drop_remainder=False)


def prepare(config: Any) -> None:
    """Prepare both splits of config's dataset ahead of training (generate or download and convert)."""
    check_source(config)
    for split in ("train", "test"):
        videos = open_videos(config, split)
        print(f"{describe_source(config)}: {split} split ready, {len(videos)} videos of {videos.length} frames")


def main(argv: list[str] | None = None) -> None:
    """python data.py prepare --config configs/<dataset>.yml [--key value ...]"""
    import cli
    import config as cfg_lib

    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] != "prepare":
        print("usage: python data.py prepare --config configs/<dataset>.yml [--data_source paper] [--key value ...]")
        raise SystemExit(2)
    absl_logging.set_verbosity(absl_logging.ERROR)  # tfds and orbax info lines
    cli.main_guard(lambda: prepare(cfg_lib.parse(argv[1:], script="data.py")))


if __name__ == "__main__":
    main()
