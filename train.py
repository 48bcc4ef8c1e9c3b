"""Train a Clockwork VAE.

    python train.py --config configs/mmnist.yml [--key value ...]

Running the same command again resumes from the experiment folder's latest checkpoint:
parameters, optimizer state, PRNG stream and data position, so that a stopped and resumed
run ends with the same parameters as one that never stopped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import pathlib
import signal
import sys
import time
from typing import Any

import jax
import numpy as np
from absl import logging as absl_logging
from flax import nnx
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import config as cfg_lib
import cwvae
import data
import distributed
import hugepages
import runs
import steps
import tools
from config import Config
from steps import Stream


class TrainingError(RuntimeError):
    """The run cannot go on (a non-finite loss); the message names the step."""


@dataclasses.dataclass
class TrainResult:
    step: int  # steps done in total
    params: Any  # final parameters (nnx.State)
    losses: dict[int, float]  # loss per step run in this call
    exp_dir: pathlib.Path
    stopped_by_signal: bool = False


class StopFlag:
    """Set by SIGINT/SIGTERM: the loop finishes its step, saves and exits cleanly."""

    def __init__(self):
        self.signal = None
        self._old = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def _handle(self, signum, frame):
        self.signal = signum

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


def say(*args, **kwargs) -> None:
    """print, on process 0 only (the others would print the same lines)."""
    if distributed.is_main():
        print(*args, **kwargs)


def num_train_steps(config: Config) -> int:
    """Steps in num_epochs passes over the training clips (each video cut into seq_len clips),
    bounded by max_steps."""
    videos = data.open_videos(config, "train")
    clips = len(videos) * (videos.length // config.seq_len)
    total = clips * config.num_epochs // config.batch_size
    return total if config.max_steps is None else min(total, config.max_steps)


# --- summaries -------------------------------------------------------------------------


class Metrics:
    """The last step's metrics, fetched one step late so that the host never waits on the
    device; a non-finite loss raises with its step; scalars logged every save_scalars_every."""

    def __init__(self, config: Config, exp_dir: pathlib.Path, log, bar, start: int):
        self.config, self.exp_dir, self.log, self.bar = config, exp_dir, log, bar
        self.losses: dict[int, float] = {}
        self.kept: tuple[int, float] | None = None  # (step, loss) of the newest checkpoint written
        self._pending = None
        self._since = (time.time(), start)  # for steps per second

    def put(self, step: int, metrics: dict) -> None:
        """Record this step's (still computing) metrics after flushing the previous step's."""
        self.flush()
        self._pending = (step, metrics)
        if self.bar is not None:
            self.bar.update(1)

    def flush(self) -> None:
        if self._pending is None:
            return
        step, metrics = self._pending
        self._pending = None
        loss = float(metrics["loss"])
        self.check_finite(loss, "loss", step)
        self.losses[step] = loss
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{loss:.2f}", refresh=False)
        if step % self.config.save_scalars_every == 0:
            self._log_scalars(step, metrics, loss)

    def checkpointed(self, step: int) -> None:
        self.kept = (step, self.losses.get(step, float("nan")))

    def check_finite(self, value: float, name: str, step: int) -> None:
        """Stop the run on a non-finite value, naming the step and the checkpoint that is kept."""
        if np.isfinite(value):
            return
        folder = self.exp_dir / "checkpoints"
        if self.kept is None:
            kept = f"no checkpoint was written in this run (earlier ones, if any, are in {folder})"
        else:
            kept = f"checkpoint {self.kept[0]} in {folder} is kept (train loss {self.kept[1]:.4g} at that step)"
        raise TrainingError(f"non-finite {name} {value} at step {step}; {kept}")

    def _log_scalars(self, step: int, metrics: dict, loss: float) -> None:
        now = time.time()
        rate = (step - self._since[1]) / max(now - self._since[0], 1e-9)
        self._since = (now, step)
        self.log({**scalars(metrics, "train"), "train/steps_per_sec": rate}, step)
        text = f"step {step}: loss {loss:.2f} nll {float(metrics['nll_term']):.2f} kl {float(metrics['kl_term']):.3f}"
        (self.bar.write if self.bar is not None else say)(f"{text} ({rate:.2f} steps/s)")


def scalars(metrics: dict, prefix: str) -> dict[str, float]:
    return {f"{prefix}/{k}": float(v) for k, v in metrics.items()}


def validation_batches(config: Config) -> list[np.ndarray]:
    """The fixed validation set: batch_size * num_val_batches test clips of val_seq_len (or
    eval_seq_len) frames, in sub-batches of at most eval_batch_size videos so that 1000-frame
    clips fit in memory; every sub-batch has one shape (one compile)."""
    sub = min(config.eval_batch_size, config.batch_size)
    count = config.batch_size * config.num_val_batches // sub * sub
    key = "val_seq_len" if config.val_seq_len else "eval_seq_len"
    loader = data.make_eval_loader(config, config.val_seq_len or config.eval_seq_len, sub, count, key=key)
    return [np.asarray(b) for b in loader if len(b) == sub]


def validation_summary(config, params, val_batches, graphdef, step: int, with_videos: bool, log, tracker) -> None:
    """Loss terms and open-loop SSIM/PSNR on the fixed validation batches."""
    val_loss = steps.val_loss(graphdef)
    open_loop = steps.open_loop(graphdef, config.open_loop_ctx, config.ssim_data_range)
    key = steps.stream_key(config.seed, Stream.VALIDATION, step)
    values: dict[str, list[float]] = {}
    for i, batch in enumerate(val_batches):
        loss_key, rollout_key = jax.random.split(jax.random.fold_in(key, i))  # each batch, each use its own key
        metrics = dict(val_loss(params, batch, loss_key))
        pred, ssim, psnr = open_loop(params, batch, jax.random.split(rollout_key, len(batch)))
        metrics["open_loop_ssim"] = np.mean(ssim)
        metrics["open_loop_psnr"] = np.mean(tools.cap_psnr(psnr))
        for k, v in metrics.items():
            values.setdefault(k, []).append(float(v))
        if with_videos and i == 0:
            log_video(config, batch, pred, "val/open_loop", step, log)
    summary = {f"val/{k}": float(np.mean(v)) for k, v in values.items()}
    tracker.check_finite(summary["val/loss"], "validation loss", step)
    log(summary, step)
    say(
        f"step {step}: val/loss {summary['val/loss']:.2f} open-loop SSIM {summary['val/open_loop_ssim']:.3f} "
        f"PSNR {summary['val/open_loop_psnr']:.2f}",
        flush=True,
    )


def summarize(config, params, batch, val_batches, graphdef, step: int, log, tracker: Metrics, final=False) -> None:
    """Validation scalars every save_scalars_every steps; prediction videos of a train and a
    validation batch every save_gifs_every steps (when save_gifs); both at the end of a run (`final`)."""
    videos = config.save_gifs and (final or step % config.save_gifs_every == 0)
    if final or step % config.save_scalars_every == 0 or videos:
        validation_summary(config, params, val_batches, graphdef, step, videos, log, tracker)
    if videos and config.seq_len > config.open_loop_ctx:
        open_loop = steps.open_loop(graphdef, config.open_loop_ctx, config.ssim_data_range)
        keys = jax.random.split(steps.stream_key(config.seed, Stream.TRAIN_VIDEO, step), len(batch))
        pred, _, _ = open_loop(params, batch, keys)
        batch, pred = multihost_utils.process_allgather((batch, pred), tiled=True)  # sharded over processes
        log_video(config, batch, pred, "train/open_loop", step, log)


def log_video(config, batch, pred, name: str, step: int, log) -> None:
    """Ground truth, prediction and error stacked, for the first video of the batch: written
    as a GIF under the experiment folder's videos/ and logged to wandb from that file (by process 0)."""
    import wandb

    if not distributed.is_main():
        return

    gt = tools.to_unit(np.asarray(batch[0, config.open_loop_ctx :]))
    strip = tools.prediction_strip(gt, np.asarray(pred[0]))
    path = runs.run_dir(config) / "videos" / f"{name.replace('/', '_')}_{step:08d}.gif"
    path.parent.mkdir(parents=True, exist_ok=True)
    tools.save_video(str(path), strip, fps=10)
    log({name: wandb.Video(str(path), format="gif")}, step)


# --- the loop --------------------------------------------------------------------------


def train(config: Config) -> TrainResult:
    """Train (or resume) the run that `config` names; returns when the data or max_steps
    run out, or after a SIGINT/SIGTERM (with a checkpoint written)."""
    config = cfg_lib.validate(config, jax.device_count())
    data.check_source(config)  # before any folder, wandb run or model is made
    run = None
    if runs.in_sweep() and jax.process_count() > 1:
        raise cfg_lib.ConfigError("a wandb sweep runs one process per trial; unset JAX_NUM_PROCESSES")
    if runs.in_sweep():  # the agent's run config overrides ours, and its id names the folder
        run = runs.init_wandb(config)
        config = runs.name_run(cfg_lib.with_wandb(config, dict(run.config), jax.device_count()), run.id)
    config = runs.resume_config(runs.name_run(config))
    config = dataclasses.replace(config, seed=distributed.from_main(config.seed))  # one seed, drawn by process 0
    exp_dir = runs.run_dir(config)
    main = distributed.is_main()  # process 0 holds the folder, writes config.yml and logs to wandb
    try:
        with runs.RunLock(exp_dir) if main else contextlib.nullcontext():
            if main:
                runs.write_config(config)
                if run is None:
                    run = runs.init_wandb(config, runs.wandb_id(config))
                run.config.update({"seed": config.seed, "run_name": config.run_name}, allow_val_change=True)
            return _train(config, exp_dir, run.log if main else lambda *args, **kwargs: None)
    except OSError as e:
        raise runs.RunError(runs.fs_message(e, f"write in {exp_dir}")) from None
    finally:
        if run is not None:
            run.finish()


def _train(config: Config, exp_dir: pathlib.Path, log) -> TrainResult:
    mesh = steps.make_mesh()
    graphdef, params = steps.init_model(config)
    say(f"parameters: {cwvae.count_params(nnx.merge(graphdef, params)):,}")
    replicated = NamedSharding(mesh, P())
    params = jax.device_put(params, replicated)
    opt_state = jax.device_put(steps.make_optimizer(config).init(params), replicated)
    loader = data.make_train_loader(config)  # this process's rows of each global batch
    manager, start, params, opt_state = runs.restore_latest(exp_dir, config, params, opt_state, loader)
    if start:
        say(f"resumed from {exp_dir / 'checkpoints'} at step {start}")
    say(f"data: {data.describe_source(config)}")

    train_step = steps.train_step(graphdef, mesh, steps.OptimizerOptions.from_config(config))
    val_batches = validation_batches(config)
    total = num_train_steps(config)
    bar = tools.progress_bar(config.progress and distributed.is_main(), total, "step", initial=start)
    metrics = Metrics(config, exp_dir, log, bar, start)
    step = start
    say(f"training from step {start} to {total} in {exp_dir}", flush=True)
    stopped = False
    with StopFlag() as stop:
        # All processes stop at the same step (a signal may reach one, or reach them at different steps).
        while step < total and not (stopped := distributed.any_process(stop.signal is not None)):
            try:
                batch = next(loader)
            except StopIteration:
                break
            batch = distributed.global_batch(batch, mesh)
            key = steps.stream_key(config.seed, Stream.TRAIN, step)
            params, opt_state, step_metrics = train_step(params, opt_state, batch, key)
            step += 1
            metrics.put(step, step_metrics)  # logs the previous step's metrics while this one runs
            if step % config.save_model_every == 0 or step % config.save_named_model_every == 0:
                metrics.flush()  # never checkpoint parameters that came from a non-finite loss
                runs.save_checkpoint(manager, step, params, opt_state, loader)
                metrics.checkpointed(step)
            if step % config.save_scalars_every == 0 or (config.save_gifs and step % config.save_gifs_every == 0):
                metrics.flush()
                summarize(config, params, batch, val_batches, graphdef, step, log, metrics)
        metrics.flush()
        if step != manager.latest_step():
            runs.save_checkpoint(manager, step, params, opt_state, loader)
        if not stopped and step > start and config.save_gifs and step % config.save_gifs_every:
            summarize(config, params, batch, val_batches, graphdef, step, log, metrics, final=True)
    if bar is not None:
        bar.close()
    manager.close()
    if stopped:
        say(f"stopped by a signal at step {step}; checkpoint written, rerun the command to resume")
    return TrainResult(step, params, metrics.losses, exp_dir, stopped)


def main(argv: list[str] | None = None) -> None:
    absl_logging.set_verbosity(absl_logging.ERROR)  # orbax's info/warning lines; errors still show

    def run():
        distributed.initialize()  # before anything touches a device
        config = cfg_lib.parse(argv, jax.device_count())
        try:
            train(config)
        except TrainingError as e:
            print(f"error: {e}", file=sys.stderr)
            raise SystemExit(1) from None

    cfg_lib.main_guard(run)


if __name__ == "__main__":
    hugepages.reexec()
    main()
