"""Frames and the files written from them: uint8/float conversion, grids and labelled videos, the
PNG, NPZ, MP4/GIF and text writers, per-frame plots and markdown tables (numpy, on the host).

Every writer writes atomically: a temporary file next to the target, then ``os.replace``, so an
interrupted run never leaves a truncated file.

Importing this module loads numpy only: imageio, Pillow and matplotlib are imported by the
functions that write with them, so the train step (steps.py) can convert frames here without
loading video or plotting code.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
import warnings
import zipfile
from collections.abc import Iterator

import numpy as np

# --- frames ------------------------------------------------------------------------------------


def to_unit(frames):
    """uint8 frames in [0, 255] -> float32 in [0, 1], as numpy or JAX arrays (a JAX array is
    converted on its device: 4x less transfer than float frames)."""
    return frames.astype(np.float32) / 255.0


def as_unit_float(videos: np.ndarray) -> np.ndarray:
    """uint8 in [0, 255] or float in [0, 1] -> float32 in [0, 1]."""
    videos = np.asarray(videos)
    return to_unit(videos) if videos.dtype == np.uint8 else np.clip(videos.astype(np.float32), 0.0, 1.0)


def to_uint8(frames: np.ndarray) -> np.ndarray:
    """Float frames in [0, 1] (values outside are clipped) -> uint8 in [0, 255], rounded."""
    return np.round(np.clip(np.asarray(frames, np.float32), 0.0, 1.0) * 255.0).astype(np.uint8)


def video_grid(frames: np.ndarray, per_row: int = 50, gap: int = 1, fill: int = 255) -> np.ndarray:
    """Lays frames (T, H, W, C) out in rows of ``per_row``: (rows*(H+gap)-gap, per_row*(W+gap)-gap, C).

    The last, partial row is kept (the official grid dropped it); gaps and its empty cells are
    ``fill`` (white by default, which separates dark Moving MNIST frames).
    """
    frames = np.asarray(frames)
    assert frames.ndim == 4, f"expected frames (T, H, W, C), got shape {frames.shape}"
    t, h, w, c = frames.shape
    per_row = min(per_row, t)
    rows = -(-t // per_row)
    grid = np.full((rows * (h + gap) - gap, per_row * (w + gap) - gap, c), fill, frames.dtype)
    for i, frame in enumerate(frames):
        top, left = (i // per_row) * (h + gap), (i % per_row) * (w + gap)
        grid[top : top + h, left : left + w] = frame
    return grid


LABEL_PANELS = ("truth", "prediction", "error")


def labelled_video(gt: np.ndarray, pred: np.ndarray, first_frame: int, context: np.ndarray | None = None) -> np.ndarray:
    """Truth | prediction | |error| side by side, labelled: frames (T, H, W, C) -> uint8 (T', H', W', 3).

    Each frame is upscaled (nearest neighbour) until a panel is at least 128 px wide, so that the
    text stays legible on 64 px frames. A label row names the panels; a title row above it gives
    the video frame number: the ``context`` frames (Tc, H, W, C), when given, come first as
    frames 1..Tc with blank prediction and error panels, then ``gt``/``pred`` as frames
    ``first_frame``, ``first_frame`` + 1, ... (T' = Tc + T). Truth and context are uint8 or float
    in [0, 1]; a float prediction is clipped to [0, 1]. The error is |truth - prediction|.
    """
    gt, pred = as_unit_float(gt), as_unit_float(pred)
    assert gt.shape == pred.shape and gt.ndim == 4, f"expected gt and pred (T, H, W, C), got {gt.shape} vs {pred.shape}"
    context = np.zeros((0, *gt.shape[1:]), np.float32) if context is None else as_unit_float(context)
    assert context.shape[1:] == gt.shape[1:], f"context frames {context.shape} vs gt {gt.shape}"
    h, w = gt.shape[1:3]
    layout = _Layout(scale=max(1, -(-128 // w)), h=h, w=w)
    panels = [np.concatenate([context, gt]), pred, np.abs(gt - pred)]
    video = np.repeat(layout.canvas(predicted=True)[None], len(context) + len(gt), axis=0)
    video[: len(context)] = layout.canvas(predicted=False)
    for i, frames in enumerate(panels):
        top, left = layout.panel_origin(i)
        first = len(context) if i else 0
        video[first:, top : top + layout.ph, left : left + layout.pw] = _upscaled(to_uint8(frames), layout.scale)
    last = first_frame + len(gt) - 1
    for t in range(len(video)):
        kind, number = ("context", t + 1) if t < len(context) else ("predicted", first_frame + t - len(context))
        layout.write_title(video[t], f"{kind} frame {number} / {last}")
    return video


def _upscaled(frames: np.ndarray, scale: int) -> np.ndarray:
    """uint8 frames (T, H, W, C) -> (T, scale H, scale W, 3), nearest neighbour, grey repeated to RGB."""
    frames = np.repeat(np.repeat(frames, scale, axis=1), scale, axis=2)
    return np.repeat(frames, 3, axis=-1) if frames.shape[-1] == 1 else frames


class _Layout:
    """Where the title row, the label row and the three panels of :func:`labelled_video` sit."""

    gap, background, ink, blank = 2, 255, 0, 200  # pixels between panels; grey levels

    def __init__(self, scale: int, h: int, w: int):
        from PIL import ImageFont

        self.scale, self.ph, self.pw = scale, scale * h, scale * w
        self.font = ImageFont.load_default(size=max(11, self.pw // 12))
        self.row = self.font.getbbox("Ag")[3] + 4  # height of a text row
        self.shape = (2 * self.row + self.ph, 3 * self.pw + 2 * self.gap, 3)

    def panel_origin(self, i: int) -> tuple[int, int]:
        return 2 * self.row, i * (self.pw + self.gap)

    def canvas(self, predicted: bool) -> np.ndarray:
        """The static part of a frame: background, panel labels, and for context frames the blank panels."""
        from PIL import Image, ImageDraw

        image = Image.new("RGB", self.shape[1::-1], (self.background,) * 3)
        draw = ImageDraw.Draw(image)
        for i, label in enumerate(LABEL_PANELS):
            top, left = self.panel_origin(i)
            self._centred(draw, (left + self.pw // 2, self.row + self.row // 2), label)
            if not predicted and i:
                draw.rectangle((left, top, left + self.pw - 1, top + self.ph - 1), fill=(self.blank,) * 3)
                self._centred(draw, (left + self.pw // 2, top + self.ph // 2), "context")
        return np.asarray(image)

    def write_title(self, frame: np.ndarray, text: str) -> None:
        """Writes ``text`` into the title row of ``frame`` (H', W', 3) in place."""
        from PIL import Image, ImageDraw

        image = Image.new("RGB", (self.shape[1], self.row), (self.background,) * 3)
        self._centred(ImageDraw.Draw(image), (self.shape[1] // 2, self.row // 2), text)
        frame[: self.row] = np.asarray(image)

    def _centred(self, draw, xy: tuple[int, int], text: str) -> None:
        draw.text(xy, text, fill=(self.ink,) * 3, font=self.font, anchor="mm")


# --- files (written atomically) ---------------------------------------------------------------


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """Yields a temporary path beside ``path`` (same suffix); moves it onto ``path`` on success,
    so a reader never sees a half-written file and an interrupted write leaves the old one."""
    folder, name = os.path.split(os.path.abspath(path))
    suffix = os.path.splitext(name)[1]
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=suffix, dir=folder)
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Writes a text file atomically."""
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        f.write(text)


def write_json(path: str | os.PathLike, value: dict) -> None:
    write_text(path, json.dumps(value, indent=1))


# zlib level of the PNG and NPZ files. Level 1: on an evaluation's 964-frame predictions it took
# 0.05 s per array and 0.15 s per grid, against 0.42 s and 0.53 s at the usual level 6, for files
# about 20% larger; evaluation writes six of them per test video.
ZLIB_LEVEL = 1


def save_png(path: str, image: np.ndarray) -> None:
    """Writes a uint8 image (H, W) or (H, W, C) as PNG; one channel is stored as greyscale."""
    image = np.asarray(image)
    assert image.dtype == np.uint8, f"save_png expects uint8, got {image.dtype}"
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    import imageio.v2 as imageio

    with atomic_path(path) as tmp:
        imageio.imwrite(tmp, image, format="png", compress_level=ZLIB_LEVEL)


def save_npz(path: str, *arrays: np.ndarray, **named: np.ndarray) -> None:
    """Writes arrays to one compressed NPZ file (np.load reads it): positional ones as arr_0, arr_1,
    ... (as np.savez), the others by name."""
    items = {f"arr_{i}": a for i, a in enumerate(arrays)} | named
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=ZLIB_LEVEL) as z:
        for name, array in items.items():
            with z.open(f"{name}.npy", "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.asarray(array), allow_pickle=False)


def save_video(path: str, frames: np.ndarray, fps: int = 10) -> None:
    """Writes uint8 frames (T, H, W, C) as MP4 (H.264 via imageio-ffmpeg), or GIF if ``.gif``.

    Grey frames are repeated to RGB; any frame size works (no macro-block resizing).
    """
    frames = np.asarray(frames)
    assert frames.ndim == 4 and frames.dtype == np.uint8, f"need uint8 (T, H, W, C), got {frames.dtype} {frames.shape}"
    if frames.shape[-1] == 1:
        frames = np.repeat(frames, 3, axis=-1)
    import imageio.v2 as imageio

    with atomic_path(path) as tmp:
        if path.lower().endswith(".gif"):
            imageio.mimwrite(tmp, list(frames), format="gif", duration=1000 / fps, loop=0)
        else:
            with warnings.catch_warnings():  # the ffmpeg child execs at once: JAX's fork warning does not apply
                warnings.filterwarnings("ignore", message="os.fork", category=RuntimeWarning)
                # x264's veryfast preset: 2.3x faster than its default (medium) on 1000-frame eval
                # videos, 12% larger; evaluation writes one per video of the first eval_videos
                imageio.mimwrite(
                    tmp,
                    list(frames),
                    format="FFMPEG",
                    fps=fps,
                    macro_block_size=1,
                    ffmpeg_params=["-preset", "veryfast"],
                )


# --- plots and tables --------------------------------------------------------------------------


def plot_metric(
    path: str,
    mean: np.ndarray,
    std: np.ndarray,
    name: str,
    first_frame: int = 0,
    *,
    n: int | None = None,
    run: str | None = None,
    step: int | None = None,
    ylabel: str | None = None,
    context_end: float | None = None,
) -> None:
    """Plots a per-frame metric (T,): the mean over ``n`` videos with a shaded ±1 std band, against
    the video frame number (the first value is frame ``first_frame``).

    ``ylabel`` labels the y axis (default ``name``; eval.py gives each metric's label, with its unit),
    ``run`` and ``step`` go in the title, and ``context_end`` (e.g. 36.5) draws a dashed line where
    the context ends and prediction begins. matplotlib is imported here, not with the module.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    mean, std = np.asarray(mean, np.float64), np.asarray(std, np.float64)
    assert mean.shape == std.shape and mean.ndim == 1, f"mean {mean.shape} vs std {std.shape}"
    frames = first_frame + np.arange(len(mean))
    fig = Figure(figsize=(7, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot(frames, mean, lw=1.5, label=f"mean over {n} videos" if n else "mean")
    ax.fill_between(frames, mean - std, mean + std, alpha=0.3, lw=0, label="±1 std over videos")
    if context_end is not None:
        ax.axvline(context_end, color="0.3", ls="--", lw=1, label=f"end of context (frame {math.floor(context_end)})")
    ax.set_title(_plot_title(name, run, step), fontsize=10)
    ax.set_xlabel("video frame")
    ax.set_ylabel(ylabel or name)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")


def _plot_title(name: str, run: str | None, step: int | None) -> str:
    """The plot's title: the metric, then the run and the training step when known."""
    where = ", ".join(part for part in (run, f"step {step}" if step is not None else None) if part)
    return f"{name} per predicted frame" + (f"\n{where}" if where else "")


def markdown_table(header: list[str], rows: list[list]) -> str:
    """A GitHub markdown table: a header line, a ``|---|`` separator, one line per row (cells str()'d)."""

    def line(cells) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    assert all(len(r) == len(header) for r in rows), f"rows must have {len(header)} cells like the header"
    return "\n".join([line(header), "|" + "---|" * len(header), *map(line, rows)])
