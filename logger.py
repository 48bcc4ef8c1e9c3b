"""One logger with outputs: what a run says (lines on the terminal, under a progress bar when one is
shown) and the values it logs (metrics.jsonl in the run folder, and its wandb run).

    log = Logger(Terminal(), [JSONLOutput(folder.metrics_file), WandbOutput(wandb_run)])
    bar = log.progress(True, total, "step")
    log.write({"train/loss": 3830.6}, step)   # to every output
    log.print("step 25: ...")                  # on its own line, the bar drawn again below it
    bar.close()

Training and evaluation log through it alike; an evaluation adds its scalars to its run's log
(training_run_log).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import pathlib
import sys
import time
from collections.abc import Iterator
from typing import Any

from config import WANDB_MODES, Config
from runs import RunError, RunFolder, RunLock


class Terminal:
    """Lines on stdout (process 0's: `enabled`). While a progress bar is shown, a line is written
    through it: the bar is cleared, the line printed, the bar drawn again below, so that no line
    lands on the bar's line."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.bar = None

    def print(self, text: str) -> None:
        if not self.enabled:
            return
        if self.bar is not None and not self.bar.disable:  # shown, and not closed yet
            self.bar.write(text, file=sys.stdout)
        else:
            print(text, flush=True)

    def progress(self, show: bool, total: int, unit: str, desc: str | None = None, initial: int = 0):
        """A tqdm bar on stdout, or None when not `show`n or not enabled; lines go through it until it
        is closed."""
        if not (show and self.enabled):
            return None
        from tqdm import tqdm

        self.bar = tqdm(total=total, initial=initial, unit=unit, desc=desc, dynamic_ncols=True, file=sys.stdout)
        return self.bar


class JSONLOutput:
    """A run's scalars as JSON lines, {"step": N, "time": t, "<prefix>/<name>": value, ...}, appended
    as they are logged, so a run's curves are readable without wandb. A resumed run appends again
    from its checkpoint: for a step logged twice, the later line holds the values of the run that
    went on. A last line cut by a killed process is ended when the file is opened by the folder's
    writer (`mend`), so that the lines after it read; read_metrics reports it."""

    def __init__(self, path: pathlib.Path, mend: bool = True):
        self.path = path
        if mend:
            end_cut_line(path)

    @property
    def where(self) -> str:
        return str(self.path)

    def write(self, values: dict[str, Any], step: int) -> None:
        numbers = {k: float(v) for k, v in values.items() if isinstance(v, (int, float)) or getattr(v, "ndim", 1) == 0}
        if numbers:
            line = json.dumps({"step": int(step), "time": round(time.time(), 3), **numbers})
            with open(self.path, "a") as f:
                f.write(line + "\n")


def end_cut_line(path: pathlib.Path) -> None:
    """End the file's last line when it has no newline (a writer killed mid-line), so that the next
    line starts on its own; the cut line stays, unreadable, where it was."""
    if not path.is_file() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as f:
        f.seek(-1, os.SEEK_END)
        if f.read(1) != b"\n":
            f.write(b"\n")


@dataclasses.dataclass
class LoggedMetrics:
    """metrics.jsonl read back: {step: {key: value}}, and the numbers (from 1) of the lines skipped."""

    steps: dict[int, dict[str, float]]
    skipped: list[int]

    def skipped_note(self, path: pathlib.Path) -> str | None:
        """'skipped 1 unreadable line of <path> (line 31; a line cut by a stopped run)', or None."""
        if not self.skipped:
            return None
        where = ", ".join(map(str, self.skipped[:5])) + (", ..." if len(self.skipped) > 5 else "")
        s = "s" if len(self.skipped) > 1 else ""
        return f"skipped {len(self.skipped)} unreadable line{s} of {path} (line{s} {where}; cut by a stopped run?)"


def read_metrics(path: pathlib.Path) -> LoggedMetrics:
    """metrics.jsonl as {step: {key: value}}, later lines for a step overriding earlier ones; lines
    that do not read (a line cut by a killed process) are skipped and counted."""
    out, skipped = {}, []
    if path.is_file():
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            try:
                record = json.loads(line)
                step = int(record.pop("step"))
                if "time" in record and all(k.startswith("eval/") for k in record if k != "time"):
                    record["eval/time"] = record.pop("time")  # an evaluation's line: training's time stays
                out.setdefault(step, {}).update(record)
            except (ValueError, KeyError, TypeError, AttributeError):
                skipped.append(number)
    return LoggedMetrics(out, skipped)


def resolve_wandb_mode(config: Config) -> Config:
    """The wandb mode: the key, else $WANDB_MODE, else online with an API key and offline without."""
    if config.wandb_mode is not None:
        return config
    mode = os.environ.get("WANDB_MODE")
    if mode not in WANDB_MODES:
        has_key = bool(os.environ.get("WANDB_API_KEY")) or (pathlib.Path.home() / ".netrc").exists()
        mode = "online" if has_key else "offline"
    return dataclasses.replace(config, wandb_mode=mode)


def open_wandb(config: Config, folder: RunFolder, run_id: str | None = None, record_config: bool = True):
    """The run folder's wandb run, never prompting: resumed when `run_id` names an earlier one, named
    after the folder, grouped by its sweep (or else its dataset), its files kept in the folder.
    `record_config`: set the run's config to `config` (training; an evaluation leaves it)."""
    import wandb

    config = resolve_wandb_mode(config)
    folder.path.mkdir(parents=True, exist_ok=True)
    sweep, _, name = (config.run_name or folder.path.name).rpartition("/")
    return wandb.init(
        project=config.wandb_project,
        mode=config.wandb_mode,
        dir=folder.path,
        name=name,
        group=sweep or config.dataset,
        config=config.to_dict() if record_config else None,
        id=run_id,
        resume="allow" if run_id else None,
        settings=wandb.Settings(silent=True),
    )


class WandbOutput:
    """Values to a wandb run (open_wandb), against the run's step, or against `step_metric` (a key
    logged beside them, for values of another process such as an evaluation's)."""

    def __init__(self, run, step_metric: str | None = None):
        self.run, self.step_metric = run, step_metric
        if step_metric is not None:
            run.define_metric(f"{step_metric.partition('/')[0]}/*", step_metric=step_metric)

    @property
    def where(self) -> str:
        return f"wandb run {self.run.id}"

    def write(self, values: dict[str, Any], step: int) -> None:
        """Scalars as they are; a path (a GIF written in the run folder) as a video."""
        import wandb

        values = {k: wandb.Video(str(v), format="gif") if isinstance(v, pathlib.Path) else v for k, v in values.items()}
        if self.step_metric is None:
            self.run.log(values, step=step)
        else:
            self.run.log({**values, self.step_metric: step})


class Logger:
    """Lines to the terminal; values to every output (write(values, step))."""

    def __init__(self, terminal: Terminal | None = None, outputs: list | None = None):
        self.terminal = terminal or Terminal(enabled=False)
        self.outputs = list(outputs or [])

    def print(self, text: str) -> None:
        self.terminal.print(text)

    def progress(self, show: bool, total: int, unit: str, desc: str | None = None, initial: int = 0):
        """A progress bar (Terminal.progress): close it when done; lines go through it until then."""
        return self.terminal.progress(show, total, unit, desc, initial)

    def write(self, values: dict[str, Any], step: int) -> None:
        for output in self.outputs:
            output.write(values, step)

    @property
    def where(self) -> str:
        return " and ".join(output.where for output in self.outputs)


@contextlib.contextmanager
def training_run_log(run: RunFolder, config: Config, step_metric: str) -> Iterator[Logger]:
    """A logger into a run's own log for another process (an evaluation): its metrics.jsonl, and its
    wandb run (values against `step_metric`) unless wandb is off. While training holds the folder,
    metrics.jsonl only (two writers to one wandb run), and its last line is left to training."""
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(RunLock(run.path))
            owner = True
        except RunError:
            owner = False
        outputs: list = [JSONLOutput(run.metrics_file, mend=owner)]
        if owner and resolve_wandb_mode(config).wandb_mode != "disabled" and run.wandb_id_file.exists():
            wandb_run = open_wandb(config, run, run.wandb_id_file.read_text().strip(), record_config=False)
            stack.callback(wandb_run.finish)
            outputs.append(WandbOutput(wandb_run, step_metric))
        yield Logger(outputs=outputs)
