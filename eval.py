"""Evaluate a trained Clockwork VAE by open-loop prediction, as in the paper.

    python eval.py --logdir <experiment folder or checkpoint folder> [--key value ...]

Reads the run's config.yml, restores its latest checkpoint (or the one named), observes
open_loop_ctx frames of each test video and predicts the rest up to eval_seq_len, num_samples
times. `--use_obs TTF` (one letter per level) chooses which levels observe the context, as in the
official code. Writes, in a new folder eval_step<N>_<time> inside the experiment folder, the
official code's files (same names and layout, arrays under the key arr_0):

    sample<i>_gt/gt_ctx.{npz,png}, gt_pred.{npz,png}       the context and the true future
    sample<i>/random_sample_1.{npz,png}                     a random sample; with num_samples > 1 also
    sample<i>/best_ssim_sample, best_psnr_sample, random_sample_2 (.npz, .png)
    ssim_mean.npz, ssim_stddev.npz, ssim_range.png          per frame, over examples, of the best
    psnr_mean.npz, psnr_stddev.npz, psnr_range.png          sample's score

and, beyond the official ones, sample<i>/prediction.gif (truth | prediction) and metrics.json.
"""

from __future__ import annotations

import json
import os
import pathlib
import time
from typing import Any

import jax
import numpy as np
from absl import logging as absl_logging

import config as cfg_lib
import data
import distributed
import hugepages
import runs
import steps
import tools
from config import Config, ConfigError
from steps import Stream


def checkpoint_step(target: pathlib.Path, run_dir: pathlib.Path) -> tuple[pathlib.Path, int | None]:
    """The checkpoints folder and the step: a step folder names its step; otherwise the latest."""
    if target.name.isdigit() and target.parent.name == "checkpoints":
        return target.parent, int(target.name)
    return run_dir / "checkpoints", None


def new_folder(path: pathlib.Path) -> pathlib.Path:
    """Make `path`, or `path-2`, `path-3`, ... when an evaluation in the same second made it."""
    for i in range(1, 1000):
        candidate = path if i == 1 else path.with_name(f"{path.name}-{i}")
        try:
            candidate.mkdir(parents=True)
            return candidate
        except FileExistsError:
            continue
    raise runs.RunError(f"cannot make a new evaluation folder next to {path}")


def evaluate(config: Config, run_dir: pathlib.Path, target: pathlib.Path | None = None) -> pathlib.Path:
    """Run the evaluation; returns the folder the outputs were written to."""
    data.check_source(config)
    ckpt_dir, step = checkpoint_step(target or run_dir, run_dir)
    if not ckpt_dir.is_dir():
        raise ConfigError(f"no checkpoint in '{target or run_dir}': '{ckpt_dir}' does not exist; train first")
    graphdef, params, step = runs.load_params(ckpt_dir, config, step)
    loader = data.make_eval_loader(config, config.eval_seq_len, config.eval_batch_size, config.num_examples)
    out_dir = new_folder(run_dir / f"eval_step{step}_{time.strftime('%Y%m%d-%H%M%S')}")
    print(f"evaluating {ckpt_dir}/{step} on {data.describe_source(config)} -> {out_dir}")
    rollout = steps.open_loop(graphdef, config.open_loop_ctx, config.ssim_data_range)
    best_ssim, best_psnr, fvd_real, fvd_fake = [], [], [], []
    bar = tools.progress_bar(config.progress, config.num_examples, "video", "eval")
    for batch in loader:
        batch, first = np.asarray(batch), len(best_ssim)
        preds, ssim, psnr = run_batch(rollout, params, batch, config, first)
        for i in range(len(batch)):
            scores = write_example(out_dir, first + i, batch[i], preds[i], ssim[i], psnr[i], config)
            best_ssim.append(scores[0])
            best_psnr.append(scores[1])
        if config.fvd:
            fvd_real.append(batch[:, config.open_loop_ctx :])
            fvd_fake.append(tools.to_uint8(preds[:, 0]))
        if bar is not None:
            bar.update(len(batch))
    if bar is not None:
        bar.close()
    if not best_ssim:
        raise cfg_lib.DataError(f"{config.dataset} test: no videos to evaluate")
    fvd = tools.fvd(np.concatenate(fvd_real), np.concatenate(fvd_fake)) if config.fvd else None
    summary = write_summary(out_dir, np.stack(best_ssim), np.stack(best_psnr), config, step, fvd)
    print(json.dumps({k: v for k, v in summary.items() if k != "settings"}, indent=1))
    return out_dir


def run_batch(rollout, params, batch: np.ndarray, config: Config, first: int):
    """Predictions (b, S, T', H, W, C) and per-frame scores (b, S, T') for num_samples samples
    of each video; the batch is padded to eval_batch_size so every call has one shape."""
    b, s = len(batch), config.num_samples
    padded = np.concatenate([batch, np.zeros((config.eval_batch_size - b, *batch.shape[1:]), batch.dtype)])
    videos = np.repeat(padded, s, axis=0)
    base = steps.stream_key(config.seed or 0, Stream.EVAL)
    keys = jax.vmap(lambda i: jax.random.fold_in(base, i))(np.arange(first * s, (first + len(padded)) * s))
    pred, ssim, psnr = jax.device_get(rollout(params, videos, keys))
    shape = (len(padded), s)
    return (pred.reshape(*shape, *pred.shape[1:])[:b], ssim.reshape(*shape, -1)[:b], psnr.reshape(*shape, -1)[:b])


def _save_frames(folder: pathlib.Path, name: str, frames: np.ndarray, grid: bool) -> None:
    """uint8 frames as <name>.npz (under arr_0, as the official np.savez) and a PNG grid."""
    tools.save_npz(str(folder / f"{name}.npz"), frames)
    if grid:
        tools.save_png(str(folder / f"{name}.png"), tools.video_grid(frames))


def write_example(out_dir, index, video, preds, ssim, psnr, config) -> tuple[np.ndarray, np.ndarray]:
    """Files of one test video; returns the per-frame SSIM and PSNR of its best samples."""
    ctx, grid = config.open_loop_ctx, not config.no_save_grid
    gt_dir, sample_dir = out_dir / f"sample{index}_gt", out_dir / f"sample{index}"
    gt_dir.mkdir()
    sample_dir.mkdir()
    _save_frames(gt_dir, "gt_ctx", video[:ctx], grid)
    _save_frames(gt_dir, "gt_pred", video[ctx:], grid)
    order = np.random.default_rng([config.seed or 0, index]).permutation(len(preds))
    best_s, best_p = int(np.argmax(ssim.mean(-1))), int(np.argmax(psnr.mean(-1)))
    samples = {"random_sample_1": order[0]}
    if len(preds) > 1:
        samples |= {"best_ssim_sample": best_s, "best_psnr_sample": best_p, "random_sample_2": order[1]}
    for name, i in samples.items():
        _save_frames(sample_dir, name, tools.to_uint8(preds[i]), grid)
    gif = tools.side_by_side(tools.to_unit(video[ctx:]), np.clip(preds[order[0]], 0, 1))
    tools.save_video(str(sample_dir / "prediction.gif"), gif)
    return ssim[best_s], psnr[best_p]


def write_summary(out_dir, ssim, psnr, config: Config, step: int, fvd: float | None) -> dict[str, Any]:
    """Per-frame mean and std over examples of the best samples' SSIM and PSNR (the official
    <metric>_mean.npz, <metric>_stddev.npz and <metric>_range.png) and metrics.json."""
    psnr_capped = np.asarray(tools.cap_psnr(psnr))
    first = config.open_loop_ctx
    for name, values in (("ssim", ssim), ("psnr", psnr_capped)):
        mean, std = values.mean(0), values.std(0)
        tools.save_npz(str(out_dir / f"{name}_mean.npz"), mean)
        tools.save_npz(str(out_dir / f"{name}_stddev.npz"), std)
        tools.plot_metric(str(out_dir / f"{name}_range.png"), mean, std, name.upper(), first_frame=first)
    summary = {
        "step": step,
        "num_examples": int(len(ssim)),
        "num_samples": config.num_samples,
        "ssim_mean": float(ssim.mean()),
        "psnr_mean": float(psnr_capped.mean()),
        "ssim_last_frame": float(ssim[:, -1].mean()),
        "psnr_last_frame": float(psnr_capped[:, -1].mean()),
        **({"fvd": fvd} if fvd is not None else {}),
        "settings": {
            "dataset": config.dataset,
            "data_source": config.data_source,
            "open_loop_ctx": config.open_loop_ctx,
            "eval_seq_len": config.eval_seq_len,
            "use_obs": config.use_obs or "T" * config.levels,
            "ssim_data_range": config.ssim_data_range,
            "psnr_data_range": tools.PSNR_DATA_RANGE,
            "psnr_cap_db": tools.PSNR_CAP_DB,
            "best_sample_by": "mean over frames, per video",
            "seed": config.seed,
        },
    }
    tools.write_json(out_dir / "metrics.json", summary)
    return summary


def main(argv: list[str] | None = None) -> None:
    absl_logging.set_verbosity(absl_logging.ERROR)  # orbax's info/warning lines; errors still show

    def run():
        if distributed.explicit_params(os.environ) or distributed.cluster_detected():
            raise cfg_lib.ConfigError(
                "eval.py runs as one process (a checkpoint of any number of processes restores in one); "
                f"launch it without {', '.join(distributed.ENV_VARS)}"
            )
        config, run_dir, target = cfg_lib.parse_saved(argv, jax.device_count())
        try:
            evaluate(config, run_dir, target)
        except OSError as e:  # a full disk or a read-only run folder: one line, exit 2
            raise runs.RunError(runs.fs_message(e, f"write the evaluation in {run_dir}")) from None

    cfg_lib.main_guard(run)


if __name__ == "__main__":
    hugepages.reexec()
    main()
