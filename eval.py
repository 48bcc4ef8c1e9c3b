"""Evaluate a trained Clockwork VAE by open-loop prediction, as in the paper.

    python eval.py --logdir <experiment folder or checkpoint folder> [--key value ...]

Reads the run's config.yml, restores its latest checkpoint (or the one named), observes
open_loop_ctx frames of each test video and predicts the rest up to eval_seq_len. Writes,
in a new folder eval_step<N>_<time> inside the experiment folder: per example the ground
truth and samples as NPZ and PNG grids plus a GIF (truth | prediction), per-frame SSIM/PSNR curves of the best
sample (NPZ and plot) and metrics.json.
"""

from __future__ import annotations

import json
import pathlib
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging as absl_logging

import config as cfg_lib
import data
import tools
import train
from config import Config, ConfigError


def checkpoint_step(target: pathlib.Path, run_dir: pathlib.Path) -> tuple[pathlib.Path, int | None]:
    """The checkpoints folder and the step: a step folder names its step; otherwise the latest."""
    if target.name.isdigit() and target.parent.name == "checkpoints":
        return target.parent, int(target.name)
    return run_dir / "checkpoints", None


def evaluate(config: Config, run_dir: pathlib.Path, target: pathlib.Path | None = None) -> pathlib.Path:
    """Run the evaluation; returns the folder the outputs were written to."""
    ckpt_dir, step = checkpoint_step(target or run_dir, run_dir)
    if not ckpt_dir.is_dir():
        raise ConfigError(f"no checkpoint in '{target or run_dir}': '{ckpt_dir}' does not exist; train first")
    graphdef, params, step = train.load_params(ckpt_dir, config, step)
    out_dir = run_dir / f"eval_step{step}_{time.strftime('%Y%m%d-%H%M%S')}"
    out_dir.mkdir(parents=True)
    print(f"evaluating {ckpt_dir}/{step} on {data.describe_source(config)} -> {out_dir}")
    rollout = train.make_open_loop(graphdef, config.open_loop_ctx, config.ssim_data_range)
    loader = data.make_eval_loader(config, config.eval_seq_len, config.eval_batch_size, config.num_examples)
    best_ssim, best_psnr, fvd_real, fvd_fake = [], [], [], []
    bar = _progress(config)
    index = 0
    for batch in loader:
        batch = np.asarray(batch)
        preds, ssim, psnr = run_batch(rollout, params, batch, config, index)
        for i in range(len(batch)):
            scores = write_example(out_dir, index + i, batch[i], preds[i], ssim[i], psnr[i], config)
            best_ssim.append(scores[0])
            best_psnr.append(scores[1])
        if config.fvd:
            fvd_real.append(batch[:, config.open_loop_ctx :])
            fvd_fake.append(tools.to_uint8(preds[:, 0]))
        index += len(batch)
        if bar is not None:
            bar.update(len(batch))
    if bar is not None:
        bar.close()
    if index == 0:
        raise data.DataError(f"{config.dataset} test: no videos to evaluate")
    summary = write_summary(out_dir, np.stack(best_ssim), np.stack(best_psnr), config, step)
    if config.fvd:
        summary["fvd"] = tools.fvd(np.concatenate(fvd_real), np.concatenate(fvd_fake))
        write_json(out_dir / "metrics.json", summary)
    print(json.dumps({k: v for k, v in summary.items() if k != "settings"}, indent=1))
    return out_dir


def run_batch(rollout, params, batch: np.ndarray, config: Config, first: int):
    """Predictions (b, S, T', H, W, C) and per-frame scores (b, S, T') for num_samples samples
    of each video; the batch is padded to eval_batch_size so every call has one shape."""
    b, s = len(batch), config.num_samples
    padded = np.concatenate([batch, np.zeros((config.eval_batch_size - b, *batch.shape[1:]), batch.dtype)])
    videos = np.repeat(padded, s, axis=0)
    base = jax.random.fold_in(jax.random.key(config.seed or 0), 3)
    keys = jax.vmap(lambda i: jax.random.fold_in(base, i))(jnp.arange(first * s, (first + len(padded)) * s))
    pred, ssim, psnr = jax.device_get(rollout(params, videos, keys))
    shape = (len(padded), s)
    return (pred.reshape(*shape, *pred.shape[1:])[:b], ssim.reshape(*shape, -1)[:b], psnr.reshape(*shape, -1)[:b])


def write_example(out_dir, index, video, preds, ssim, psnr, config) -> tuple[np.ndarray, np.ndarray]:
    """Files of one test video; returns the per-frame SSIM and PSNR of its best samples."""
    ctx = config.open_loop_ctx
    folder = out_dir / f"example{index:04d}"
    folder.mkdir()
    rng = np.random.default_rng([config.seed or 0, index])
    order = rng.permutation(len(preds))
    videos = {"gt_context": video[:ctx], "gt_target": video[ctx:], "random_sample": tools.to_uint8(preds[order[0]])}
    best_s, best_p = int(np.argmax(ssim.mean(-1))), int(np.argmax(psnr.mean(-1)))
    if len(preds) > 1:
        videos["best_ssim_sample"] = tools.to_uint8(preds[best_s])
        videos["best_psnr_sample"] = tools.to_uint8(preds[best_p])
        videos["random_sample_2"] = tools.to_uint8(preds[order[1]])
    for name, frames in videos.items():
        tools.save_npz(str(folder / f"{name}.npz"), frames=frames)
        if not config.no_save_grid:
            tools.save_png(str(folder / f"{name}.png"), tools.video_grid(frames))
    gt = video[ctx:].astype(np.float32) / 255.0
    tools.save_video(str(folder / "prediction.gif"), tools.side_by_side(gt, np.clip(preds[order[0]], 0, 1)))
    return ssim[best_s], psnr[best_p]


def write_summary(out_dir, ssim: np.ndarray, psnr: np.ndarray, config: Config, step: int) -> dict[str, Any]:
    """Per-frame mean and std of the best samples' SSIM and PSNR (NPZ and plots), metrics.json."""
    psnr_capped = np.asarray(tools.cap_psnr(psnr))
    first = config.open_loop_ctx
    for name, values in (("ssim", ssim), ("psnr", psnr_capped)):
        mean, std = values.mean(0), values.std(0)
        tools.save_npz(str(out_dir / f"{name}.npz"), mean=mean, std=std, frame=np.arange(first, first + len(mean)))
        tools.plot_metric(str(out_dir / f"{name}.png"), mean, std, name.upper(), first_frame=first)
    summary = {
        "step": step,
        "num_examples": int(len(ssim)),
        "num_samples": config.num_samples,
        "ssim_mean": float(ssim.mean()),
        "psnr_mean": float(psnr_capped.mean()),
        "ssim_last_frame": float(ssim[:, -1].mean()),
        "psnr_last_frame": float(psnr_capped[:, -1].mean()),
        "settings": {
            "dataset": config.dataset,
            "data_source": config.data_source,
            "open_loop_ctx": config.open_loop_ctx,
            "eval_seq_len": config.eval_seq_len,
            "ssim_data_range": config.ssim_data_range,
            "psnr_data_range": 1.0,
            "psnr_cap_db": tools.PSNR_CAP_DB,
            "best_sample_by": "mean over frames, per video",
            "seed": config.seed,
        },
    }
    write_json(out_dir / "metrics.json", summary)
    return summary


def write_json(path: pathlib.Path, value: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(value, indent=1))
    tmp.replace(path)


def _progress(config: Config):
    if not config.progress:
        return None
    from tqdm import tqdm

    return tqdm(total=config.num_examples, unit="video", desc="eval", dynamic_ncols=True, file=sys.stdout)


def main(argv: list[str] | None = None) -> None:
    absl_logging.set_verbosity(absl_logging.ERROR)  # orbax's info/warning lines; errors still show

    def run():
        config, run_dir, target = cfg_lib.parse_saved(argv, jax.device_count())
        try:
            evaluate(config, run_dir, target)
        except data.DataError as e:
            raise ConfigError(str(e)) from None

    cfg_lib.main_guard(run)


if __name__ == "__main__":
    main()
