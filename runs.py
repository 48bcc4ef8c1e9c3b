"""Experiment folders: which folder a run lives in, one writer per folder, its saved config, its
checkpoints and its wandb run. Training writes, and evaluation reads, one folder per experiment:

    logdir/<dataset>/<run name>/
        config.yml          the resolved config; a resume must match its result-changing keys
        wandb_id            the wandb run this folder belongs to (a resume continues it)
        lock                held by the training process (PID and host inside)
        checkpoints/<step>/ orbax: params and optimizer state (state/), loader positions (data/)
        damaged_checkpoints/<step>-<time>/  checkpoints that did not restore, moved aside
        videos/             training's prediction GIFs
        eval_step<N>_<time>/  an evaluation (eval.py); incomplete_eval_... while it is written

The run name is a readable prefix of the main keys plus a hash of every result-changing key
(`Config.run_hash`), or --run_name, or under a wandb sweep sweep-<id>/<the swept values>.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import fcntl
import gc
import json
import logging
import os
import pathlib
import re
import secrets
import shutil
import socket
import sys
import tempfile
import threading
import time
import traceback
import warnings
from collections.abc import Callable
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp
from absl import logging as absl_logging
from flax import nnx

import config as cfg_lib
import steps
import tools
from config import WANDB_MODES, Config
from errors import ConfigError, UserError


class RunError(UserError):
    """A run folder or checkpoint problem (in use, damaged, disk full, read-only): one line."""


EVAL_NAME = re.compile(r"eval_step(\d+)_(\d{8}-\d{6})(?:-(\d+))?$")  # eval_step<N>_<time>[-k], complete
INCOMPLETE = "incomplete_"  # name prefix of an evaluation folder still being written (never read as a result)


def eval_order(folder: pathlib.Path) -> tuple[int, str, int]:
    """Sort key of an evaluation folder: its step, then its time, then the -k of same-second ones."""
    match = EVAL_NAME.match(folder.name)
    assert match, f"not an evaluation folder name: {folder.name}"
    return int(match[1]), match[2], int(match[3] or 1)


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

    def eval_dir(self, step: int) -> pathlib.Path:
        """A new evaluation's folder name: eval_step<step>_<time> (eval.py adds -2, -3, ... if taken)."""
        return self.path / f"eval_step{step}_{time.strftime('%Y%m%d-%H%M%S')}"

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


def load_run_config(
    argv: list[str] | None = None, num_devices: int | None = None
) -> tuple[Config, RunFolder, int | None]:
    """For evaluation (eval.py, a notebook): the config saved in the run folder that --logdir names (a
    run or checkpoint folder) < the rest of the command line. Returns the config, the run folder and
    the checkpoint step --logdir named (None: the newest)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if "-h" in argv or "--help" in argv:
        print("python eval.py --logdir <experiment or checkpoint folder> [--key value ...]\n\n" + cfg_lib.help_text())
        raise SystemExit(0)
    cli = cfg_lib.parse_cli(argv)
    if "logdir" not in cli:
        raise ConfigError("key 'logdir' is required: pass --logdir <experiment or checkpoint folder>")
    run, step = RunFolder.find(cli.pop("logdir"))
    saved = str(run.config_file)
    config = _anchored(cfg_lib.apply(Config(), cfg_lib.load_yaml(saved), f"config file '{saved}'"), run)
    protocol = cfg_lib.apply(config, {"protocol": cli["protocol"]}, "command line") if "protocol" in cli else config
    if protocol.protocol is not None:  # its preset, then the keys given on the command line
        cfg_lib.validate(protocol)
        config = cfg_lib.apply(protocol, cfg_lib.PROTOCOLS[protocol.protocol](config.dataset), "protocol")
    config = cfg_lib.apply(config, cli, "command line")
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


def fs_error(e: BaseException, path: os.PathLike | str = "?") -> OSError | None:
    """The OSError behind `e`, or None. orbax re-raises some; tensorstore reports them as a
    ValueError ending in "[os_error_code='28']"."""
    while e is not None:
        if isinstance(e, OSError) and e.errno is not None:
            return e
        if code := re.search(r"os_error_code='(\d+)'", str(e)):
            return OSError(int(code.group(1)), os.strerror(int(code.group(1))), str(path))
        e = e.__cause__ or e.__context__
    return None


def fs_message(e: OSError, doing: str) -> str:
    path = e.filename or "?"
    hint = {errno.ENOSPC: "free some space", errno.EROFS: "pass a writable --logdir", errno.EACCES: "check permissions"}
    return f"cannot {doing}: {path}: {e.strerror}" + (f"; {hint[e.errno]}" if e.errno in hint else "")


# --- which folder, and is it the same experiment ------------------------------------------------


def name_run(config: Config) -> Config:
    """Fix the run's folder name: --run_name (in a sweep, name_trial's), else prefix + hash."""
    if config.run_name is not None:
        return config
    return dataclasses.replace(config, run_name=config.default_run_name())


def name_trial(config: Config) -> Config:
    """A sweep trial's folder, sweep-<sweep id>/<name>: the name the command line gave (train.py
    names it after the swept values), else the run's default name (main keys and hash)."""
    name = config.run_name or config.default_run_name()
    return dataclasses.replace(config, run_name=f"sweep-{sweep_id()}/{name.rpartition('/')[2]}")


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


def write_config(config: Config) -> None:
    tools.write_text(RunFolder.of(config).config_file, config.to_yaml())


# --- wandb ----------------------------------------------------------------------------------------


def in_sweep() -> bool:
    return bool(os.environ.get("WANDB_SWEEP_ID"))


def resolve_wandb_mode(config: Config) -> Config:
    """The wandb mode: the key, else $WANDB_MODE, else online with an API key and offline without."""
    if config.wandb_mode is not None:
        return config
    mode = os.environ.get("WANDB_MODE")
    if mode not in WANDB_MODES:
        has_key = bool(os.environ.get("WANDB_API_KEY")) or (pathlib.Path.home() / ".netrc").exists()
        mode = "online" if has_key else "offline"
    return dataclasses.replace(config, wandb_mode=mode)


def sweep_id() -> str:
    return os.environ.get("WANDB_SWEEP_ID", "")


def init_wandb(config: Config, run_id: str | None = None):
    """A wandb run that never prompts, resumed when `run_id` names an earlier one. It is named after
    the run folder, grouped by its sweep (or else its dataset), and keeps its files in the folder."""
    import wandb

    config = resolve_wandb_mode(config)
    folder = RunFolder.of(config).path
    folder.mkdir(parents=True, exist_ok=True)
    sweep, _, name = (config.run_name or folder.name).rpartition("/")
    return wandb.init(
        project=config.wandb_project,
        mode=config.wandb_mode,
        dir=folder,
        name=name,
        group=sweep or config.dataset,
        config=config.to_dict(),
        id=run_id,
        resume="allow" if run_id else None,
        settings=wandb.Settings(silent=True),
    )


def log_to_training_run(run: RunFolder, config: Config, values: dict[str, float], step: int) -> str:
    """An evaluation's scalars, added to the run's metrics.jsonl and to its wandb run (as eval/<name>
    against eval/step, so that they sit beside the training curves). Returns where they went. The
    wandb run is left alone while training holds the folder (two writers to one run)."""
    values = {f"eval/{k}": v for k, v in values.items()}
    MetricsLog(run.metrics_file).write(values, step)
    places = [str(run.metrics_file)]
    config = resolve_wandb_mode(config)
    if config.wandb_mode == "disabled" or not run.wandb_id_file.exists():
        return places[0]
    try:
        with RunLock(run.path):
            import wandb

            wandb_run = wandb.init(
                project=config.wandb_project,
                mode=config.wandb_mode,
                dir=run.path,
                id=run.wandb_id_file.read_text().strip(),
                resume="allow",
                settings=wandb.Settings(silent=True),
            )
            wandb_run.define_metric("eval/*", step_metric="eval/step")
            wandb_run.log({**values, "eval/step": step})
            wandb_run.finish()
            places.append(f"wandb run {wandb_run.id}")
    except RunError:
        pass  # training runs in the folder: metrics.jsonl only
    return " and ".join(places)


class MetricsLog:
    """A run's scalars as JSON lines, {"step": N, "time": t, "<prefix>/<name>": value, ...}, appended
    as they are logged, so a run's curves are readable without wandb. A resumed run appends again
    from its checkpoint: for a step logged twice, the later line holds the values of the run that went on."""

    def __init__(self, path: pathlib.Path):
        self.path = path

    def write(self, values: dict[str, Any], step: int) -> None:
        numbers = {k: float(v) for k, v in values.items() if isinstance(v, (int, float)) or getattr(v, "ndim", 1) == 0}
        if numbers:
            line = json.dumps({"step": int(step), "time": round(time.time(), 3), **numbers})
            with open(self.path, "a") as f:
                f.write(line + "\n")


def read_metrics(path: pathlib.Path) -> dict[int, dict[str, float]]:
    """metrics.jsonl as {step: {key: value}}, later lines for a step overriding earlier ones;
    unreadable lines (a line cut by a killed process) are skipped."""
    out: dict[int, dict[str, float]] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
                out.setdefault(int(record.pop("step")), {}).update(record)
            except (ValueError, KeyError, TypeError, AttributeError):
                continue
    return out


def wandb_id(config: Config) -> str:
    """The wandb run id kept in the run folder (made and saved on the first start)."""
    path = RunFolder.of(config).wandb_id_file
    if path.exists():
        return path.read_text().strip()
    run_id = secrets.token_hex(4)  # wandb's ids are 8 lowercase letters and digits
    tools.write_text(path, run_id)
    return run_id


# --- checkpoints ----------------------------------------------------------------------------------


def checkpoint_manager(folder: pathlib.Path, config: Config) -> ocp.CheckpointManager:
    """The two latest checkpoints kept (so a damaged newest one has a fallback, and eval.py can
    read one while training writes the next), plus a permanent one every save_named_model_every
    steps; orbax writes each to a temporary folder and renames it (atomic)."""
    options = ocp.CheckpointManagerOptions(
        max_to_keep=2,
        keep_period=config.save_named_model_every,
        enable_async_checkpointing=False,
        cleanup_tmp_directories=True,
    )
    return ocp.CheckpointManager(RunFolder(folder.absolute()).checkpoints, options=options)


def save_checkpoint(manager, step: int, params, opt_state, loader) -> None:
    """Write checkpoint `step`, every process taking part: orbax writes the arrays together, each
    process its own loader position (data/process_<p>-of-<n>.json). A filesystem fault (full disk,
    read-only) is a one-line RunError, and the previous checkpoints stay readable (orbax renames a
    finished checkpoint into place)."""
    doing = f"write checkpoint {step} in {manager.directory}"
    _check_space(pathlib.Path(manager.directory), (params, opt_state), doing)
    args = ocp.args.Composite(
        state=ocp.args.StandardSave({"params": params, "opt_state": opt_state}),
        data=grain.checkpoint.CheckpointSave(loader),
    )
    try:
        with quiet_orbax():
            manager.save(step, args=args, force=True)
            manager.wait_until_finished()
    except Exception as e:
        if (os_error := fs_error(e, manager.directory)) is None:
            raise
        raise RunError(fs_message(os_error, doing)) from None


def _check_space(folder: pathlib.Path, tree, doing: str) -> None:
    """Refuse before writing when the disk cannot hold the checkpoint (orbax fails noisily half-way)."""
    need = sum(x.nbytes for x in jax.tree.leaves(tree)) * 1.1 + 2**20
    free = shutil.disk_usage(folder).free
    if free < need:
        raise RunError(f"cannot {doing}: needs ~{need / 2**20:.1f} MiB, {free / 2**20:.1f} MiB free; free some space")


@contextlib.contextmanager
def quiet_orbax():
    """Hold back everything an orbax call writes to stderr, and show it only when the call succeeds.
    When a read or a write fails, orbax's threads, tensorstore, the `asyncio` and absl loggers,
    unraisable exceptions and warnings all report it before the error reaches us; we report it
    once, in one line. Nothing of a failed call outlives the holding, so nothing of it is printed
    later: its event loops end every read before they close, and its frames are freed inside."""
    sys.stderr.flush()
    saved_fd = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)  # what tensorstore's C++ (or anything else) writes to fd 2
        try:
            with _python_output_into(held), _draining_loops():
                try:
                    yield
                except Exception as e:
                    _free_failed_call(e)
                    raise
        finally:
            os.dup2(saved_fd, 2)
            os.close(saved_fd)
        held.seek(0)
        replay = held.read().decode(errors="replace")
    sys.stderr.write(replay)  # the call succeeded: what it printed was real output


@contextlib.contextmanager
def _python_output_into(held):
    """Send sys.stderr, the `asyncio` and absl loggers, unraisable exceptions, exceptions ending a
    thread and warnings to the file `held` (from every thread) while the context lasts; orbax's own
    absl info and warning lines are dropped, as outside it."""
    text = open(os.dup(held.fileno()), "w", buffering=1, errors="backslashreplace")
    handler = logging.StreamHandler(text)
    handler.setFormatter(logging.Formatter(logging.BASIC_FORMAT))
    loggers = {logger: logger.propagate for logger in (logging.getLogger("asyncio"), absl_logging.get_absl_logger())}
    saved = sys.stderr, sys.unraisablehook, threading.excepthook, absl_logging.get_verbosity()
    sys.stderr, sys.unraisablehook, threading.excepthook = text, sys.__unraisablehook__, threading.__excepthook__
    absl_logging.set_verbosity(absl_logging.FATAL)
    for logger in loggers:
        logger.addHandler(handler)
        logger.propagate = False
    try:
        with warnings.catch_warnings():
            warnings.showwarning = lambda message, category, filename, lineno, file=None, line=None: text.write(
                warnings.formatwarning(message, category, filename, lineno, line)
            )
            yield
    finally:
        for logger, propagate in loggers.items():
            logger.removeHandler(handler)
            logger.propagate = propagate
        sys.stderr, sys.unraisablehook, threading.excepthook = saved[:3]
        absl_logging.set_verbosity(saved[3])
        text.close()


class _DrainingLoop(asyncio.SelectorEventLoop):
    """An event loop that lets its tasks end before it closes. orbax runs each call in a new loop
    and closes it as soon as the first read fails; the other reads went on in tensorstore's threads
    and, at some later moment, reported that nobody awaited them ("Task exception was never
    retrieved" with the whole TensorStore spec, "Event loop is closed")."""

    WAIT_S = 10.0  # for the reads still running; then they are cancelled

    def close(self) -> None:
        if not self.is_running() and not self.is_closed():
            self.run_until_complete(self._finish())
        super().close()

    async def _finish(self) -> None:
        for _ in range(10):  # an ending task may start others
            tasks = asyncio.all_tasks(self) - {asyncio.current_task()}
            if not tasks:
                break
            _, late = await asyncio.wait(tasks, timeout=self.WAIT_S)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late, timeout=self.WAIT_S)
            for task in tasks:
                if task.done() and not task.cancelled():
                    task.exception()  # retrieved: the error reached us through the first read
            await asyncio.sleep(0)  # the callbacks of the ended tasks (orbax's gathers) run
        await self.shutdown_asyncgens()
        await self.shutdown_default_executor()


class _DrainingPolicy(asyncio.DefaultEventLoopPolicy):
    def new_event_loop(self) -> asyncio.AbstractEventLoop:
        return _DrainingLoop()


@contextlib.contextmanager
def _draining_loops():
    """Every event loop made while the context lasts is a `_DrainingLoop`: orbax makes its loops
    with asyncio.new_event_loop(), which asks the event loop policy."""
    saved = asyncio.get_event_loop_policy()
    asyncio.set_event_loop_policy(_DrainingPolicy())
    try:
        yield
    finally:
        asyncio.set_event_loop_policy(saved)


def _free_failed_call(e: BaseException) -> None:
    """Free the frames of a failed call now: they hold the coroutines it made and never started
    (reads of other arrays), which warn "coroutine ... was never awaited" when collected."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        traceback.clear_frames(e.__traceback__)  # the traceback itself stays (its lines)
        e = e.__cause__ or e.__context__
    gc.collect()


_STATUS = re.compile(
    r"\b(CANCELLED|UNKNOWN|INVALID_ARGUMENT|DEADLINE_EXCEEDED|NOT_FOUND|ALREADY_EXISTS|PERMISSION_DENIED|"
    r"RESOURCE_EXHAUSTED|FAILED_PRECONDITION|ABORTED|OUT_OF_RANGE|UNIMPLEMENTED|INTERNAL|UNAVAILABLE|DATA_LOSS|"
    r"UNAUTHENTICATED): .*"
)


def _reason(e: BaseException, limit: int = 300) -> str:
    """Why a checkpoint does not restore, in one line: tensorstore's status (its code and message,
    e.g. "OUT_OF_RANGE: Error reading "params.../0.0" in OCDBT database: Requested byte range [..)
    is not valid for value of size ..") where the error's chain has one, else the error's message;
    never the TensorStore spec orbax appends, nor the database's path (the caller names the
    checkpoint)."""
    chain = []
    while e is not None and e not in chain:
        chain.append(e)
        e = e.__cause__ or e.__context__
    messages = [" ".join(str(x).split()) for x in chain]
    status = next((m.group(0) for m in map(_STATUS.search, messages) if m), None)
    text = status or messages[0] or type(chain[0]).__name__
    text = re.split(r" See full TensorStore details| \[\w+='|<bound method", text)[0]
    text = re.sub(r' at local file "[^"]*"', "", text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def quarantine(run: RunFolder, step: int) -> pathlib.Path:
    """Move a checkpoint that does not restore out of checkpoints/ (kept for inspection)."""
    target = run.damaged / f"{step}-{time.strftime('%Y%m%d-%H%M%S')}"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(run.checkpoint(step)), str(target))
    return target


def restore_with_fallback(run: RunFolder, read: Callable[[int], Any], step: int | None = None, set_aside=False):
    """(step, read(step)) of checkpoint `step`, or of the newest checkpoint that restores; (None, None)
    when there is none. Training and evaluation both restore through here.

    A damaged checkpoint is a one-line RunError when the user named it, or with several processes
    (they could not agree on which one to fall back to); otherwise one warning line and the next
    older one is tried; with `set_aside` (training, which owns the folder) it is first moved to
    damaged_checkpoints/. A checkpoint that disappears while it is read (a training run replacing
    it) is not damaged: the new newest is read. A UserError of `read` (a checkpoint of another
    model) ends it at once."""
    skipped: set[int] = set()
    for _ in range(20):  # a run saving every step can replace a few checkpoints while we read
        candidates = [step] if step is not None else run.complete_steps(skipped)
        if not candidates:
            break
        chosen = candidates[0]
        try:
            return chosen, read(chosen)
        except UserError:
            raise
        except Exception as e:  # noqa: BLE001 (orbax/tensorstore raise many types for damaged files)
            if step is None and not run.checkpoint(chosen).exists():
                continue
            if step is not None or jax.process_count() > 1:
                raise RunError(f"checkpoint '{run.checkpoint(chosen)}' does not restore: {_reason(e)}") from None
            then = f"moved to {quarantine(run, chosen)}" if set_aside else "using an older one"
            print(f"warning: checkpoint {chosen} does not restore ({_reason(e)}); {then}", file=sys.stderr)
            skipped.add(chosen)
    if skipped:
        raise RunError(f"no checkpoint in '{run.checkpoints}' restores (damaged: {sorted(skipped)})")
    return None, None


def restore_latest(folder: pathlib.Path, config: Config, params, opt_state, loader):
    """(manager, step, params, opt_state) from the newest checkpoint that restores, the loader moved
    to its position; step 0 and the given state when there is none (see restore_with_fallback)."""
    run = RunFolder(folder.absolute())
    manager = checkpoint_manager(run.path, config)

    def read(step: int):
        check_shapes(run.state(step), params)
        return _restore(run, manager, step, params, opt_state, loader)

    step, restored = restore_with_fallback(run, read, set_aside=True)
    if run.complete_steps() != sorted(manager.all_steps(), reverse=True):  # a checkpoint was set aside
        manager.close()
        manager = checkpoint_manager(run.path, config)
    return (manager, 0, params, opt_state) if step is None else (manager, step, *restored)


def _restore(run: RunFolder, manager, step: int, params, opt_state, loader) -> tuple[Any, Any]:
    """Restore into the structure (and shardings) of the given params and opt_state, and this
    process's loader position into `loader`; a run resumes with the process count that saved it."""
    if not run.data_position(step, jax.process_index(), jax.process_count()).exists():
        saved = sorted(p.name for p in run.data_position(step, 0, 1).parent.glob("process_*-of-*.json"))
        if saved:  # written by another number of processes
            count = saved[0].rsplit("-of-", 1)[1].removesuffix(".json")
            raise RunError(
                f"checkpoint {run.checkpoint(step)} was written by {count} processes; resume it with {count} "
                f"(this run has {jax.process_count()})"
            )
        raise FileNotFoundError(f"checkpoint {step} has no data/ (loader position)")
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, {"params": params, "opt_state": opt_state})
    args = ocp.args.Composite(state=ocp.args.StandardRestore(abstract), data=grain.checkpoint.CheckpointRestore(loader))
    with quiet_orbax():
        out = manager.restore(step, args=args)
    return out.state["params"], out.state["opt_state"]


def check_shapes(state_dir: pathlib.Path, params) -> None:
    """Compare the stored parameter shapes with the model's before restoring, so a wrong
    config.yml gives a one-line error naming the first parameter that differs."""

    def name(path) -> str:
        keys = [str(getattr(k, "key", getattr(k, "idx", k))) for k in path]
        return "/".join(keys[:-1] if keys and keys[-1] == "value" else keys)

    stored = ocp.PyTreeCheckpointer().metadata(state_dir.absolute()).item_metadata["params"]
    stored = {name(k): tuple(v.shape) for k, v in jax.tree_util.tree_leaves_with_path(stored)}
    for path, leaf in jax.tree_util.tree_leaves_with_path(nnx.to_pure_dict(params)):
        want = stored.get(name(path))
        if want != leaf.shape:
            raise ConfigError(
                f"checkpoint '{state_dir.parent}' does not match config.yml's model: parameter {name(path)} "
                f"is {want} in the checkpoint and {leaf.shape} in the model"
            )


def load_params(run: RunFolder, config: Config, step: int | None = None) -> tuple[nnx.GraphDef, Any, int]:
    """The model of a run for evaluation: (graphdef, params, step) of checkpoint `step` or of the newest
    that restores (see restore_with_fallback). Safe while the run trains: when the newest checkpoint
    is replaced under us, the next newest is read. Parameters only: any process count restores."""
    graphdef, abstract_params = steps.abstract_model(config)  # shapes only
    run = RunFolder(pathlib.Path(run.path).absolute())
    step, params = restore_with_fallback(run, lambda s: _read_params(run, s, abstract_params), step)
    if step is None:
        raise ConfigError(f"no checkpoint in '{run.checkpoints}'; train first or pass the experiment folder")
    return graphdef, params, step


def _read_params(run: RunFolder, step: int, params) -> Any:
    check_shapes(run.state(step), params)
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    abstract = {"params": jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), params)}
    restore_args = jax.tree.map(lambda x: ocp.ArrayRestoreArgs(sharding=device), abstract)
    args = ocp.args.PyTreeRestore(abstract, restore_args=restore_args, partial_restore=True)
    with quiet_orbax(), ocp.PyTreeCheckpointer() as checkpointer:
        return checkpointer.restore(run.state(step), args=args)["params"]
