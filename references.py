"""Trivial predictors that every evaluation scores beside the model, on the same videos and frames
under the same protocol: the floor a model must clear before its scores say anything. On Moving
MNIST, whose frames are mostly black, an all-black frame already scores SSIM 0.79.

    last_context the last context frame, held for the whole horizon (nothing moves)
    mean_frame   the training split's mean frame, every frame (the best constant guess in squared error)
    black        an all-black frame (on Moving MNIST the best constant guess by SSIM)

A new predictor is one function of (context, horizon, mean frame) here and one entry in PREDICTORS.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def last_context(context: np.ndarray, horizon: int, mean_frame: np.ndarray) -> np.ndarray:
    """(b, T, H, W, C) context -> (b, horizon, H, W, C): its last frame, repeated."""
    return np.repeat(context[:, -1:], horizon, axis=1)


def mean_frame(context: np.ndarray, horizon: int, mean_frame: np.ndarray) -> np.ndarray:
    """(b, T, H, W, C) context -> (b, horizon, H, W, C): the training mean frame, repeated."""
    return np.broadcast_to(mean_frame.astype(np.float32), (len(context), horizon, *mean_frame.shape))


def black(context: np.ndarray, horizon: int, mean_frame: np.ndarray) -> np.ndarray:
    """(b, T, H, W, C) context -> (b, horizon, H, W, C) of zeros."""
    return np.zeros((len(context), horizon, *context.shape[2:]), np.float32)


# name -> (title in tables and plots, predictor)
PREDICTORS: dict[str, tuple[str, Callable[[np.ndarray, int, np.ndarray], np.ndarray]]] = {
    "last_context": ("last context frame held", last_context),
    "mean_frame": ("training mean frame", mean_frame),
    "black": ("all-black frame", black),
}


def predict(context: np.ndarray, horizon: int, mean: np.ndarray) -> dict[str, np.ndarray]:
    """Every reference's prediction (b, horizon, H, W, C) in [0, 1] from float `context` frames in [0, 1]."""
    return {name: fn(context, horizon, mean) for name, (_, fn) in PREDICTORS.items()}


def title(name: str) -> str:
    return PREDICTORS[name][0]
