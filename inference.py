"""A trained run in Python (a notebook, a script): load it, predict from context frames, score.

    import inference
    run = inference.load("logs/mmnist/<run>")     # a run folder, or one of its checkpoints/<step>
    videos = run.test_videos(4)                   # (4, eval_seq_len, 64, 64, C) uint8 test videos
    pred = run.predict(videos[:, :36], horizon=100, seed=0)   # (4, 100, 64, 64, C) float frames
    ssim, psnr = run.metrics(pred, videos[:, 36:136])         # per video and frame: (4, 100) each
    # a run trained with actions (use_actions) predicts given them: one per frame, context and prediction
    pred = run.predict(videos[:, :36], 100, actions=run.test_actions(4)[:, :136])

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

import checkpoints
import cwvae
import data
import dataspec
import media
import runs
import steps
import tools
from config import Config
from errors import UserError


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
        return self._test_clips(count, frames)[0]

    def test_actions(self, count: int, frames: int | None = None) -> np.ndarray:
        """The actions (count, frames, A) float32 of `test_videos(count, frames)`, for a run trained with
        actions (use_actions): actions[:, t] is taken after frame t (dataspec.py)."""
        if not self.config.use_actions:
            raise UserError("test_actions: this run was trained without actions (use_actions false)")
        return self._test_clips(count, frames)[1]

    def _test_clips(self, count: int, frames: int | None) -> tuple[np.ndarray, np.ndarray | None]:
        frames = frames or self.config.eval_seq_len
        loader = data.make_eval_loader(self.config, frames, count, count)
        videos, actions = steps.batch_parts(next(iter(loader)))
        return np.asarray(videos), None if actions is None else np.asarray(actions)

    def predict(
        self, context: np.ndarray, horizon: int, seed: int = 0, actions: np.ndarray | None = None
    ) -> np.ndarray:
        """Observe `context` (B, T, H, W, C) frames, uint8 or floats in [0, 1], then predict `horizon`
        frames from the priors alone: (B, horizon, H, W, C) float32 frame means. T must be a
        multiple of k**(levels-1) (36 for the paper's models); `seed` picks the sample. A run trained
        with actions takes `actions` (B, T + horizon, A), one per frame of the context and of the
        prediction, actions[:, t] taken after frame t (the last one leads past the prediction and is not
        used); None predicts given none (zeros). Arguments that do not fit the run raise
        errors.UserError, naming the argument and what is valid."""
        context = self._frames("context", context)
        b, t = context.shape[:2]
        top = self.config.tmp_abs_factor ** (self.config.levels - 1)
        if t % top:
            raise UserError(
                f"context: {t} frames; must be a positive multiple of tmp_abs_factor**(levels-1) = "
                f"{self.config.tmp_abs_factor}**{self.config.levels - 1} = {top}, the period of the slowest level"
            )
        if isinstance(horizon, bool) or not isinstance(horizon, (int, np.integer)) or horizon < 1:
            raise UserError(f"horizon: got {horizon!r}; must be a whole number of frames to predict, at least 1")
        actions = self._actions(actions, b, t + int(horizon))
        blank = np.zeros((b, int(horizon), *context.shape[2:]), np.float32)  # only its length is read
        obs = np.concatenate([context, blank], axis=1)
        use_obs = tuple(self.config.use_obs_per_level())
        graphdef, params = nnx.split(self.model)
        return np.asarray(_open_loop(graphdef, t, use_obs)(params, obs, jax.random.key(seed), actions))

    def _actions(self, actions, videos: int, frames: int) -> np.ndarray | None:
        """`actions` as float32 (videos, frames, A), checked against the run: None for a run without
        actions, zeros for one with them given none."""
        width = self.model.config.action_size
        if actions is None:
            return np.zeros((videos, frames, width), np.float32) if width else None
        if not width:
            raise UserError("actions: this run was trained without actions (use_actions false); pass actions=None")
        actions = np.asarray(actions)
        want = (videos, frames, width)
        if actions.shape != want:
            raise UserError(
                f"actions: shape {actions.shape}; expected {want}: one action of {width} numbers "
                f"({', '.join(dataspec.get(self.config.dataset).actions)}) per frame of the {videos} videos' context "
                f"and prediction ({frames} frames)"
            )
        if not np.issubdtype(actions.dtype, np.number):
            raise UserError(f"actions: dtype {actions.dtype}; expected numbers (float32, as the dataset's actions)")
        if not np.all(np.isfinite(actions)):
            raise UserError("actions: holds NaN or infinite values; expected finite numbers")
        return actions.astype(np.float32)

    def metrics(self, pred: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-frame SSIM and PSNR (B, T) of predictions against true frames (each uint8 or floats in
        [0, 1], of one shape), with the run's ssim_data_range, as eval.py computes them."""
        pred, truth = self._frames("pred", pred, predicted=True), self._frames("truth", truth)
        if pred.shape != truth.shape:
            raise UserError(f"pred and truth: shapes {pred.shape} and {truth.shape}; expected equal (B, T, H, W, C)")
        ssim, psnr = tools.frame_metrics(pred, truth, self.config.ssim_data_range, tools.PSNR_DATA_RANGE)
        return np.asarray(ssim), np.asarray(psnr)

    def _frames(self, name: str, frames, predicted: bool = False) -> np.ndarray:
        """`frames` as float32, after checking them against the run's dataset: (B, T, H, W, C) with its
        frame size and channels, at least one frame, uint8 or floats in [0, 1]. `predicted` frames (the
        model's, scored unclipped as the official evaluation scores them) need only be finite floats."""
        frames = np.asarray(frames)
        spec = dataspec.get(self.config.dataset)
        want = (spec.frame_size, spec.frame_size, spec.channels)
        if frames.ndim != 5 or frames.shape[2:] != want or frames.shape[1] < 1:
            raise UserError(
                f"{name}: shape {frames.shape}; expected (videos, frames, {', '.join(map(str, want))}): at least one "
                f"frame of {'x'.join(map(str, want))}, as this run's dataset {spec.name} has"
            )
        if frames.dtype == np.uint8:
            return media.to_unit(frames)
        if not np.issubdtype(frames.dtype, np.floating):
            raise UserError(f"{name}: dtype {frames.dtype}; expected uint8 in [0, 255] or floats in [0, 1]")
        low, high = float(np.min(frames)), float(np.max(frames))
        if predicted and np.isfinite(low) and np.isfinite(high):
            return frames.astype(np.float32)
        if not (0.0 <= low and high <= 1.0):  # also refuses NaN
            raise UserError(
                f"{name}: float values in [{low:g}, {high:g}]; floats must lie in [0, 1] "
                "(for frames in 0..255 pass uint8, or divide by 255)"
            )
        return frames.astype(np.float32)


@functools.cache
def _open_loop(graphdef: nnx.GraphDef, context_frames: int, use_obs: tuple[bool, ...]):
    """The compiled rollout of one model and context length (compiled once per input shape), given the
    actions of a run with actions (None for one without)."""

    @jax.jit
    def rollout(params, obs, key, actions):
        return nnx.merge(graphdef, params).open_loop(obs, key, context_frames, use_obs, actions=actions)

    return rollout


def load(path: str | os.PathLike, *overrides: str) -> Run:
    """The run whose folder (or checkpoint folder checkpoints/<step>) is `path`; `overrides` are
    command-line keys as eval.py takes them ("--use_obs", "FFT"). Raises a one-line UserError
    (errors.py) when the folder holds no run or no checkpoint restores."""
    config, folder, step = runs.load_run_config(["--logdir", str(path), *overrides])
    graphdef, params, step = checkpoints.load_params(folder, config, step)
    return Run(config, nnx.merge(graphdef, params), step, folder)
