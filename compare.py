"""Compare runs: their final training scalars and evaluation results in one table, and their
per-frame open-loop scores overlaid in one plot per metric.

    python compare.py <run or eval folder> [<run or eval folder> ...] [--out DIR] [--labels a,b,...]

A run folder (logs/<dataset>/<run>/, with config.yml) gives its newest complete evaluation
(eval_step<N>_<time>, largest step, then newest) and the last value of each scalar in its
metrics.jsonl; an evaluation folder gives itself and its run's metrics.jsonl. A run without an
evaluation still gets a row (the training columns). Writes into --out (default
./compare_<time>):

    table.md, table.csv      one row per run: last training step, final losses, the evaluation's
                             step, N test videos, samples, context, SSIM data range, scores
    ssim.png, psnr.png       each run's mean per predicted frame over its test videos, ±1 std
                             over videos shaded, the end of the context dashed;
    ssim_range1.png, lpips.png  the same, when an evaluation has those curves; each also draws the
                             trivial predictors' curves (references.py) as grey reference lines
    training.png             each run's train and validation loss and validation open-loop SSIM and
                             PSNR from its metrics.jsonl, against the step (or --x hours)
    checkpoints.md, .png     the learning curve, when a run has evaluations of several checkpoints
                             made like the one compared (same settings and N): each one's mean per
                             horizon (frames 1-100, ...) against its step, beside the trivial predictors

Runs evaluated with different settings (context frames, SSIM data range, ...) are still
compared, with a note naming the difference. An action-conditioned run evaluated given its actions
and given none (eval.py --eval_actions zero) is two evaluation folders: pass both, and the legend says
which. Reads files only (no model, no checkpoint): numpy and matplotlib, media for the atomic writes,
and tools for the metrics' titles and units (tools imports JAX: about 3 s of start-up).
"""

from __future__ import annotations

import cli  # light (the standard library), for the line below

if __name__ == "__main__":  # a Ctrl-C while the libraries below load: one line and exit 0
    cli.stop_at_once_on_signal()

import argparse
import csv
import dataclasses
import io
import itertools
import json
import math
import pathlib
import time
import zipfile
from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

import logger
import media
import references
import runs
import tools
from errors import UserError

CURVE_METRICS = tuple(tools.METRICS)  # plotted when an evaluation has their curves
REQUIRED_CURVES = ("ssim", "psnr")  # every evaluation has these
CONTEXT_LINES = ("--", "-.", ":")  # one dashed style per distinct context length
SETTINGS_COMPARED = ("dataset", "protocol", "open_loop_ctx", "eval_seq_len", "ssim_data_range", "use_obs")
ACTIONS_LEGEND = {"given": ", given its actions", "zero": ", given no actions"}  # eval_actions, in the legend


class CompareError(UserError):
    """A folder compare.py cannot read, or bad arguments: one line naming the path or flag."""


@dataclasses.dataclass
class RunResult:
    """One compared run: its final training scalars and, when it has one, an evaluation."""

    label: str
    folder: pathlib.Path  # the folder given on the command line
    training: dict[str, float]  # last value of each metrics.jsonl key
    last_step: int | None  # the last training step logged
    eval_dir: pathlib.Path | None = None
    summary: dict[str, Any] | None = None  # the evaluation's metrics.json
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = dataclasses.field(default_factory=dict)  # (mean, std)
    skipped: str | None = None  # which lines of metrics.jsonl did not read (a line cut by a killed run)
    history: dict[int, dict[str, float]] = dataclasses.field(default_factory=dict)  # metrics.jsonl by step
    checkpoints: dict[int, dict[str, Any]] = dataclasses.field(default_factory=dict)  # step: metrics.json (below)

    @property
    def settings(self) -> dict[str, Any]:
        return (self.summary or {}).get("settings", {})


# --- reading folders ---------------------------------------------------------------------------


def final_values(records: dict[int, dict[str, float]]) -> tuple[dict[str, float], int | None]:
    """The last value of each key over the steps, and the last training step (the last step with a
    train/ scalar; evaluations log eval/ scalars at the checkpoint's step)."""
    last: dict[str, float] = {}
    for step in sorted(records):
        last.update({k: v for k, v in records[step].items() if k != "time"})
    trained = [s for s, r in records.items() if any(k.startswith("train/") for k in r)]
    return last, max(trained or records, default=None)


def newest_eval(run: pathlib.Path) -> pathlib.Path | None:
    """The run's complete evaluation of the largest step (then the newest), or None."""
    return (runs.RunFolder(run).evaluations() or [None])[-1]


def _read_summary(folder: pathlib.Path) -> dict[str, Any]:
    path = runs.EvalFolder(folder).summary
    if not path.is_file():
        raise CompareError(f"'{path}' is missing; an evaluation folder holds {path.name} (written by eval.py)")
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise CompareError(f"'{path}' is not readable JSON ({e}); rerun eval.py for that checkpoint") from None
    if not isinstance(summary, dict) or not {"step", "num_examples"} <= summary.keys():
        raise CompareError(f"'{path}' has no 'step' and 'num_examples'; expected eval.py's metrics.json")
    return summary


def _read_curve(path: pathlib.Path) -> np.ndarray:
    """A per-frame curve saved by eval.py (np.savez, key arr_0)."""
    try:
        with np.load(path) as npz:
            curve = np.asarray(npz["arr_0"], np.float64)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
        raise CompareError(f"'{path}' is not an .npz with a per-frame curve under arr_0 ({e})") from None
    if curve.ndim != 1 or not len(curve):
        raise CompareError(f"'{path}' holds shape {curve.shape}; expected one value per predicted frame")
    return curve


def read_curves(folder: pathlib.Path, frames: int | None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{metric: (mean, std)} per predicted frame of an evaluation folder: SSIM and PSNR (required),
    the others when present. `frames`: the number of predicted frames, checked when known."""
    curves = {}
    for metric in CURVE_METRICS:
        paths = [runs.EvalFolder(folder).curve(metric, kind) for kind in ("mean", "stddev")]
        if metric not in REQUIRED_CURVES and not all(p.is_file() for p in paths):
            continue
        for path in paths:
            if not path.is_file():
                raise CompareError(
                    f"'{path}' is missing; an evaluation folder holds <metric>_mean.npz and "
                    f"<metric>_stddev.npz for {' and '.join(REQUIRED_CURVES)}"
                )
        mean, std = map(_read_curve, paths)
        expected = frames or len(mean)
        if len(mean) != expected or len(std) != expected:
            raise CompareError(
                f"'{paths[0]}' and '{paths[1].name}' have {len(mean)} and {len(std)} frames; "
                f"metrics.json's settings predict {expected}"
            )
        curves[metric] = (mean, std)
    return curves


def _predicted_frames(summary: dict[str, Any]) -> int | None:
    s = summary.get("settings", {})
    if isinstance(s.get("eval_seq_len"), int) and isinstance(s.get("open_loop_ctx"), int):
        return s["eval_seq_len"] - s["open_loop_ctx"]
    return None


def load(folder: str | pathlib.Path, label: str | None = None) -> RunResult:
    """A run folder (its newest evaluation) or an evaluation folder (and its run's metrics.jsonl)."""
    path = pathlib.Path(folder)
    expected = "a run folder (with config.yml) or an evaluation folder (eval_step<N>_<time>)"
    if not path.exists():
        raise CompareError(f"'{folder}' does not exist; pass {expected}")
    if runs.EvalFolder.is_incomplete(path):
        raise CompareError(f"'{folder}' is an unfinished evaluation; pass a finished eval_step* folder or its run")
    if runs.EvalFolder.is_one(path):
        run_dir, eval_dir = path.parent, path
    elif runs.RunFolder(path).config_file.is_file():
        run_dir, eval_dir = path, newest_eval(path)
    else:
        raise CompareError(
            f"'{folder}' is neither a run folder (no config.yml) nor an evaluation folder; pass {expected}"
        )
    metrics_file = runs.RunFolder(run_dir).metrics_file
    metrics = logger.read_metrics(metrics_file)
    training, last_step = final_values(metrics.steps)
    result = RunResult(label or run_dir.resolve().name, path, training, last_step, eval_dir)
    result.skipped = metrics.skipped_note(metrics_file)
    result.history = metrics.steps
    if eval_dir is not None:
        result.summary = _read_summary(eval_dir)
        result.curves = read_curves(eval_dir, _predicted_frames(result.summary))
        result.checkpoints = same_protocol_evaluations(run_dir, result.summary)  # for the learning curve
    return result


def _protocol(summary: dict[str, Any]) -> tuple:
    s = summary.get("settings", {})
    return (*(repr(s.get(k)) for k in (*SETTINGS_COMPARED, "actions")), summary.get("num_examples"))


def same_protocol_evaluations(run_dir: pathlib.Path, chosen: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """{checkpoint step: metrics.json} of the run's complete evaluations made like `chosen` (the same
    settings and number of videos), the newest of each step (`chosen` at its own step): one point each
    on the learning curve.
    Evaluations that do not read are left out here (the chosen one was read strictly)."""
    found = {}
    for folder in runs.RunFolder(run_dir).evaluations():
        try:
            summary = _read_summary(folder)
        except CompareError:
            continue
        if _protocol(summary) == _protocol(chosen) and _horizons(summary):
            found[summary["step"]] = summary
    return dict(sorted((found | {chosen["step"]: chosen}).items()))


def default_labels(folders: Sequence[str | pathlib.Path]) -> list[str]:
    """Each folder's run name (an evaluation folder's: its run's); names given twice (two evaluations
    of one run, runs of two datasets) get the folder's parent too, e.g. 'mmnist/run' or 'run/eval_step20_...'."""
    paths = [pathlib.Path(f).resolve() for f in folders]
    names = [(p.parent if runs.EvalFolder.is_one(p) else p).name for p in paths]
    return [f"{p.parent.name}/{p.name}" if names.count(n) > 1 else n for p, n in zip(paths, names)]


# --- the table ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Column:
    """A table column: its header, where its value comes from and how table.md prints it."""

    header: str
    source: str  # "run" (RunResult attribute), "train" (metrics.jsonl), "eval" (metrics.json), "settings"
    key: str
    fmt: str = ""


COLUMNS = (
    Column("run", "run", "label"),
    Column("train step", "run", "last_step"),
    *(Column(k, "train", k, ".2f") for k in ("train/loss", "val/loss", "val/neg_elbo")),
    Column("val/open_loop_ssim", "train", "val/open_loop_ssim", ".4f"),
    Column("val/open_loop_psnr", "train", "val/open_loop_psnr", ".2f"),
    Column("eval step", "eval", "step"),
    Column("N", "eval", "num_examples"),
    Column("samples", "eval", "num_samples"),
    Column("ctx", "settings", "open_loop_ctx"),
    Column("frames", "settings", "eval_seq_len"),
    Column("SSIM range", "settings", "ssim_data_range", "g"),
    *(
        Column(f"{metric}_{kind}", "eval", f"{metric}_{kind}", ".2f" if metric == "psnr" else ".4f")
        for metric in CURVE_METRICS
        for kind in ("mean", "last_frame")
    ),
    Column("fvd", "eval", "fvd", ".1f"),
)
ALWAYS = ("run", "train step", "train/loss", "val/loss")  # shown even when no run has a value


def value(run: RunResult, column: Column) -> Any:
    """The column's value for the run (None: the run has none)."""
    if column.source == "run":
        return getattr(run, column.key)
    source = {"train": run.training, "eval": run.summary or {}, "settings": run.settings}[column.source]
    return source.get(column.key)


def table(results: Sequence[RunResult]) -> tuple[list[str], list[list[Any]]]:
    """(header, one row per run) over the columns that some run has a value for."""
    columns = [c for c in COLUMNS if c.header in ALWAYS or any(value(r, c) is not None for r in results)]
    rows = [[value(r, c) for c in columns] for r in results]
    return [c.header for c in columns], rows


def _cell(v: Any, fmt: str) -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return format(v, fmt) if fmt and isinstance(v, (int, float)) else str(v)


def markdown(results: Sequence[RunResult]) -> str:
    """The table as GitHub markdown (scores rounded for reading; table.csv has them in full)."""
    header, rows = table(results)
    fmts = {c.header: c.fmt for c in COLUMNS}
    return media.markdown_table(header, [[_cell(v, fmts[h]) for h, v in zip(header, row)] for row in rows])


def csv_text(results: Sequence[RunResult]) -> str:
    """The table as CSV: values in full precision, an empty cell where a run has none."""
    header, rows = table(results)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([["" if v is None else v for v in row] for row in rows])
    return out.getvalue()


def differing(results: Sequence[RunResult]) -> dict[str, dict[str, Any]]:
    """The evaluation settings that differ between the runs' evaluations: {key: {run label: value}}."""
    evaluated = [r for r in results if r.summary is not None]
    out = {}
    for key in (*SETTINGS_COMPARED, "num_samples"):
        values = {r.label: (r.summary if key == "num_samples" else r.settings).get(key) for r in evaluated}
        if len({json.dumps(v) for v in values.values()}) > 1:
            out[key] = values
    return out


def differences(results: Sequence[RunResult]) -> list[str]:
    """One line per evaluation setting that differs between the runs' evaluations, naming each run's value."""
    return [
        f"the evaluations differ in {key} ({', '.join(f'{label} {v}' for label, v in values.items())}): "
        "their scores are not directly comparable"
        for key, values in differing(results).items()
    ]


# --- the plots ---------------------------------------------------------------------------------


def legend_label(run: RunResult) -> str:
    """A run's legend entry: its label, the checkpoint step evaluated, N test videos, the number of
    samples each video's best was chosen from, and for an action-conditioned run whether it was given
    the videos' actions or none (eval.py --eval_actions)."""
    s = run.summary or {}
    samples = s.get("num_samples")
    best = f", best of {samples}" if isinstance(samples, int) and samples > 1 else ""
    given = ACTIONS_LEGEND.get(run.settings.get("actions"), "")
    return f"{run.label} (step {s.get('step')}, N={s.get('num_examples')} videos{best}{given})"


def plot_curves(path: pathlib.Path, metric: str, results: Sequence[RunResult]) -> None:
    """Every run's per-frame mean of `metric` with its ±1 std band (edges dotted, so that overlapping
    bands stay apart), against the video frame number; a dashed line where each context ends (one
    per distinct context length). The legend sits below the plot, off the curves."""
    plotted = [r for r in results if metric in r.curves]
    fig = Figure(figsize=(8, 4.2 + 0.2 * len(plotted)), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    colors = {id(r): f"C{i % 10}" for i, r in enumerate(results)}  # a run's colour is the same in every plot
    handles = [_draw_run(ax, run, metric, colors[id(run)]) for run in plotted]
    handles += _draw_references(ax, metric, plotted)
    handles.append(Patch(color="0.5", alpha=0.35, lw=0, label="shaded: ±1 std over videos (its edges dotted)"))
    contexts = sorted({int(r.settings.get("open_loop_ctx", 0)) for r in plotted})
    for ctx, style in zip(contexts, itertools.cycle(CONTEXT_LINES)):
        handles.append(ax.axvline(ctx + 0.5, color="0.3", ls=style, lw=1, label=f"end of context (frame {ctx})"))
    ax.set_xlim(left=contexts[0])  # the context's end in view, at the left
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    name = tools.METRICS[metric].title
    ax.set_title(_plot_title(name, plotted), fontsize=10)
    ax.set_xlabel("video frame")
    ax.set_ylabel(tools.METRICS[metric].axis_label)
    ax.grid(alpha=0.3)
    fig.legend(handles=handles, fontsize=8, loc="outside lower center", ncols=2, frameon=False)
    with media.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")


def _draw_run(ax, run: RunResult, metric: str, color: str):
    """One run's mean curve (returned, for the legend) and its ±1 std band."""
    mean, std = run.curves[metric]
    frames = int(run.settings.get("open_loop_ctx", 0)) + 1 + np.arange(len(mean))
    (line,) = ax.plot(frames, mean, color=color, lw=1.5, label=legend_label(run))
    ax.fill_between(frames, mean - std, mean + std, color=color, alpha=0.15, lw=0)
    for edge in (mean - std, mean + std):
        ax.plot(frames, edge, color=color, lw=0.7, ls=":", alpha=0.8)
    return line


REFERENCE_STYLES = ("-.", ":", (0, (6, 2, 1, 2, 1, 2)))  # per trivial predictor (references.py), in grey


def _draw_references(ax, metric: str, plotted: Sequence[RunResult]) -> list:
    """The trivial predictors' mean curves of the first run whose evaluation scored them (they depend on
    the test videos, not on the model), as labelled grey lines: the floor each run's curve must clear."""
    for run in plotted:
        table = runs.EvalFolder(run.eval_dir).curves_table if run.eval_dir is not None else None
        if table is None or not table.is_file():
            continue
        with table.open() as f:
            rows = list(csv.DictReader(f))
        columns = {name: f"{name}_{metric}_mean" for name in references.PREDICTORS}
        found = {name: col for name, col in columns.items() if rows and col in rows[0]}
        if not found:
            continue
        frames = [int(r["frame"]) for r in rows]
        lines = []
        for (name, col), style in zip(found.items(), itertools.cycle(REFERENCE_STYLES)):
            label = f"reference: {references.title(name)}"
            (line,) = ax.plot(frames, [float(r[col]) for r in rows], color="0.45", lw=1.1, ls=style, label=label)
            lines.append(line)
        return lines
    return []


TRAINING_PANELS = (  # training.png: (title, y label, metrics.jsonl keys drawn, their line styles)
    ("loss (nats per frame)", "loss", ("train/loss", "val/loss"), ("-", "--")),
    ("validation open-loop SSIM", "SSIM", ("val/open_loop_ssim",), ("--",)),
    ("validation open-loop PSNR", "PSNR (dB)", ("val/open_loop_psnr",), ("--",)),
)
X_AXES = {"step": "training step", "hours": "hours since the run's first logged line"}


def plot_training(path: pathlib.Path, results: Sequence[RunResult], x_axis: str = "step") -> None:
    """Each run's training curves from its metrics.jsonl (no wandb needed): train and validation loss,
    validation open-loop SSIM and PSNR, against the step or the wall-clock hours since its first line."""
    fig = Figure(figsize=(12, 4.2), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(TRAINING_PANELS))
    colors = {id(r): f"C{i % 10}" for i, r in enumerate(results)}
    for ax, (title, ylabel, keys, styles) in zip(axes, TRAINING_PANELS):
        for run in results:
            start = min((v["time"] for v in run.history.values() if "time" in v), default=0.0)
            for key, style in zip(keys, styles):
                points = [(s, v[key], v.get("time", start)) for s, v in sorted(run.history.items()) if key in v]
                if points:
                    xs = [p[0] if x_axis == "step" else (p[2] - start) / 3600 for p in points]
                    label = f"{run.label}: {key}" if len(keys) > 1 else run.label
                    marker = "o" if len(points) == 1 else None  # a line of one point draws nothing
                    ax.plot(
                        xs, [p[1] for p in points], color=colors[id(run)], ls=style, lw=1.3, marker=marker, label=label
                    )
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(X_AXES[x_axis])
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    with media.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")


def _horizons(summary: dict[str, Any]) -> dict[tuple[str, str], float]:
    """{(metric, frames): mean} of an evaluation's per-horizon rows (metrics.json 'horizons')."""
    rows = summary.get("horizons")
    rows = rows if isinstance(rows, list) else []
    return {
        (h["metric"], h["frames"]): h["mean"]
        for h in rows
        if isinstance(h, dict) and {"metric", "frames", "mean"} <= h.keys()
    }


def _reference_horizons(run: RunResult) -> dict[str, dict[tuple[str, str], float]]:
    """{predictor title: {(metric, frames): mean}} of the run's newest evaluation (empty if it scored none)."""
    refs = (run.summary or {}).get("references") or {}
    return {r.get("title", name): _horizons(r) for name, r in refs.items() if isinstance(r, dict)}


def _learning_curve_keys(results: Sequence[RunResult]) -> tuple[list[tuple[str, str]], dict]:
    """The (metric, frames) horizons of every run's checkpoint evaluations, in order of appearance, and the
    trivial predictors' horizons from the first run that scored them (they depend only on the test videos)."""
    keys = list(dict.fromkeys(k for r in results for s in r.checkpoints.values() for k in _horizons(s)))
    return keys, next((x for r in results if (x := _reference_horizons(r))), {})


def learning_curve_table(results: Sequence[RunResult]) -> str:
    """checkpoints.md: each run's evaluations by checkpoint step, one column per metric and horizon,
    then the trivial predictors' rows (from the first run that scored them: they depend only on the
    test videos); a model value above every reference (below, for lower-is-better metrics) is bold."""
    columns, refs = _learning_curve_keys(results)

    def beats(key: tuple[str, str], v: float) -> bool:
        others = [h[key] for h in refs.values() if key in h]
        higher = tools.METRICS[key[0]].higher_is_better if key[0] in tools.METRICS else True
        return bool(others) and all(v > o if higher else v < o for o in others)

    head = "| run | checkpoint step | " + " | ".join(f"{m} {f}" for m, f in columns) + " |"
    lines = [head, "|---" * (len(columns) + 2) + "|"]
    for r in results:
        for step, summary in r.checkpoints.items():
            h = _horizons(summary)
            cells = [("**{:.4f}**" if beats(k, h[k]) else "{:.4f}").format(h[k]) if k in h else "" for k in columns]
            lines.append(f"| {r.label} | {step} | " + " | ".join(cells) + " |")
    for title, h in refs.items():
        lines.append(f"| reference: {title} | | " + " | ".join(f"{h[k]:.4f}" if k in h else "" for k in columns) + " |")
    return "\n".join(lines) + "\n\nBold: above every reference (below, for a lower-is-better metric).\n"


def plot_learning_curve(path: pathlib.Path, results: Sequence[RunResult]) -> None:
    """checkpoints.png: each run's mean score per horizon against the checkpoint step it evaluated, one
    panel per metric (rows) and horizon (columns), the trivial predictors as labelled grey lines."""
    keys, refs = _learning_curve_keys(results)
    metrics, horizons = list(dict.fromkeys(m for m, _ in keys)), list(dict.fromkeys(f for _, f in keys))
    fig = Figure(figsize=(3.2 * len(horizons) + 1, 2.8 * len(metrics) + 0.8), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    axes = np.asarray(fig.subplots(len(metrics), len(horizons), squeeze=False))
    colors = {id(r): f"C{i % 10}" for i, r in enumerate(results)}
    for (i, metric), (j, frames) in itertools.product(enumerate(metrics), enumerate(horizons)):
        ax = axes[i, j]
        for run in results:
            points = [(step, _horizons(s).get((metric, frames))) for step, s in run.checkpoints.items()]
            points = [(x, y) for x, y in points if y is not None]
            if points:
                ax.plot(*zip(*points), color=colors[id(run)], marker="o", ms=3, lw=1.3, label=run.label)
        for (title, h), style in zip(refs.items(), itertools.cycle(REFERENCE_STYLES)):
            if (metric, frames) in h:
                ax.axhline(h[(metric, frames)], color="0.45", lw=1.1, ls=style, label=f"reference: {title}")
        name = tools.METRICS[metric].axis_label if metric in tools.METRICS else metric
        ax.set_title(f"{name}, predicted frames {frames}", fontsize=9)
        ax.set_xlabel("checkpoint step")
        ax.grid(alpha=0.3)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=8, loc="outside lower center", ncols=3, frameon=False)
    with media.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")


def _plot_title(name: str, plotted: Sequence[RunResult]) -> str:
    """What a curve is: the mean over test videos of one sample per video, or of each video's best."""
    samples = {(r.summary or {}).get("num_samples") for r in plotted}
    which = "one sample per video" if samples == {1} else "each video's best sample"
    differ = differing(plotted)
    note = f"\nthe evaluations differ in {', '.join(differ)} (table.md)" if differ else ""
    return f"{name} per predicted frame: mean over test videos of {which}{note}"


# --- the command -------------------------------------------------------------------------------


def compare(
    folders: Sequence[str | pathlib.Path],
    out: str | pathlib.Path,
    labels: Sequence[str] | None = None,
    x_axis: str = "step",
):
    """Reads the folders, writes table.md, table.csv, a plot per evaluation metric and the training
    curves (training.png, against `x_axis`: step or hours) into `out`; returns the runs read and the
    paths written."""
    labels = list(labels) if labels else default_labels(folders)
    if len(labels) != len(folders) or not all(labels):
        raise CompareError(
            f"--labels got {len(labels)} labels for {len(folders)} folders; give one non-empty name per folder"
        )
    results = [load(f, label) for f, label in zip(folders, labels)]
    out = pathlib.Path(out)
    notes = differences(results)
    try:
        out.mkdir(parents=True, exist_ok=True)
        written = [out / "table.md", out / "table.csv"]
        media.write_text(written[0], markdown(results) + "\n" + "".join(f"\nNote: {n}.\n" for n in notes))
        media.write_text(written[1], csv_text(results))
        for metric in CURVE_METRICS:
            if any(metric in r.curves for r in results):
                written.append(out / f"{metric}.png")
                plot_curves(written[-1], metric, results)
        if any(r.history for r in results):
            written.append(out / "training.png")
            plot_training(written[-1], results, x_axis)
        if any(len(r.checkpoints) > 1 for r in results):  # a run evaluated at several checkpoints
            written += [out / "checkpoints.md", out / "checkpoints.png"]
            media.write_text(written[-2], learning_curve_table(results))
            plot_learning_curve(written[-1], results)
    except OSError as e:
        raise CompareError(f"cannot write the comparison into '{out}': {e.strerror or e}") from None
    return results, written


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = _Parser(prog="compare.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", help="run folders (logs/<dataset>/<run>) or evaluation folders")
    parser.add_argument("--out", help="folder for table.md, table.csv and the plots (default: ./compare_<time>)")
    parser.add_argument("--labels", help="comma-separated names for the runs, one per folder (default: run names)")
    parser.add_argument("--x", choices=sorted(X_AXES), default="step", help="training.png's x axis")
    return parser.parse_args(argv)


class _Parser(argparse.ArgumentParser):
    """argparse whose usage errors are a UserError: one line, exit code 2 (cli.main_guard)."""

    def error(self, message: str):
        raise CompareError(f"{message}; usage: python compare.py <run or eval folder> [...] [--out DIR] [--labels a,b]")


def main(argv: Sequence[str] | None = None) -> None:
    def run():
        args = parse_args(argv)
        labels = [s.strip() for s in args.labels.split(",")] if args.labels else None
        out = args.out or f"compare_{time.strftime('%Y%m%d-%H%M%S')}"
        results, written = compare(args.folders, out, labels, args.x)
        print(markdown(results))
        for note in differences(results) + [r.skipped for r in results if r.skipped]:
            print(f"note: {note}")
        for r in results:
            print(f"{r.label}: {r.eval_dir or 'no evaluation'}")
        print("wrote " + ", ".join(str(p) for p in written))

    cli.main_guard(run)


if __name__ == "__main__":
    main()
