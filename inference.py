"""A trained run in Python (a notebook, a script): load it, predict from context frames, score.

    import inference
    run = inference.load("logs/mmnist/<run>")     # a run folder, or one of its checkpoints/<step>
    videos = run.test_videos(4)                   # (4, eval_seq_len, 64, 64, C) uint8 test videos
    pred = run.predict(videos[:, :36], horizon=100, seed=0)   # (4, 100, 64, 64, C) float frames
    ssim, psnr = run.metrics(pred, videos[:, 36:136])         # per video and frame: (4, 100) each

Everything comes from the run's folder: its config.yml (with any key overridden as in eval.py) and
its newest checkpoint that restores (or the one named). Nothing is written.
"""

from __future__ import annotations

import dataclasses
import functools
import os

import jax
import numpy as np
from flax import nnx

import cwvae
import data
import runs
import tools
from config import Config


@dataclasses.dataclass(frozen=True)
class Run:
    """A run's config, its model with the checkpoint's parameters, and where they came from."""

    config: Config
    model: cwvae.CWVAE
    step: int  # the checkpoint's training step
    folder: runs.RunFolder

    def test_videos(self, count: int, frames: int | None = None) -> np.ndarray:
        """The first `count` test videos of the run's dataset, `frames` long (default eval_seq_len),
        as uint8 (count, frames, H, W, C); generated or prepared data, as the run was trained on."""
        frames = frames or self.config.eval_seq_len
        loader = data.make_eval_loader(self.config, frames, count, count)
        return np.asarray(next(iter(loader)))

    def predict(self, context: np.ndarray, horizon: int, seed: int = 0) -> np.ndarray:
        """Observe `context` (B, T, H, W, C) frames, uint8 or floats in [0, 1], then predict `horizon`
        frames from the priors alone: (B, horizon, H, W, C) float32 frame means. T must be a
        multiple of k**(levels-1) (36 for the paper's models); `seed` picks the sample."""
        context = tools.to_unit(context) if np.asarray(context).dtype == np.uint8 else np.asarray(context, np.float32)
        b, t = context.shape[:2]
        blank = np.zeros((b, horizon, *context.shape[2:]), np.float32)  # only its length is read
        obs = np.concatenate([context, blank], axis=1)
        use_obs = tuple(self.config.use_obs_per_level())
        graphdef, params = nnx.split(self.model)
        return np.asarray(_open_loop(graphdef, t, use_obs)(params, obs, jax.random.key(seed)))

    def metrics(self, pred: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-frame SSIM and PSNR (B, T) of predictions against true frames (uint8 or floats in
        [0, 1]), with the run's ssim_data_range, as eval.py computes them."""
        truth = tools.to_unit(truth) if np.asarray(truth).dtype == np.uint8 else np.asarray(truth, np.float32)
        ssim, psnr = tools.frame_metrics(pred, truth, self.config.ssim_data_range, tools.PSNR_DATA_RANGE)
        return np.asarray(ssim), np.asarray(psnr)


@functools.cache
def _open_loop(graphdef: nnx.GraphDef, context_frames: int, use_obs: tuple[bool, ...]):
    """The compiled rollout of one model and context length (compiled once per input shape)."""

    @jax.jit
    def rollout(params, obs, key):
        return nnx.merge(graphdef, params).open_loop(obs, key, context_frames, use_obs)

    return rollout


def load(path: str | os.PathLike, *overrides: str) -> Run:
    """The run whose folder (or checkpoint folder checkpoints/<step>) is `path`; `overrides` are
    command-line keys as eval.py takes them ("--use_obs", "FFT"). Raises a one-line UserError
    (errors.py) when the folder holds no run or no checkpoint restores."""
    config, folder, step = runs.load_run_config(["--logdir", str(path), *overrides])
    graphdef, params, step = runs.load_params(folder, config, step)
    return Run(config, nnx.merge(graphdef, params), step, folder)
