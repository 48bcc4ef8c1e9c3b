"""The run folder: which folder a run lives in, that it holds one experiment, one writer at a time,
and every path in it and in its evaluations' folders. Training writes, and evaluation reads, one
folder per experiment:

    logdir/<dataset>/<run name>/
        config.yml          the resolved config; a resume must match its result-changing keys
        wandb_id            the wandb run this folder belongs to (a resume continues it)
        lock                held by the training process (PID and host inside)
        metrics.jsonl       every scalar logged, one JSON line per step (logger.py)
        checkpoints/<step>/ orbax: params and optimizer state (state/), loader positions (data/)
        damaged_checkpoints/<step>-<time>/  checkpoints that did not restore, moved aside
        videos/             training's prediction GIFs
        eval_step<N>_<time>/  an evaluation (EvalFolder); incomplete_eval_... while it is written

The run name is a readable prefix of the main keys plus a hash of every result-changing key
(`Config.run_hash`), or --run_name, or under a wandb sweep sweep-<id>/<the swept values>.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import os
import pathlib
import re
import secrets
import shutil
import socket
import sys
import time
from collections.abc import Iterator

import cli
import config as cfg_lib
import media
from config import Config
from errors import ConfigError, UserError


class RunError(UserError):
    """A run folder or checkpoint problem (in use, damaged, disk full, read-only): one line."""


@dataclasses.dataclass(frozen=True)
class RunFolder:
    """One experiment's folder and its layout (above); every path into it is spelled here."""

    path: pathlib.Path

    @classmethod
    def of(cls, config: Config) -> RunFolder:
        """logdir/dataset/<run name> of a named config (see name_run)."""
        return cls(pathlib.Path(config.logdir) / config.dataset / (config.run_name or config.default_run_name()))

    @classmethod
    def find(cls, target: os.PathLike | str) -> tuple[RunFolder, int | None]:
        """The run folder of `target` (the folder itself, a checkpoint or any folder below it, up to three
        levels) and the checkpoint step `target` names (None: the newest)."""
        p = pathlib.Path(target)
        if not p.exists():
            raise ConfigError(f"key 'logdir' got '{target}', which does not exist; pass a run or checkpoint folder")
        for candidate in (p, *p.parents[:3]):
            if (run := cls(candidate)).config_file.is_file():
                named = p.name.isdigit() and p.parent == run.checkpoints
                return run, int(p.name) if named else None
        raise ConfigError(f"key 'logdir' got '{target}': no config.yml in it or the folders above; pass a run's folder")

    config_file = property(lambda self: self.path / "config.yml")
    wandb_id_file = property(lambda self: self.path / "wandb_id")
    metrics_file = property(lambda self: self.path / "metrics.jsonl")
    lock_file = property(lambda self: self.path / "lock")
    checkpoints = property(lambda self: self.path / "checkpoints")
    damaged = property(lambda self: self.path / "damaged_checkpoints")
    videos = property(lambda self: self.path / "videos")

    def checkpoint(self, step: int) -> pathlib.Path:
        return self.checkpoints / str(step)

    def state(self, step: int) -> pathlib.Path:
        """The arrays of checkpoint `step`: params and optimizer state (orbax)."""
        return self.checkpoint(step) / "state"

    def data_position(self, step: int, process: int, count: int) -> pathlib.Path:
        """Process `process` of `count`'s loader position in checkpoint `step` (grain)."""
        return self.checkpoint(step) / "data" / f"process_{process}-of-{count}.json"

    def damaged_checkpoint(self, step: int) -> pathlib.Path:
        """Where checkpoint `step` goes when it does not restore: damaged_checkpoints/<step>-<time>."""
        return self.damaged / f"{step}-{time.strftime('%Y%m%d-%H%M%S')}"

    def video(self, name: str, step: int) -> pathlib.Path:
        """A training prediction GIF: videos/<name with _ for />_<step>.gif."""
        return self.videos / f"{name.replace('/', '_')}_{step:08d}.gif"

    def evaluations(self) -> list[pathlib.Path]:
        """The complete evaluation folders, oldest first: by step, then time, then the -k of same-second ones."""
        found = [p for p in self.path.iterdir() if p.is_dir() and EVAL_NAME.match(p.name)] if self.path.is_dir() else []
        return sorted(found, key=eval_order)

    def complete_steps(self, skip: set[int] = frozenset()) -> list[int]:
        """Finished checkpoint steps, newest first (orbax renames a folder to its step when complete)."""
        if not self.checkpoints.is_dir():
            return []
        found = (int(p.name) for p in self.checkpoints.iterdir() if p.name.isdigit())
        return sorted((s for s in found if s not in skip), reverse=True)


EVAL_FOLDER = "eval_step{step}_{time}"  # a complete evaluation's folder; -2, -3, ... for same-second ones
EVAL_NAME = re.compile(EVAL_FOLDER.format(step=r"(\d+)", time=r"(\d{8}-\d{6})") + r"(?:-(\d+))?$")
INCOMPLETE = "incomplete_"  # name prefix of an evaluation folder still being written (never read as a result)


def eval_order(folder: pathlib.Path) -> tuple[int, str, int]:
    """Sort key of an evaluation folder: its step, then its time, then the -k of same-second ones."""
    match = EVAL_NAME.match(folder.name)
    assert match, f"not an evaluation folder name: {folder.name}"
    return int(match[1]), match[2], int(match[3] or 1)


@dataclasses.dataclass(frozen=True)
class EvalFolder:
    """One evaluation of a run (eval.py writes it, compare.py reads it), inside the run folder; every
    path into it is spelled here. The official code's files, then the summary:

        sample<i>_gt/, sample<i>/     the context and true future, the samples (eval.py names the files)
        <metric>_mean.npz, <metric>_stddev.npz, <metric>_range.png   per predicted frame, over videos
        curves.csv, metrics.json, metrics.md   every curve, the results, the results as a table
    """

    path: pathlib.Path

    summary = property(lambda self: self.path / "metrics.json")
    table = property(lambda self: self.path / "metrics.md")
    curves_table = property(lambda self: self.path / "curves.csv")

    def truth(self, index: int) -> pathlib.Path:
        return self.path / f"sample{index}_gt"

    def samples(self, index: int) -> pathlib.Path:
        return self.path / f"sample{index}"

    def curve(self, metric: str, stat: str) -> pathlib.Path:
        """A per-frame curve over videos: `stat` "mean" or "stddev" (np.savez, key arr_0)."""
        return self.path / f"{metric}_{stat}.npz"

    def plot(self, metric: str) -> pathlib.Path:
        return self.path / f"{metric}_range.png"

    @staticmethod
    def is_one(path: pathlib.Path) -> bool:
        """Whether `path` is an evaluation folder: not a run folder, named eval_step* or holding metrics.json."""
        return (
            path.is_dir()
            and not RunFolder(path).config_file.is_file()
            and (bool(EVAL_NAME.match(path.name)) or EvalFolder(path).summary.is_file())
        )

    @staticmethod
    def is_incomplete(path: pathlib.Path) -> bool:
        return path.name.startswith(INCOMPLETE)

    @staticmethod
    @contextlib.contextmanager
    def new(run: RunFolder, step: int) -> Iterator[tuple[EvalFolder, EvalFolder]]:
        """(folder to write, final folder) of a new evaluation of checkpoint `step`: the files go into
        incomplete_eval_step<step>_<time>, renamed to eval_step<step>_<time> (or <name>-2, ... when an
        evaluation in the same second took it) when the block ends; a block that stops or fails
        removes it. A process killed outright leaves it under its incomplete_ name, so a folder named
        eval_step* is never a partial result."""
        final = _reserve(run.path / EVAL_FOLDER.format(step=step, time=time.strftime("%Y%m%d-%H%M%S")))
        partial = final.with_name(INCOMPLETE + final.name)
        try:
            with cli.undone_on_stop(lambda: shutil.rmtree(partial, ignore_errors=True)):
                yield EvalFolder(partial), EvalFolder(final)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        partial.rename(final)


def _reserve(path: pathlib.Path) -> pathlib.Path:
    """The first free name of `path`, `path-2`, ... whose incomplete_ folder this call made. A name
    is free while neither it nor its incomplete_ folder exists; the check after the mkdir sees an
    evaluation that renamed its folder to that name just before, so no two take one name."""
    for final in (path, *(path.with_name(f"{path.name}-{i}") for i in range(2, 1000))):
        partial = final.with_name(INCOMPLETE + final.name)
        try:
            partial.mkdir(parents=True)
        except FileExistsError:
            continue
        if not final.exists():
            return final
        partial.rmdir()
    raise RunError(f"cannot make a new evaluation folder next to {path}")


def load_run_config(
    argv: list[str] | None = None, num_devices: int | None = None
) -> tuple[Config, RunFolder, int | None]:
    """For evaluation (eval.py, a notebook): the config saved in the run folder that --logdir names (a
    run or checkpoint folder) < the rest of the command line. Returns the config, the run folder and
    the checkpoint step --logdir named (None: the newest)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if "-h" in argv or "--help" in argv:
        print(cfg_lib.help_text("eval.py"))
        raise SystemExit(0)
    cli_keys = cfg_lib.parse_cli(argv)
    if "logdir" not in cli_keys:
        raise ConfigError("key 'logdir' is required: pass --logdir <experiment or checkpoint folder>")
    run, step = RunFolder.find(cli_keys.pop("logdir"))
    saved = str(run.config_file)
    config = _anchored(cfg_lib.apply(Config(), cfg_lib.load_yaml(saved), f"config file '{saved}'"), run)
    protocol = (
        cfg_lib.apply(config, {"protocol": cli_keys["protocol"]}, "command line") if "protocol" in cli_keys else config
    )
    if protocol.protocol is not None:  # its preset, then the keys given on the command line
        cfg_lib.validate(protocol)
        config = cfg_lib.apply(protocol, cfg_lib.PROTOCOLS[protocol.protocol](config.dataset), "protocol")
    config = cfg_lib.apply(config, cli_keys, "command line")
    return cfg_lib.validate(config, num_devices), run, step


def _anchored(config: Config, run: RunFolder) -> Config:
    """The saved config with its datadir made absolute. Runs save absolute paths; an older run's
    relative datadir was relative to the folder it was trained from, which its own path tells
    (<there>/<logdir>/<dataset>/<run name>), so evaluating from any folder reads the same data."""
    if pathlib.Path(config.datadir).is_absolute() or pathlib.Path(config.logdir).is_absolute():
        return config
    depth = len(pathlib.Path(config.logdir).parts) + 1
    there = run.path.resolve().parents[depth] if len(run.path.resolve().parents) > depth else pathlib.Path.cwd()
    return dataclasses.replace(config, datadir=str(there / config.datadir))


def absolute_paths(config: Config) -> Config:
    """datadir and logdir as absolute paths, so that the saved config reads the same files from any folder."""
    return dataclasses.replace(config, datadir=os.path.abspath(config.datadir), logdir=os.path.abspath(config.logdir))


def run_dir(config: Config) -> pathlib.Path:
    """logdir/dataset/<run name>: where checkpoints, config.yml and summaries live."""
    return RunFolder.of(config).path


def fs_message(e: OSError, doing: str) -> str:
    """A filesystem fault (full disk, read-only, no permission) in one line, with what to do."""
    path = e.filename or "?"
    hint = {errno.ENOSPC: "free some space", errno.EROFS: "pass a writable --logdir", errno.EACCES: "check permissions"}
    return f"cannot {doing}: {path}: {e.strerror}" + (f"; {hint[e.errno]}" if e.errno in hint else "")


# --- which folder, and is it the same experiment ------------------------------------------------


def name_run(config: Config) -> Config:
    """Fix the run's folder name: --run_name (in a sweep, name_trial's), else prefix + hash."""
    if config.run_name is not None:
        return config
    return dataclasses.replace(config, run_name=config.default_run_name())


LOCAL_SWEEP = "CWVAE_SWEEP_ID"  # sweep.py's trials: the local sweep's id (a wandb agent sets WANDB_SWEEP_ID)


def in_sweep() -> bool:
    """Whether this process is a sweep's trial: a wandb agent's or sweep.py's."""
    return bool(sweep_id())


def in_wandb_sweep() -> bool:
    """Whether this process is a wandb agent's trial (its run config comes from wandb)."""
    return bool(os.environ.get("WANDB_SWEEP_ID"))


def sweep_id() -> str:
    return os.environ.get("WANDB_SWEEP_ID") or os.environ.get(LOCAL_SWEEP, "")


def name_trial(config: Config, sweep: str | None = None) -> Config:
    """A sweep trial's folder, sweep-<sweep id>/<name>: the name the command line gave (train.py
    names it after the swept values), else the run's default name (main keys and hash). `sweep`:
    the sweep's id (None: this process's, sweep_id())."""
    name = config.run_name or config.default_run_name()
    sweep = sweep_id() if sweep is None else sweep
    return dataclasses.replace(config, run_name=f"sweep-{sweep}/{name.rpartition('/')[2]}")


def resume_config(config: Config) -> Config:
    """The config to run in the run's folder: a new folder draws the seed when none was given; an
    existing one must hold the same experiment (its saved result keys equal ours, the seed adopted
    when none was given), otherwise ConfigError lists the keys that differ."""
    saved_path = RunFolder.of(config).config_file
    if not saved_path.exists():
        return cfg_lib.resolve_seed(config)
    saved = cfg_lib.apply(Config(), cfg_lib.load_yaml(str(saved_path)), f"config file '{saved_path}'")
    if config.seed is None:
        config = dataclasses.replace(config, seed=saved.seed)
    ours, theirs = config.result_keys(), saved.result_keys()
    diff = [f"{k} {theirs[k]!r} -> {ours[k]!r}" for k in ours if ours[k] != theirs.get(k)]
    if diff:
        raise ConfigError(
            f"run folder '{run_dir(config)}' holds a run with other settings ({'; '.join(diff)}); "
            "pass another --run_name, or the saved values to resume it"
        )
    return config


def write_config(config: Config) -> None:
    media.write_text(RunFolder.of(config).config_file, config.to_yaml())


def wandb_id(config: Config) -> str:
    """The wandb run id kept in the run folder (made and saved on the first start)."""
    path = RunFolder.of(config).wandb_id_file
    if path.exists():
        return path.read_text().strip()
    run_id = secrets.token_hex(4)  # wandb's ids are 8 lowercase letters and digits
    media.write_text(path, run_id)
    return run_id


class RunLock:
    """One writer per run folder: an exclusive flock on <run>/lock, released by the kernel when
    the process ends (so a killed run leaves no stale lock). The file names the holder."""

    def __init__(self, folder: pathlib.Path):
        self.path = RunFolder(folder).lock_file
        self._fd = None

    def __enter__(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise RunError(f"run folder '{self.path.parent}' is in use by {holder}; wait for it to end") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"PID {os.getpid()} on host {socket.gethostname()}".encode())
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        os.close(self._fd)  # closing releases the flock
