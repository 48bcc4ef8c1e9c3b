"""TensorFlow-free tfds builders for the paper's archives: zips of 64x64 mp4 files on archive.org.

Importing this module registers ``moving_mnist_2digit``, ``gqn_mazes`` and ``minerl_navigate`` with
tfds, so ``tfds.builder(name, data_dir=..., file_format="array_record")`` finds them. They decode the
mp4 files with imageio-ffmpeg and write ZLIB-compressed array_record files; nothing imports
TensorFlow. An archive can also be put by hand in ``<datadir>/downloads/manual/<name>.zip``.

An archive that ships its actions (dataspec.py: ``archive_actions``, MineRL Navigate) keeps them beside
each split's mp4 files in ``metadata.json``: a mapping from each file's name to per-frame lists, its
``actions`` entry one action per frame in MineRL Navigate's layout (dataspec.MINERL_ACTIONS). Its builder
(version ACTIONS_VERSION on) stores them as ``actions`` (T, A) float32 beside ``video``, and (0, A) for a
video they are missing for (the videos stay usable without them); a folder prepared by the version
before stays readable, without actions (``paper_builder``).
"""

from __future__ import annotations

import json
import os
import pathlib
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

import dataspec
from dataspec import Dataset
from errors import DataError

DOWNLOAD_TIMEOUT_S = 10.0  # give up on an unreachable archive after this many seconds
METADATA = "metadata.json"  # beside a split's mp4 files in an archive that ships its actions
ACTIONS_VERSION = tfds.core.Version("1.1.0")  # the builder version that stores an archive's actions


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


def decode_mp4(data: bytes, channels: int, where: str, size: int = 64) -> np.ndarray:
    """(T, size, size, C) uint8 frames of an mp4 file's bytes; `where` names the file in errors."""
    import imageio.v3 as iio

    try:
        frames = iio.imread(data, extension=".mp4", plugin="FFMPEG", index=None)
    except Exception as e:  # noqa: BLE001 (imageio raises OSError, RuntimeError, StopIteration, ...)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(f"{where}: not a readable mp4 video ({first})") from None
    if frames.ndim != 4 or frames.shape[1:3] != (size, size) or len(frames) == 0:
        raise DataError(f"{where}: expected frames of {size}x{size} pixels, got an array of shape {frames.shape}")
    if channels == 1:
        return np.rint(frames.mean(-1, keepdims=True)).astype(np.uint8)
    return np.ascontiguousarray(frames[..., :3])


def read_zip_videos(
    zip_path: os.PathLike | str, folder: str, channels: int, size: int = 64
) -> Iterator[tuple[str, np.ndarray]]:
    """(member name, video) for each mp4 in one split folder of a zip; errors name the file."""
    try:
        with zipfile.ZipFile(zip_path) as zf:
            members = _split_members(zf, folder)
            if not members:
                dirs = sorted({n.rsplit("/", 1)[0] for n in zf.namelist() if "/" in n})[:6]
                raise DataError(f"{zip_path}: no mp4 files in folder '{folder}' (folders found: {dirs})")
            for name in members:
                yield name, decode_mp4(zf.read(name), channels, f"{zip_path}:{name}", size)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError) as e:
        raise DataError(f"{zip_path}: corrupt or truncated zip archive ({e}); delete it and fetch it again") from None


def read_zip_metadata(zip_path: os.PathLike | str, folder: str) -> tuple[dict[str, Any], str]:
    """The METADATA mapping of one split folder of a zip (in `folder` or `<top>/<folder>`, as its mp4
    files), or an empty one and why: a missing or unreadable METADATA leaves the videos usable."""
    try:
        with zipfile.ZipFile(zip_path) as zf:
            names = [n for n in zf.namelist() if n.rpartition("/")[2] == METADATA]
            found = [n for n in names if (p := n.rpartition("/")[0]) == folder or p.partition("/")[2] == folder]
            if not found:
                return {}, f"no {METADATA} in folder '{folder}'"
            text = zf.read(found[0])
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError) as e:
        raise DataError(f"{zip_path}: corrupt or truncated zip archive ({e}); delete it and fetch it again") from None
    try:
        metadata = json.loads(text)
    except ValueError as e:
        return {}, f"{found[0]} is not valid JSON ({e})"
    if not isinstance(metadata, dict):
        return {}, f"{found[0]} is not a mapping of video file names to their metadata"
    return metadata, f"per video, {found[0]} holds no 'actions' of one action per frame"


def video_actions(metadata: dict[str, Any], member: str, frames: int, width: int) -> np.ndarray | None:
    """(frames, width) float32: the actions of the mp4 file `member` in its split's METADATA (keyed by its
    file name, with or without .mp4), or None where it gives none of that shape."""
    base = member.rpartition("/")[2]
    entry = metadata.get(base, metadata.get(base.removesuffix(".mp4")))
    if not isinstance(entry, dict) or "actions" not in entry:
        return None
    try:
        actions = np.asarray(entry["actions"], np.float32)
    except (TypeError, ValueError):
        return None
    return actions if actions.shape == (frames, width) else None


def manual_archive(archive: Dataset, dl_manager: tfds.download.DownloadManager) -> pathlib.Path | None:
    """The archive a user put in the manual folder, or None."""
    try:
        path = pathlib.Path(dl_manager.manual_dir) / f"{archive.archive}.zip"
    except AssertionError:  # tfds: the manual folder is missing or empty
        return None
    return path if path.exists() else None


def _check_reachable(archive: Dataset, manual: pathlib.Path, timeout: float) -> None:
    """Fail fast, in one line, when the archive's URL cannot be reached."""
    try:
        request = urllib.request.Request(archive.url, method="HEAD")
        with urllib.request.urlopen(request, timeout=timeout):
            pass
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = str(getattr(e, "reason", e)).replace("\n", " ")
        raise DataError(
            f"{archive.archive}: cannot download {archive.url} ({reason}); "
            f"put {archive.archive}.zip in {manual} to prepare it offline, or train on the offline stand-in "
            "with --data_source generated"
        ) from None


class _VideoZipBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """A tfds builder for a zip of mp4 videos, one folder per split; never imports TensorFlow. From
    version ACTIONS_VERSION on, the builder of an archive that ships its actions stores them too."""

    VERSION = tfds.core.Version("1.0.0")
    ARCHIVE: Dataset  # the registry entry (dataspec.py)
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Optional: put the archive <name>.zip (from archive.org) in <datadir>/downloads/manual "
        "to prepare it without downloading."
    )

    @property
    def has_actions(self) -> bool:
        """Whether this builder (at its version) stores each video's actions."""
        return self.ARCHIVE.archive_actions and self.version >= ACTIONS_VERSION

    def _info(self) -> tfds.core.DatasetInfo:
        channels, size = self.ARCHIVE.channels, self.ARCHIVE.frame_size
        video = tfds.features.Tensor(
            shape=(None, size, size, channels), dtype=np.uint8, encoding=tfds.features.Encoding.ZLIB
        )
        features = {"video": video}
        if self.has_actions:
            features["actions"] = tfds.features.Tensor(shape=(None, len(self.ARCHIVE.actions)), dtype=np.float32)
        return tfds.core.DatasetInfo(
            builder=self,
            description=f"{self.ARCHIVE.archive}: {self.ARCHIVE.description}, {size}x{size}x{channels} frames",
            features=tfds.features.FeaturesDict(features),
            homepage=self.ARCHIVE.url,
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict:
        zip_path = manual_archive(self.ARCHIVE, dl_manager) or dl_manager.download(self.ARCHIVE.url)
        return {split: self._generate_examples(zip_path, folder) for split, folder in self.ARCHIVE.folders.items()}

    def _generate_examples(self, zip_path: os.PathLike, folder: str) -> Iterator[tuple[str, dict]]:
        """Each video, and from version ACTIONS_VERSION on its actions: (0, A) where the archive gives
        none (the videos stay usable; a run asking for actions is refused, data.py), said in one line."""
        metadata, why = read_zip_metadata(zip_path, folder) if self.has_actions else ({}, "")
        width, missing, count = len(self.ARCHIVE.actions), 0, 0
        for name, video in read_zip_videos(zip_path, folder, self.ARCHIVE.channels, self.ARCHIVE.frame_size):
            example, count = {"video": video}, count + 1
            if self.has_actions:
                actions = video_actions(metadata, name, len(video), width)
                missing += actions is None
                example["actions"] = np.zeros((0, width), np.float32) if actions is None else actions
            yield name, example
        if missing:
            print(
                f"{zip_path}: {missing} of {count} videos in '{folder}' without actions ({why}); prepared without them"
            )


def _builder_class(dataset: Dataset) -> type[_VideoZipBuilder]:
    """The tfds builder of one dataset's archive; defining the class registers it with tfds. An archive
    with actions gets version ACTIONS_VERSION, and still reads a folder that version 1.0.0 prepared."""
    title = "".join(part.title() for part in dataset.archive.split("_"))  # MovingMnist2digit
    body = {"name": dataset.archive, "ARCHIVE": dataset, "__module__": __name__}
    if dataset.archive_actions:
        body |= {
            "VERSION": ACTIONS_VERSION,
            "SUPPORTED_VERSIONS": [tfds.core.Version("1.0.0")],
            "RELEASE_NOTES": {str(ACTIONS_VERSION): f"each frame's action, from the archive's {METADATA}"},
        }
    return type(title, (_VideoZipBuilder,), body)


_BUILDERS = {name: _builder_class(dataset) for name, dataset in dataspec.DATASETS.items()}


def paper_builder(config: Any) -> tfds.core.GeneratorBasedBuilder:
    """The tfds builder of config.dataset, storing under config.datadir as array_record: its current
    version, unless only an older supported one is prepared there (a folder prepared before the archive's
    actions were read stays in use, without them, rather than being prepared again)."""
    cls = _BUILDERS[config.dataset]
    builder = cls(data_dir=str(config.datadir), file_format="array_record")
    if builder.is_prepared():
        return builder
    for version in cls.SUPPORTED_VERSIONS:
        older = cls(data_dir=str(config.datadir), version=str(version), file_format="array_record")
        if older.is_prepared():
            return older
    return builder


def check_available(config: Any) -> None:
    """Fail fast, before anything is built: the archive is prepared, in the manual folder, or reachable."""
    archive = dataspec.get(config.dataset)
    if not paper_builder(config).is_prepared() and not (manual_dir(config) / f"{archive.archive}.zip").exists():
        _check_reachable(archive, manual_dir(config), DOWNLOAD_TIMEOUT_S)


def prepare_paper(config: Any) -> tfds.core.GeneratorBasedBuilder:
    """Download (or take from the manual folder) and prepare the paper's archive; no-op when done.

    tfds writes into a temporary folder and renames it when complete, so an interrupted
    preparation is redone rather than read.
    """
    builder = paper_builder(config)
    if not builder.is_prepared():
        archive = dataspec.get(config.dataset)
        if not (manual_dir(config) / f"{archive.archive}.zip").exists():
            _check_reachable(archive, manual_dir(config), DOWNLOAD_TIMEOUT_S)  # fail fast, before tfds
        builder.download_and_prepare(
            download_dir=str(pathlib.Path(config.datadir) / "downloads"),
            download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir(config))),
        )
    return builder


# ----------------------------------------------------------------------------------------------
# One interface over both sources, and the grain loaders
# ----------------------------------------------------------------------------------------------
