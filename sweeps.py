"""A wandb sweep file run without wandb (sweep.py): the file read and checked, its trials (the grid, or
seeded draws from wandb's distributions), each trial's command as wandb's agent builds it, the folder
train.py trains it in (logdir/<dataset>/sweep-<id>/<its values>, as under a wandb sweep), one runner
per trial at a time, and the trials ranked by the file's metric.

The sweep's id is local-<file stem>, the same for every run of the same file, so that running it again
resumes it. Its own files sit beside its trials' folders, in logdir/<dataset>/sweep-local-<stem>/:

    trials.jsonl      one line per trial that a runner ran: how it ended (finished, failed, stopped)
    .claims/<trial>   locked (flock) by the runner that runs the trial and by the trial's process
    ranking.md        the trials ranked by the metric's last value in each trial's metrics.jsonl
    compare/          compare.py's table and training curves of the trials (sweep.py writes it)
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import itertools
import json
import math
import os
import pathlib
import shlex
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import yaml

import config as cfg_lib
import logger
import media
import runs
from errors import ConfigError, UserError


class SweepError(UserError):
    """A sweep file the local runner cannot run: one line naming the file, the key and what is valid."""


METHODS = ("grid", "random")  # wandb's bayes needs its server
GOALS = ("minimize", "maximize")
KEYS = ("program", "method", "metric", "parameters", "command", "run_cap", "name", "description", "entity", "project")
IGNORED = ("early_terminate",)  # wandb's server stops runs early; the local runner runs each to its end
DEFAULT_COMMAND = ["${env}", "${interpreter}", "${program}", "${args}"]  # wandb's agent's
MACROS = ("env", "interpreter", "program", "args", "args_no_equals", "args_no_hyphens", "args_no_boolean_flags")
MACROS += ("args_json", "args_append_hydra", "args_override_hydra")


def _quantized(x: float, q: float) -> int | float:
    """x rounded to a multiple of q (an int when q is one), as wandb's q_ distributions."""
    return int(round(x / q) * q) if isinstance(q, int) else float(round(x / q) * q)


def _log_uniform(lo: float, hi: float, rng: np.random.Generator) -> float:
    return math.exp(rng.uniform(math.log(lo), math.log(hi)))


# wandb's parameter distributions (its sweep configuration reference): the keys each needs, and one draw.
DISTRIBUTIONS: dict[str, tuple[tuple[str, ...], Callable[[dict, np.random.Generator], Any]]] = {
    "constant": (("value",), lambda p, rng: p["value"]),
    "categorical": (("values",), lambda p, rng: p["values"][int(rng.choice(len(p["values"]), p=_weights(p)))]),
    "int_uniform": (("min", "max"), lambda p, rng: int(rng.integers(p["min"], p["max"] + 1))),
    "uniform": (("min", "max"), lambda p, rng: float(rng.uniform(p["min"], p["max"]))),
    "q_uniform": (("min", "max"), lambda p, rng: _quantized(rng.uniform(p["min"], p["max"]), p.get("q", 1.0))),
    "log_uniform": (("min", "max"), lambda p, rng: math.exp(rng.uniform(p["min"], p["max"]))),
    "log_uniform_values": (("min", "max"), lambda p, rng: _log_uniform(p["min"], p["max"], rng)),
    "q_log_uniform_values": (
        ("min", "max"),
        lambda p, rng: _quantized(_log_uniform(p["min"], p["max"], rng), p.get("q", 1.0)),
    ),
    "normal": ((), lambda p, rng: float(rng.normal(p.get("mu", 0.0), p.get("sigma", 1.0)))),
    "log_normal": ((), lambda p, rng: math.exp(rng.normal(p.get("mu", 0.0), p.get("sigma", 1.0)))),
}
GRID = ("constant", "categorical", "int_uniform", "q_uniform")  # wandb's grid takes these (no probabilities)


def _weights(p: dict) -> list[float] | None:
    """A categorical parameter's probabilities (wandb's categorical_w_probabilities), or None: uniform."""
    return None if "probabilities" not in p else [w / sum(p["probabilities"]) for w in p["probabilities"]]


@dataclasses.dataclass(frozen=True)
class Sweep:
    """A checked sweep file: what each trial runs, how its values are chosen and how trials are ranked."""

    path: pathlib.Path
    program: str
    method: str
    parameters: dict[str, tuple[str, dict]]  # name -> (distribution, its keys)
    command: list[str]
    metric: str | None = None
    goal: str = "minimize"
    run_cap: int | None = None
    notes: tuple[str, ...] = ()

    @property
    def id(self) -> str:
        """local-<file stem>: the same for every run of this file, so that a rerun finds its trials."""
        return "local-" + "".join(ch if ch.isalnum() or ch in "._-" else "-" for ch in self.path.stem)


def load(path: str | os.PathLike) -> Sweep:
    """The sweep file at `path`, checked: every fault is a SweepError naming the file and the key."""
    p = pathlib.Path(path)
    where = f"sweep file '{path}'"
    if not p.is_file():
        raise SweepError(f"{where} does not exist; pass a wandb sweep YAML such as configs/sweep_mmnist.yaml")
    try:
        spec = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise SweepError(f"{where} is not valid YAML: {_yaml_fault(e)}") from None
    if not isinstance(spec, dict):
        raise SweepError(f"{where} must hold a mapping (program, method, parameters, ...), got {type(spec).__name__}")
    unknown = [k for k in spec if k not in KEYS + IGNORED]
    if unknown:
        raise SweepError(f"{where}: unknown key '{unknown[0]}'; valid: {', '.join(KEYS + IGNORED)}")
    method = spec.get("method")
    if method not in METHODS:
        hint = " (wandb's server chooses its trials: run it with wandb sweep)" if method == "bayes" else ""
        raise SweepError(f"{where}: method {method!r} is not run locally{hint}; valid: {', '.join(METHODS)}")
    if not isinstance(spec.get("program"), str):
        raise SweepError(f"{where}: 'program' must name the script each trial runs, e.g. program: train.py")
    command = spec.get("command", DEFAULT_COMMAND)
    if not isinstance(command, list) or not all(isinstance(c, (str, int, float)) for c in command):
        raise SweepError(
            f"{where}: 'command' must be a list of words, e.g. [.venv/bin/python, ${{program}}, ${{args}}]"
        )
    run_cap = spec.get("run_cap")
    if run_cap is not None and (not isinstance(run_cap, int) or isinstance(run_cap, bool) or run_cap < 0):
        raise SweepError(f"{where}: 'run_cap' got {run_cap!r}; must be a whole number >= 0")
    params = spec.get("parameters")
    if not isinstance(params, dict) or not params:
        raise SweepError(f"{where}: no 'parameters'; give one or more, e.g. parameters: {{beta: {{values: [0.5, 1]}}}}")
    notes = tuple(f"{where}: '{k}' is not applied by the local runner" for k in IGNORED if k in spec)
    return Sweep(
        p,
        spec["program"],
        method,
        {name: _distribution(where, name, params[name], method) for name in sorted(params)},
        [str(c) for c in command],
        *_metric(where, spec.get("metric")),
        run_cap,
        notes,
    )


def _yaml_fault(e: yaml.YAMLError) -> str:
    """What YAML found wrong and where; a ${macro} in a [...] list (where { opens a mapping) gets a hint."""
    mark = getattr(e, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    text = f"{getattr(e, 'problem', None) or str(e).splitlines()[0]}{where}"
    if "'{'" in text:
        text += " (in a [...] list, quote a macro: '${args}', or write the list one '- ${args}' a line)"
    return text


def _metric(where: str, metric: Any) -> tuple[str | None, str]:
    """(name, goal) of the sweep's metric; (None, minimize) when the file names none."""
    if metric is None:
        return None, "minimize"
    if not isinstance(metric, dict) or not isinstance(metric.get("name"), str):
        raise SweepError(
            f"{where}: 'metric' must be a mapping with a name, e.g. {{name: val/neg_elbo, goal: minimize}}"
        )
    goal = metric.get("goal", "minimize")
    if goal not in GOALS:
        raise SweepError(f"{where}: metric goal {goal!r}; valid: {', '.join(GOALS)}")
    return metric["name"], goal


def _distribution(where: str, name: str, p: Any, method: str) -> tuple[str, dict]:
    """(distribution, keys) of parameter `name`, its distribution inferred as wandb does when not given."""
    at = f"{where}: parameter '{name}'"
    if not isinstance(p, dict) or "parameters" in p:
        raise SweepError(f"{at} must be a mapping with value, values or a distribution (nested parameters are not run)")
    dist = p.get("distribution")
    if dist is None:
        if "value" in p:
            dist = "constant"
        elif "values" in p:
            dist = "categorical"
        elif "min" in p and "max" in p:
            ints = all(isinstance(p[k], int) and not isinstance(p[k], bool) for k in ("min", "max"))
            dist = "int_uniform" if ints else "uniform"
        else:
            raise SweepError(f"{at} has no value, values or min and max; give one, e.g. values: [1, 2]")
    if dist == "categorical_w_probabilities":
        dist = "categorical"
    if dist not in DISTRIBUTIONS:
        raise SweepError(f"{at}: distribution {dist!r} is not drawn locally; valid: {', '.join(DISTRIBUTIONS)}")
    missing = [k for k in DISTRIBUTIONS[dist][0] if k not in p]
    if missing:
        raise SweepError(f"{at}: distribution '{dist}' needs {' and '.join(missing)}")
    if method == "grid" and (dist not in GRID or "probabilities" in p):
        raise SweepError(
            f"{at} is {dist}{' with probabilities' if 'probabilities' in p else ''}; a grid takes "
            f"value, values, int_uniform or q_uniform (method: random draws from the others)"
        )
    _check_values(at, dist, p)
    return dist, p


def _check_values(at: str, dist: str, p: dict) -> None:
    """The distribution's keys hold values it can draw from (wandb's checks)."""
    if dist == "categorical":
        if not isinstance(p["values"], list) or not p["values"]:
            raise SweepError(f"{at}: 'values' must be a non-empty list")
        w = p.get("probabilities")
        if w is not None and not (
            isinstance(w, list) and len(w) == len(p["values"]) and all(_number(x) and x >= 0 for x in w) and sum(w) > 0
        ):
            raise SweepError(f"{at}: 'probabilities' must be {len(p['values'])} numbers >= 0, one per value")
    if "min" in DISTRIBUTIONS[dist][0]:
        if not (_number(p["min"]) and _number(p["max"])):
            raise SweepError(f"{at}: min and max must be numbers, got {p['min']!r} and {p['max']!r}")
        if dist == "int_uniform" and not (isinstance(p["min"], int) and isinstance(p["max"], int)):
            raise SweepError(f"{at}: int_uniform needs whole numbers, got min {p['min']} and max {p['max']}")
        if p["min"] >= p["max"] or ("values" in dist and p["min"] <= 0):
            valid = "0 < min < max" if "values" in dist else "min < max"
            raise SweepError(f"{at}: min {p['min']} and max {p['max']}; {dist} needs {valid}")
    if "q" in p and not (_number(p["q"]) and p["q"] > 0):
        raise SweepError(f"{at}: q got {p['q']!r}; must be > 0")


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


# --- trials --------------------------------------------------------------------------------


def draws(sweep: Sweep, seed: int, count: int | None = None) -> list[dict[str, Any]]:
    """The sweep's trials' values, in its order. Grid: every combination, the parameters in name order
    and the last one varying fastest (as wandb's grid), at most run_cap. Random: the first run_cap (else
    `count`) draws from a generator seeded by `seed`, so the same seed draws the same trials."""
    names = list(sweep.parameters)
    if sweep.method == "grid":
        grid = itertools.product(*(_grid_values(*sweep.parameters[n]) for n in names))
        return [dict(zip(names, combo)) for combo in itertools.islice(grid, sweep.run_cap)]
    n = sweep.run_cap if sweep.run_cap is not None else count
    if n is None:
        raise SweepError(f"sweep file '{sweep.path}': random draws without end; set run_cap in it or pass --count N")
    rng = np.random.default_rng(seed)
    return [{k: _plain(DISTRIBUTIONS[d][1](p, rng)) for k, (d, p) in sweep.parameters.items()} for _ in range(n)]


def _grid_values(dist: str, p: dict) -> list:
    if dist == "constant":
        return [p["value"]]
    if dist == "int_uniform":
        return list(range(p["min"], p["max"] + 1))
    if dist == "q_uniform":  # wandb's: np.arange, so max itself is left out
        return np.arange(p["min"], p["max"], p.get("q", 1.0)).tolist()
    return list(p["values"])


def _plain(value: Any) -> Any:
    """A numpy scalar as the Python number it is (for the command line and YAML)."""
    return value.item() if isinstance(value, np.generic) else value


def command(sweep: Sweep, values: dict[str, Any], interpreter: str) -> tuple[list[str], int]:
    """A trial's command as wandb's agent builds it from the file's `command` (its macros: ${args}, ...;
    ${envvar:NAME} by wandb's own code), and where the program's arguments start in it. ${interpreter}
    is `interpreter` (wandb's agent writes python, which may not be the venv's)."""
    from wandb.sdk.launch.sweeps.utils import create_sweep_command, create_sweep_command_args

    macros = create_sweep_command_args({"args": {k: {"value": v} for k, v in values.items()}})
    macros |= {"env": ["/usr/bin/env"], "interpreter": [interpreter], "program": [sweep.program]}
    words, start = [], None
    for word in create_sweep_command(list(sweep.command)):
        if word.startswith("${") and word.endswith("}"):
            if word[2:-1] not in MACROS:
                valid = ", ".join("${" + m + "}" for m in MACROS)
                raise SweepError(f"sweep file '{sweep.path}': command has {word}; valid: {valid}")
            words += macros[word[2:-1]]
            start = len(words) if word == "${program}" else start
        else:
            words.append(word)
    if start is None and sweep.program in words:
        start = words.index(sweep.program) + 1
    if start is None:
        raise SweepError(f"sweep file '{sweep.path}': its command runs neither ${{program}} nor {sweep.program!r}")
    return words, start


@dataclasses.dataclass(frozen=True)
class Trial:
    """One trial: its number in the sweep's order, its values, its command and its run folder."""

    number: int
    total: int
    values: dict[str, Any]
    command: list[str]
    folder: pathlib.Path
    max_steps: int | None

    @property
    def name(self) -> str:
        return self.folder.name

    def __str__(self) -> str:
        return f"trial {self.number}/{self.total} {self.name}"


def trial_folder(argv: list[str], sweep_id: str) -> tuple[pathlib.Path, cfg_lib.Config]:
    """The run folder train.py trains `argv` in as a trial of sweep `sweep_id` (train.py's naming:
    the values on its command line), and the trial's config."""
    config = cfg_lib.parse(argv)
    if config.run_name is None:
        config = dataclasses.replace(config, run_name=cfg_lib.trial_name(argv))
    config = runs.name_trial(config, sweep_id)
    return runs.run_dir(config), config


def plan(sweep: Sweep, seed: int, count: int | None, interpreter: str) -> list[Trial]:
    """Every trial of the sweep, each checked as train.py checks its command line (an unknown key, a
    bad value: the SweepError quotes train.py's line) before any runs."""
    values = draws(sweep, seed, count)
    if not values:
        raise SweepError(f"sweep file '{sweep.path}' has no trials (run_cap {sweep.run_cap}, --count {count})")
    trials = []
    for number, trial_values in enumerate(values, 1):
        words, start = command(sweep, trial_values, interpreter)
        try:
            folder, config = trial_folder(words[start:], sweep.id)
        except ConfigError as e:
            shown = ", ".join(f"{k}={v}" for k, v in trial_values.items())
            raise SweepError(f"sweep file '{sweep.path}', trial {number} ({shown}): {e}") from None
        trials.append(Trial(number, len(values), trial_values, words, folder, config.max_steps))
    return trials


# --- the sweep's folder ---------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SweepFolder:
    """logdir/<dataset>/sweep-<id>: the trials' folders and the sweep's own files (the module's docstring)."""

    path: pathlib.Path

    log = property(lambda self: self.path / "trials.jsonl")
    ranking = property(lambda self: self.path / "ranking.md")
    comparison = property(lambda self: self.path / "compare")

    def claim_file(self, trial: str) -> pathlib.Path:
        return self.path / ".claims" / trial

    def records(self) -> dict[str, dict]:
        """The last line of trials.jsonl of each trial."""
        out = {}
        if self.log.is_file():
            for line in self.log.read_text(errors="replace").splitlines():
                with contextlib.suppress(ValueError, TypeError, KeyError):
                    record = json.loads(line)
                    out[record["trial"]] = record
        return out

    def record(self, trial: Trial, status: str, exit_code: int, seconds: float) -> None:
        """One line of trials.jsonl (a single append: whole lines from several runners)."""
        line = {"trial": trial.name, "status": status, "exit": exit_code, "seconds": round(seconds, 1)}
        line |= {"time": round(time.time(), 3), "command": shlex.join(trial.command)}
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.log, "a") as f:
            f.write(json.dumps(line) + "\n")

    def trial_folders(self) -> list[pathlib.Path]:
        """The trials' run folders in it (those with a config.yml or metrics.jsonl), by name."""
        if not self.path.is_dir():
            return []
        found = (runs.RunFolder(p) for p in self.path.iterdir() if p.is_dir() and not p.name.startswith("."))
        return sorted(f.path for f in found if f.config_file.is_file() or f.metrics_file.is_file())


@contextlib.contextmanager
def claimed(folder: SweepFolder, trial: Trial) -> Iterator[int | None]:
    """The trial's claim (an exclusive flock on .claims/<trial>, the open fd), or None while another
    runner holds it. The trial's process inherits the fd, so the claim lasts while either lives."""
    path = folder.claim_file(trial.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield None
            return
        yield fd
    finally:
        os.close(fd)


def is_running(folder: SweepFolder, name: str) -> bool:
    """Whether a runner (or its trial's process) holds the trial's claim now."""
    path = folder.claim_file(name)
    if not path.is_file():
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def reached_end(trial: Trial) -> bool:
    """Whether the trial's run has a checkpoint at its max_steps (always, without a max_steps)."""
    if trial.max_steps is None:
        return True
    steps = runs.RunFolder(trial.folder).complete_steps()
    return (steps[0] if steps else 0) >= trial.max_steps


def finished(folder: SweepFolder, trial: Trial) -> bool:
    """A runner saw the trial end by itself, and its run is at its end (a larger max_steps goes on)."""
    return folder.records().get(trial.name, {}).get("status") == "finished" and reached_end(trial)


# --- running -------------------------------------------------------------------------------


class Stop:
    """SIGINT or SIGTERM while trials run: passed on to the running trial (train.py saves a checkpoint
    and exits), and no further trial starts. The trial runs in its own process group, so that a Ctrl-C
    in the terminal reaches it once, through the runner."""

    def __init__(self):
        self.signal: int | None = None
        self.child: subprocess.Popen | None = None
        self._old = {}

    def __enter__(self) -> Stop:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)

    def _handle(self, signum, frame) -> None:
        self.signal = signum
        self.forward()

    def forward(self) -> None:
        if self.signal is not None and self.child is not None and self.child.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.child.send_signal(self.signal)

    def run(self, trial: Trial, env: dict[str, str], claim: int) -> int:
        """Run the trial's command to its end; its exit status (negative: killed by that signal)."""
        try:
            self.child = subprocess.Popen(trial.command, env=env, pass_fds=(claim,), process_group=0)
        except OSError as e:
            raise SweepError(
                f"{trial}: cannot run {trial.command[0]!r}: {e.strerror}; run sweep.py from the folder its "
                "command is written for (the repository root)"
            ) from None
        self.forward()  # a signal that came while it started
        try:
            return self.child.wait()
        finally:
            self.child = None


@dataclasses.dataclass
class Outcome:
    """What a runner did: the trials it ran, by how they ended, and whether a signal stopped it."""

    finished: list[str] = dataclasses.field(default_factory=list)
    failed: list[str] = dataclasses.field(default_factory=list)  # "<trial> (exit N)"
    stopped: str | None = None  # the trial a signal stopped, or "" between trials


def trial_env(sweep: Sweep, wandb_mode: str) -> dict[str, str]:
    """The trials' environment: the sweep's id where train.py reads it (runs.LOCAL_SWEEP), and wandb
    in `wandb_mode` (never a wandb sweep: WANDB_SWEEP_ID is left out)."""
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SWEEP_ID"}
    return env | {runs.LOCAL_SWEEP: sweep.id, "WANDB_MODE": wandb_mode}


def run(trials: list[Trial], folder: SweepFolder, env: dict[str, str], count: int | None, say=print) -> Outcome:
    """Run the trials one after another, each not finished and not held by another runner (at most
    `count`); a failed trial is reported and the next one starts; a signal stops the running trial
    (it resumes when the sweep is run again) and the runner."""
    out = Outcome()
    with Stop() as stop:
        for trial in trials:
            if stop.signal is not None or (count is not None and len(out.finished) + len(out.failed) >= count):
                break
            if finished(folder, trial):
                continue
            with claimed(folder, trial) as claim:
                if claim is None:
                    say(f"sweep: {trial}: run by another runner, next")
                    continue
                if finished(folder, trial):  # by the runner that held it until now
                    continue
                say(f"sweep: {trial} in {trial.folder}\n  {shlex.join(trial.command)}")
                start = time.time()
                code = stop.run(trial, env, claim)
                status = _status(trial, code, stop.signal)
                folder.record(trial, status, code, time.time() - start)
            if status == "stopped":
                out.stopped = str(trial)
            elif status == "finished":
                out.finished.append(trial.name)
                say(f"sweep: {trial} finished in {(time.time() - start) / 60:.1f} min")
            else:
                out.failed.append(f"{trial.name} ({status})")
                say(f"sweep: {trial} {status}; its output is above")
        if stop.signal is not None and out.stopped is None:
            out.stopped = ""
    return out


def _status(trial: Trial, code: int, signal_seen: int | None) -> str:
    """How a trial ended: finished, stopped (by this runner's signal), or why it failed."""
    if code == 0 and reached_end(trial) and (signal_seen is None or trial.max_steps is not None):
        return "finished"
    if signal_seen is not None and code in (0, -signal_seen):
        return "stopped"
    if code < 0:
        return f"killed by signal {-code}"
    if code:
        return f"failed with exit {code}"
    steps = runs.RunFolder(trial.folder).complete_steps()
    return f"ended at step {steps[0] if steps else 0} before max_steps {trial.max_steps} (stopped by a signal?)"


# --- ranking ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Ranked:
    """A trial's row in the ranking: the metric's last logged value and its step."""

    trial: str
    value: float | None
    step: int | None
    last_step: int | None
    status: str


def rank(folder: SweepFolder, metric: str | None, goal: str) -> list[Ranked]:
    """Every trial folder of the sweep, best first by the last value of `metric` in its metrics.jsonl
    (lower first when `goal` is minimize); trials without a finite value last, by name."""
    records, rows = folder.records(), []
    for path in folder.trial_folders():
        steps = logger.read_metrics(runs.RunFolder(path).metrics_file).steps
        at = [s for s in sorted(steps) if metric in steps[s]]
        status = "running" if is_running(folder, path.name) else records.get(path.name, {}).get("status", "-")
        value = float(steps[at[-1]][metric]) if at else None
        rows.append(Ranked(path.name, value, at[-1] if at else None, max(steps, default=None), status))
    sign = 1.0 if goal == "minimize" else -1.0

    def key(r: Ranked) -> tuple:
        valid = r.value is not None and math.isfinite(r.value)
        return (not valid, sign * r.value if valid else 0.0, r.trial)

    return sorted(rows, key=key)


def ranking_markdown(sweep: Sweep, rows: list[Ranked]) -> str:
    """The ranking as a markdown table, headed by what it ranks by."""
    metric = sweep.metric or "(no metric in the sweep file)"
    better = "lower" if sweep.goal == "minimize" else "higher"
    head = (
        f"Sweep {sweep.id} ({sweep.path}): trials ranked by {metric}, {better} is better; the last value "
        "in each trial's metrics.jsonl."
    )
    table = [
        [i, r.trial, "-" if r.value is None else f"{r.value:.5g}", _dash(r.step), _dash(r.last_step), r.status]
        for i, r in enumerate(rows, 1)
    ]
    header = ["rank", "trial", metric, "at step", "last step", "status"]
    return head + "\n\n" + media.markdown_table(header, table)


def _dash(value: Any) -> Any:
    return "-" if value is None else value


def write_ranking(folder: SweepFolder, text: str) -> pathlib.Path:
    folder.path.mkdir(parents=True, exist_ok=True)
    media.write_text(folder.ranking, text + "\n")
    return folder.ranking
