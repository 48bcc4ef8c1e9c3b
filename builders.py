"""TensorFlow-free tfds builders for the paper's archives: zips of 64x64 mp4 files on archive.org.

Importing this module registers ``moving_mnist_2digit``, ``gqn_mazes`` and ``minerl_navigate`` with
tfds, so ``tfds.builder(name, data_dir=..., file_format="array_record")`` finds them. They decode the
mp4 files with imageio-ffmpeg and write ZLIB-compressed array_record files; nothing imports
TensorFlow. An archive can also be put by hand in ``<datadir>/downloads/manual/<name>.zip``.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from config import DataError

SIZE = 64  # frames are SIZE x SIZE pixels
DOWNLOAD_TIMEOUT_S = 10.0  # give up on an unreachable archive after this many seconds


@dataclasses.dataclass(frozen=True)
class PaperArchive:
    """Where a paper dataset lives and how its zip is laid out."""

    name: str  # tfds name, also the archive's file name without .zip
    url: str
    folders: dict  # split -> folder inside the zip (an extra top-level folder is allowed)
    channels: int


ARCHIVES = {
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
            f"put {archive.name}.zip in {manual} to prepare it offline, or train on the offline stand-in "
            "with --data_source generated"
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


class MovingMnist2digit(_VideoZipBuilder):
    """Moving MNIST with two digits: train-seq100 (100 frames) and test-seq1000 (1000 frames)."""

    name = "moving_mnist_2digit"
    ARCHIVE = ARCHIVES["mmnist"]


class GqnMazes(_VideoZipBuilder):
    """GQN mazes: first-person walks of 300 frames, 64x64 RGB."""

    name = "gqn_mazes"
    ARCHIVE = ARCHIVES["mazes"]


class MinerlNavigate(_VideoZipBuilder):
    """MineRL Navigate: 961 train and 225 test videos of 500 frames, 64x64 RGB."""

    name = "minerl_navigate"
    ARCHIVE = ARCHIVES["minerl"]


_BUILDERS = {"mmnist": MovingMnist2digit, "mazes": GqnMazes, "minerl": MinerlNavigate}


def paper_builder(config: Any) -> tfds.core.GeneratorBasedBuilder:
    """The tfds builder of config.dataset, storing under config.datadir as array_record."""
    return _BUILDERS[config.dataset](data_dir=str(config.datadir), file_format="array_record")


def check_available(config: Any) -> None:
    """Fail fast, before anything is built: the archive is prepared, in the manual folder, or reachable."""
    archive = ARCHIVES[config.dataset]
    if not paper_builder(config).is_prepared() and not (manual_dir(config) / f"{archive.name}.zip").exists():
        _check_reachable(archive, manual_dir(config), DOWNLOAD_TIMEOUT_S)


def prepare_paper(config: Any) -> tfds.core.GeneratorBasedBuilder:
    """Download (or take from the manual folder) and prepare the paper's archive; no-op when done.

    tfds writes into a temporary folder and renames it when complete, so an interrupted
    preparation is redone rather than read.
    """
    builder = paper_builder(config)
    if not builder.is_prepared():
        archive = ARCHIVES[config.dataset]
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
