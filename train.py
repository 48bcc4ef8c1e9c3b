"""Train a Clockwork VAE.

    python train.py --config configs/mmnist.yml [--key value ...]

Running the same command again resumes from the experiment folder's latest checkpoint:
parameters, optimizer state, PRNG stream and data position, so that a stopped and resumed
run ends with the same parameters as one that never stopped.
"""

from __future__ import annotations

import cli  # light (the standard library), for the line below

if __name__ == "__main__":  # a Ctrl-C while the libraries below load: one line and exit 0, as in training
    cli.stop_at_once_on_signal()

import contextlib
import dataclasses
import pathlib
import signal
import time
from typing import Any

import jax
import numpy as np
from absl import logging as absl_logging
from flax import nnx
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import checkpoints
import config as cfg_lib
import cwvae
import data
import distributed
import hugepages
import logger
import media
import runs
import steps
import tools
from config import Config
from errors import ConfigError, RunFailure
from steps import Stream


class TrainingError(RunFailure):
    """The run cannot go on (a non-finite loss); the message names the step."""


@dataclasses.dataclass
class TrainResult:
    step: int  # steps done in total
    params: Any  # final parameters (nnx.State)
    losses: dict[int, float]  # loss per step run in this call
    exp_dir: pathlib.Path
    stopped_by_signal: bool = False


# With several processes, how often (in steps) they agree on whether to stop. Agreeing is a
# cross-process gather that waits for the device, which the loop otherwise never does (metrics
# are fetched one step late); one process decides alone, at every step, for free.
STOP_CHECK_EVERY = 10


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

    def at(self, step: int) -> bool:
        """Whether to stop at `step` (before running it), with one answer in every process: a
        signal may reach one process, or reach them at different steps, yet all must stop at the
        same step (or the others wait forever in the next collective). With several processes the
        answer is gathered every STOP_CHECK_EVERY steps only; every process calls this every step."""
        if jax.process_count() > 1 and step % STOP_CHECK_EVERY:
            return False
        return distributed.any_process(self.signal is not None)


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
    device; a non-finite loss raises with its step; scalars logged every save_scalars_every, with
    the steps per second since the last log and the time left to step `total`."""

    def __init__(self, config: Config, exp_dir: pathlib.Path, log: logger.Logger, bar, start: int, total: int):
        self.config, self.exp_dir, self.log, self.bar, self.total = config, exp_dir, log, bar, total
        self.losses: dict[int, float] = {}
        self.kept: tuple[int, float] | None = None  # (step, loss) of the newest checkpoint written
        self._pending = None
        self._since: tuple[float, int] | None = None  # (time, step) the pace counts from: the first step's end

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
        loss = float(metrics["loss"])  # waits for the step
        if self._since is None:  # the first step this process ran (it compiled): the pace counts from its end
            self._since = (time.time(), step)
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
        folder = runs.RunFolder(self.exp_dir).checkpoints
        if self.kept is None:
            kept = f"no checkpoint was written in this run (earlier ones, if any, are in {folder})"
        else:
            kept = f"checkpoint {self.kept[0]} in {folder} is kept (train loss {self.kept[1]:.4g} at that step)"
        raise TrainingError(f"non-finite {name} {value} at step {step}; {kept}")

    def _log_scalars(self, step: int, metrics: dict, loss: float) -> None:
        """The step's scalars, and a line with the pace since the last log (this process's steps only:
        a resumed run counts from its checkpoint) and the time left to step `total` at that pace."""
        now, (then, since) = time.time(), self._since
        self._since = (now, step)
        rate = (step - since) / max(now - then, 1e-9) if step > since else None
        pace = {"train/steps_per_sec": rate} if rate is not None else {}
        self.log.write({**scalars(metrics, "train"), **pace}, step)
        text = f"step {step}: loss {loss:.2f} nll {float(metrics['nll_term']):.2f} kl {float(metrics['kl_term']):.3f}"
        if rate is not None:
            text += f" ({rate:.2f} steps/s, {_duration((self.total - step) / rate)} left to step {self.total})"
        self.log.print(text)


def _duration(seconds: float) -> str:
    """h:mm:ss"""
    s = round(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def scalars(metrics: dict, prefix: str) -> dict[str, float]:
    return {f"{prefix}/{k}": float(v) for k, v in metrics.items()}


def validation_batches(config: Config) -> list:
    """The fixed validation set: batch_size * num_val_batches test clips of validation_frames()
    frames (and their actions: steps.batch_parts), in sub-batches of at most eval_batch_size videos so
    that 1000-frame clips fit in memory; every sub-batch has one shape (one compile). A test split
    smaller than a sub-batch is validated whole, in one smaller sub-batch."""
    sub = min(config.eval_batch_size, config.batch_size, len(data.open_videos(config, "test")))
    count = config.batch_size * config.num_val_batches // sub * sub
    loader = data.make_eval_loader(config, config.validation_frames(), sub, count, key="val_seq_len")
    batches = [jax.tree.map(np.asarray, b) for b in loader]
    return [b for b in batches if len(steps.batch_parts(b)[0]) == sub]


class Summaries:
    """The run's validation scalars and prediction videos. Built once per run with what stays
    fixed (config, validation batches, the logger, the Metrics tracker and the compiled
    functions), so that each call passes only what changes: params, batch and step."""

    def __init__(self, config: Config, graphdef, val_batches: list[np.ndarray], log: logger.Logger, tracker: Metrics):
        self.config, self.val_batches, self.log, self.tracker = config, val_batches, log, tracker
        self.val_loss = steps.val_loss(graphdef)
        self.open_loop = steps.open_loop(
            graphdef, config.open_loop_ctx, config.ssim_data_range, tuple(config.use_obs_per_level())
        )

    def due(self, step: int) -> bool:
        """Whether `step` writes summaries: validation scalars every save_scalars_every steps,
        and with videos every save_gifs_every steps (when save_gifs)."""
        return step % self.config.save_scalars_every == 0 or self._video_step(step)

    def _video_step(self, step: int) -> bool:
        return self.config.save_gifs and step % self.config.save_gifs_every == 0

    def __call__(self, params, batch, step: int) -> None:
        """The summaries of a step that is `due`: validation scalars, and at video steps the
        prediction videos of a validation batch and of the training batch."""
        videos = self._video_step(step)
        self.validation(params, step, videos)
        if videos:
            self.train_video(params, batch, step)

    def at_end(self, params, batch, step: int) -> None:
        """At the end of a run (when save_gifs), the last step's videos, unless that step already wrote
        them, with its validation scalars unless that step wrote those."""
        if self.config.save_gifs and not self._video_step(step):
            if step % self.config.save_scalars_every == 0:
                self.validation_video(params, step)
            else:
                self.validation(params, step, with_videos=True)
            self.train_video(params, batch, step)

    def validation(self, params, step: int, with_videos: bool) -> None:
        """Loss terms and open-loop SSIM/PSNR on the fixed validation batches (and the prediction
        video of the first one when `with_videos`)."""
        values: dict[str, list[float]] = {}
        for i, batch in enumerate(self.val_batches):
            loss_key, rollout_key = self._keys(step, i)
            metrics = dict(self.val_loss(params, batch, loss_key))
            videos = len(steps.batch_parts(batch)[0])
            pred, ssim, psnr = self.open_loop(params, batch, jax.random.split(rollout_key, videos))
            metrics["open_loop_ssim"] = np.mean(ssim)
            metrics["open_loop_psnr"] = np.mean(tools.cap_psnr(psnr))
            for k, v in metrics.items():
                values.setdefault(k, []).append(float(v))
            if with_videos and i == 0:
                self._log_video(batch, pred, "val/open_loop", step)
        summary = {f"val/{k}": float(np.mean(v)) for k, v in values.items()}
        self.tracker.check_finite(summary["val/loss"], "validation loss", step)
        self.log.write(summary, step)
        self.log.print(
            f"step {step}: val/loss {summary['val/loss']:.2f} open-loop SSIM {summary['val/open_loop_ssim']:.3f} "
            f"PSNR {summary['val/open_loop_psnr']:.2f}"
        )

    def validation_video(self, params, step: int) -> None:
        """The prediction video of the first validation batch alone, drawn as `validation` draws it."""
        batch = self.val_batches[0]
        videos = len(steps.batch_parts(batch)[0])
        pred, _, _ = self.open_loop(params, batch, jax.random.split(self._keys(step, 0)[1], videos))
        self._log_video(batch, pred, "val/open_loop", step)

    def _keys(self, step: int, i: int) -> tuple[jax.Array, jax.Array]:
        """(loss key, rollout key) of validation batch `i` at `step`: each batch, each use its own key."""
        key = steps.stream_key(self.config.seed, Stream.VALIDATION, step)
        return tuple(jax.random.split(jax.random.fold_in(key, i)))

    def train_video(self, params, batch, step: int) -> None:
        """The open-loop prediction video of the training batch (when its clips are longer than
        the context)."""
        if self.config.seq_len <= self.config.open_loop_ctx:
            return
        videos = len(steps.batch_parts(batch)[0])
        keys = jax.random.split(steps.stream_key(self.config.seed, Stream.TRAIN_VIDEO, step), videos)
        pred, _, _ = self.open_loop(params, batch, keys)
        batch, pred = multihost_utils.process_allgather((batch, pred), tiled=True)  # sharded over processes
        self._log_video(batch, pred, "train/open_loop", step)

    def _log_video(self, batch, pred, name: str, step: int) -> None:
        """Truth | prediction | error with frame numbers (the context first), for the first video of the batch: written
        as a GIF under the experiment folder's videos/ and logged to wandb from that file (by process 0)."""
        if not distributed.is_main():
            return

        video, ctx = np.asarray(steps.batch_parts(batch)[0][0]), self.config.open_loop_ctx
        strip = media.labelled_video(video[ctx:], np.asarray(pred[0]), first_frame=ctx + 1, context=video[:ctx])
        path = runs.RunFolder.of(self.config).video(name, step)
        path.parent.mkdir(parents=True, exist_ok=True)
        media.save_video(str(path), strip, fps=10)
        self.log.write({name: path}, step)


# --- the loop --------------------------------------------------------------------------


def train(config: Config) -> TrainResult:
    """Train (or resume) the run that `config` names; returns when the data or max_steps
    run out, or after a SIGINT/SIGTERM (with a checkpoint written)."""
    config = runs.absolute_paths(cfg_lib.validate(config, jax.device_count()))  # the saved config reads from anywhere
    if runs.in_sweep() and jax.process_count() > 1:
        raise ConfigError("a sweep runs one process per trial; unset JAX_NUM_PROCESSES")
    # Every check a run can fail on, before any folder, wandb run or model is made:
    steps.check_model_keys(config)  # cell_type, conv_impl (onednn: its extension)
    data.check_source(config)  # the data can be had, and datadir written where data is still to come
    wandb_run = None
    if runs.in_sweep():  # a trial's folder: sweep-<id>/<its values> (a wandb agent's or sweep.py's)
        config = runs.name_trial(config)
    if runs.in_wandb_sweep():  # the agent's run config overrides ours
        wandb_run = logger.open_wandb(config, runs.RunFolder.of(config))
        config = cfg_lib.with_wandb(config, dict(wandb_run.config), jax.device_count())
    config = runs.resume_config(runs.name_run(config))
    config = dataclasses.replace(config, seed=distributed.from_main(config.seed))  # one seed, drawn by process 0
    exp_dir = runs.run_dir(config)
    main = distributed.is_main()  # process 0 holds the folder, writes config.yml, prints and logs
    try:
        with runs.RunLock(exp_dir) if main else contextlib.nullcontext():
            outputs = []
            if main:
                runs.write_config(config)
                if wandb_run is None:
                    wandb_run = logger.open_wandb(config, runs.RunFolder(exp_dir), runs.wandb_id(config))
                wandb_run.config.update({"seed": config.seed, "run_name": config.run_name}, allow_val_change=True)
                outputs = [logger.JSONLOutput(runs.RunFolder(exp_dir).metrics_file), logger.WandbOutput(wandb_run)]
            return _train(config, exp_dir, logger.Logger(logger.Terminal(main), outputs))
    except OSError as e:
        raise runs.RunError(runs.fs_message(e, f"write in {exp_dir}")) from None
    finally:
        if wandb_run is not None:
            wandb_run.finish()


def _train(config: Config, exp_dir: pathlib.Path, log: logger.Logger) -> TrainResult:
    mesh = steps.make_mesh()
    graphdef, params = steps.init_model(config)
    log.print(f"parameters: {cwvae.count_params(nnx.merge(graphdef, params)):,}")
    replicated = NamedSharding(mesh, P())
    params = jax.device_put(params, replicated)
    opt_state = jax.device_put(steps.make_optimizer(config).init(params), replicated)
    loader = data.make_train_loader(config)  # this process's rows of each global batch
    manager, start, params, opt_state = checkpoints.restore_latest(exp_dir, config, params, opt_state, loader)
    if start:
        log.print(f"resumed from {runs.RunFolder(exp_dir).checkpoint(start)}")
    log.print(f"data: {data.describe_source(config)}")

    total = num_train_steps(config)
    if start >= total:
        manager.close()
        log.print(
            f"nothing to do: the run is at step {start}, its max_steps/num_epochs end at step {total}; "
            f"raise --max_steps to train on, or evaluate it: {cli.command('eval.py', '--logdir', exp_dir)}"
        )
        return TrainResult(start, params, {}, exp_dir)
    train_step = steps.train_step(graphdef, mesh, steps.OptimizerOptions.from_config(config))
    val_batches = validation_batches(config)
    log.print(f"training from step {start} to {total} in {exp_dir}")
    log.print("compiling the training step (the first step takes a while) ...")
    bar = log.progress(config.progress, total, "step", initial=start)
    tracker = Metrics(config, exp_dir, log, bar, start, total)
    summaries = Summaries(config, graphdef, val_batches, log, tracker)
    step = start
    stopped = False
    with StopFlag() as stop:
        while step < total and not (stopped := stop.at(step)):  # the same step in every process
            try:
                batch = next(loader)
            except StopIteration:
                break
            batch = distributed.global_batch(batch, mesh)
            key = steps.stream_key(config.seed, Stream.TRAIN, step)
            params, opt_state, metrics = train_step(params, opt_state, batch, key)
            step += 1
            tracker.put(step, metrics)  # logs the previous step's metrics while this one runs
            if step % config.save_model_every == 0 or step % config.save_named_model_every == 0:
                tracker.flush()  # never checkpoint parameters that came from a non-finite loss
                checkpoints.save_checkpoint(manager, step, params, opt_state, loader)
                tracker.checkpointed(step)
            if summaries.due(step):
                tracker.flush()
                summaries(params, batch, step)
        tracker.flush()
        if step != manager.latest_step():
            checkpoints.save_checkpoint(manager, step, params, opt_state, loader)
        if not stopped and step > start:
            summaries.at_end(params, batch, step)
    if bar is not None:
        bar.close()
    manager.close()
    if stopped:
        log.print(f"stopped by a signal at step {step}; checkpoint written, rerun the command to resume")
    else:
        checkpoint = runs.RunFolder(exp_dir).checkpoint(step)
        evaluate = cli.command("eval.py", "--logdir", exp_dir)
        log.print(f"done at step {step}: checkpoint {checkpoint}; evaluate it with: {evaluate}")
    return TrainResult(step, params, tracker.losses, exp_dir, stopped)


def main(argv: list[str] | None = None) -> None:
    absl_logging.set_verbosity(absl_logging.ERROR)  # orbax's info/warning lines; errors still show

    def run():
        distributed.initialize()  # before anything touches a device
        cli.use_compilation_cache()
        config = cfg_lib.parse(argv, jax.device_count())
        if runs.in_sweep() and config.run_name is None:  # the trial's folder is named after its values
            config = dataclasses.replace(config, run_name=cfg_lib.trial_name(argv))
        with cli.memory_bound_by("batch_size", config.batch_size, " (or --seq_len)"):
            train(config)

    # From the training loop on, a signal stops the run at a step boundary (StopFlag).
    cli.main_guard(
        run, stopped="stopped by a signal before the first training step; rerun the command to start (or resume)"
    )


if __name__ == "__main__":
    hugepages.reexec()
    main()
