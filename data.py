"""The videos a run reads: one interface over the paper's archives and the offline stand-ins,
and the grain loaders over it.

Two sources give the same thing, uint8 videos of shape (T, 64, 64, C):

- ``paper``: the archives the paper used, prepared by the TF-free tfds builders of ``builders.py``
  into array_record files under ``<datadir>/<name>/``.
- ``generated``: the offline stand-ins of ``generators/``, written once under
  ``<datadir>/generated/<dataset>/``; they depend on fixed seeds, never on the run's seed.

Loaders cut videos into consecutive clips (the remainder dropped), as the paper's code did. With
``use_actions`` a batch is the pair (frames, actions), the actions (B, T, A) float32 of those frames
(dataspec.py: actions[t] is taken after frame t); mmnist has none, nor the mazes archive.
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
    """Random access to the videos of one split; every video has `length` frames. `getter(source, index)`
    reads a video's frames; `with_actions(source, index)`, when given, its frames and its actions (T, A)
    float32 in one read, and its clips then come with their actions."""

    def __init__(self, name: str, split: str, source: Sequence, length: int, getter, with_actions=None):
        self.name, self.split, self.length = name, split, length
        self._source, self._get, self._get_with_actions = source, getter, with_actions

    def __len__(self) -> int:
        return len(self._source)

    def __getitem__(self, index: int) -> np.ndarray:
        return self._get(self._source, index)

    @property
    def has_actions(self) -> bool:
        return self._get_with_actions is not None

    def clip(self, index: int, start: int, seq_len: int) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Frames [start, start + seq_len) of video `index` as a fresh uint8 array; with actions, the
        pair (frames, their actions as a fresh float32 array)."""
        if self.has_actions:
            video, actions = self._get_with_actions(self._source, index)
        else:
            video, actions = self[index], None
        if len(video) != self.length:
            raise DataError(
                f"{self.name} {self.split}: video {index} has {len(video)} frames, the others {self.length}; "
                "videos of one split must have equal lengths"
            )
        if actions is None:
            return np.array(video[start : start + seq_len])
        if len(actions) != len(video):
            raise DataError(
                f"{self.name} {self.split}: video {index} has {len(video)} frames and {len(actions)} actions; "
                "expected one action per frame"
            )
        return np.array(video[start : start + seq_len]), np.array(actions[start : start + seq_len], np.float32)


def _check_config(config: Any, split: str) -> None:
    """What the config's validation cannot know: the split asked for."""
    if split not in ("train", "test"):
        raise DataError(f"split {split!r} is not valid; valid: train, test")


def check_source(config: Any) -> None:
    """Check, before a model is built or a run folder made, that config's data can be had:
    datadir is a folder (or can be made) that can be written where data is still to be written,
    a paper archive is prepared, in the manual folder or reachable, and data prepared or generated
    already has actions when the run asks for them. Raises DataError with one line."""
    _check_config(config, "train")
    datadir = pathlib.Path(config.datadir)
    if datadir.exists() and not datadir.is_dir():
        raise DataError(f"key 'datadir' got '{config.datadir}', which is a file; pass a folder for the datasets")
    if config.data_source == "paper":
        builder = builders.paper_builder(config)
        if not builder.is_prepared():
            _check_writable(datadir, config)
        _check_prepared_actions(config, builder)
        builders.check_available(config)
        return
    if not all(generators.generated_file(config, split).exists() for split in ("train", "test")):
        _check_writable(generators.generated_dir(config), config)
    _generated_actions(config, ("train", "test"))


def _generated_actions(config: Any, splits: tuple[str, ...]) -> list[pathlib.Path] | None:
    """The actions files of generated splits when the run asks for actions (else None); splits generated
    before actions were recorded are a DataError saying how to generate them anew (never done silently:
    the folder is the user's)."""
    if not config.use_actions:
        return None
    older = [
        generators.generated_file(config, split)
        for split in splits
        if generators.generated_file(config, split).exists() and not generators.actions_file(config, split).exists()
    ]
    if older:
        names = " and ".join(p.name for p in older)
        raise DataError(
            f"{names} in {older[0].parent} {'were' if len(older) > 1 else 'was'} generated before actions were "
            f"recorded; to use actions, delete {'them' if len(older) > 1 else 'it'} (rm {' '.join(map(str, older))}) "
            "and run the command again: generated anew, with the same frames and their actions"
        )
    return [generators.actions_file(config, split) for split in splits]


def _check_prepared_actions(config: Any, builder) -> None:
    """A run asking for actions of a prepared paper archive that cannot give them: prepared before its
    builder read the archive's actions (a DataError saying how to prepare it again, never done silently),
    or from an archive whose metadata held none (its first training video has none)."""
    if not config.use_actions or not builder.is_prepared():
        return
    if not builder.has_actions:
        raise DataError(
            f"{builder.data_dir} was prepared before the archive's actions were read; to use actions, delete it "
            f"(rm -r {builder.data_dir}) and prepare it again: "
            f"python data.py prepare --config configs/{config.dataset}.yml"
        )
    first = builder.as_data_source(split="train")[0]
    if len(first["actions"]) != len(first["video"]):
        raise DataError(
            f"{builder.data_dir}: the archive gave no actions for its videos when it was prepared (its "
            f"{builders.METADATA} held no 'actions' of one action per frame); use_actions needs them"
        )


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
    """The videos of one split of config.dataset from config.data_source, preparing them if needed; with
    use_actions, their clips come with their actions."""
    _check_config(config, split)
    if config.data_source == "generated":
        array = np.load(generators.ensure_generated(config, split, config.progress), mmap_mode="r")
        paths = _generated_actions(config, (split,))
        if paths is None:
            return Videos(config.dataset, split, array, array.shape[1], lambda a, i: a[i])
        path = paths[0]
        actions = np.load(path, mmap_mode="r")
        width = len(dataspec.get(config.dataset).actions)
        if actions.shape != (*array.shape[:2], width):
            raise DataError(
                f"{path}: actions of shape {actions.shape}; expected {(*array.shape[:2], width)} for the videos "
                f"beside it; delete both files and run the command again to generate them anew"
            )
        return Videos(config.dataset, split, array, array.shape[1], lambda a, i: a[i], lambda a, i: (a[i], actions[i]))
    builder = builders.prepare_paper(config)
    _check_prepared_actions(config, builder)
    source = builder.as_data_source(split=split)
    if len(source) == 0:
        raise DataError(f"{builder.data_dir}: split '{split}' of {builder.name} holds no videos")
    length = len(source[0]["video"])
    return Videos(
        builder.name,
        split,
        source,
        length,
        lambda s, i: s[i]["video"],
        _video_and_actions if config.use_actions else None,
    )


def _video_and_actions(source: Sequence, index: int) -> tuple[np.ndarray, np.ndarray]:
    """A prepared archive's video and its actions, decoded from one read of its record."""
    record = source[index]
    return record["video"], record["actions"]


def describe_source(config: Any) -> str:
    """One line saying which data a run uses, for logs (nothing is ever substituted silently)."""
    _check_config(config, "train")
    actions = ", with their actions" if config.use_actions else ""
    if config.data_source == "generated":
        kind = dataspec.get(config.dataset).description
        return (
            f"{config.dataset}: generated {kind} ({config.num_gen_train} train / {config.num_gen_test} test videos) "
            f"at {generators.generated_dir(config)}{actions}"
        )
    archive = dataspec.get(config.dataset)
    where = pathlib.Path(config.datadir) / archive.archive
    return f"{config.dataset}: paper archive {archive.archive} ({archive.url}) prepared at {where}{actions}"


class _Clips:
    """grain source of consecutive clips: clip i is the (i % n)-th of video i // n (n clips per video)."""

    def __init__(self, videos: Videos, seq_len: int, clips_per_video: int, num_videos: int):
        self.videos, self.seq_len = videos, seq_len
        self.clips_per_video, self.num_videos = clips_per_video, num_videos

    def __len__(self) -> int:
        return self.num_videos * self.clips_per_video

    def __getitem__(self, index: int) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
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
    """Batches (B, seq_len, 64, 64, C) uint8 of training clips for this process (with use_actions, pairs of
    those and their actions (B, seq_len, A) float32).

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
    """Batches (b, seq_len, 64, 64, C) uint8 of the first seq_len frames of each video, in order (with
    use_actions, pairs of those and their actions (b, seq_len, A) float32).

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
