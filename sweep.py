"""Run a wandb sweep file without a wandb account: its trials one after another, each in the folder a
wandb sweep would train it in, then rank them by the file's metric.

    .venv/bin/python sweep.py configs/sweep_mmnist.yaml [--count N] [--seed S] [--dry_run] [--rank_only]

Takes the file `wandb sweep` takes (program, method grid or random, metric, parameters, command,
run_cap). Each trial runs the file's command, as wandb's agent builds it, from the current folder,
with wandb off (--wandb_mode to log it), and trains in logdir/<dataset>/sweep-local-<file stem>/<its
values>/. Running the same command again resumes the sweep: finished trials are skipped, a stopped one
resumes from its checkpoint, random draws are the same for the same --seed. Several runners on one
file share its trials, each running one that no other runs. At the end (and with --rank_only) the
trials are ranked by the metric's last value in their metrics.jsonl (ranking.md in the sweep's
folder) and compare.py draws their training curves (compare/ there). Exit status 0 when every trial
this runner ran finished, 1 when one failed, 2 for a bad sweep file; a Ctrl-C stops the running
trial at a checkpoint, and the runner.
"""

from __future__ import annotations

import cli  # light (the standard library), for the line below

if __name__ == "__main__":  # a Ctrl-C while the libraries below load: one line and exit 0
    cli.stop_at_once_on_signal()

import pathlib
import shlex
import subprocess
import sys
from collections.abc import Sequence

import runs
import sweeps
from config import WANDB_MODES
from errors import RunFailure

COMPARE = pathlib.Path(__file__).resolve().parent / "compare.py"


def parse_args(argv: Sequence[str] | None):
    parser = cli.ArgumentParser(prog="sweep.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("file", help="a wandb sweep YAML (configs/sweep_mmnist.yaml)")
    parser.add_argument("--count", type=int, help="run at most N trials (random without run_cap: draw N)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random draws [default: 0]")
    parser.add_argument("--dry_run", action="store_true", help="print each trial's folder and command, run none")
    parser.add_argument("--rank_only", action="store_true", help="rank the trials run so far, run none")
    parser.add_argument(
        "--wandb_mode", choices=WANDB_MODES, default="disabled", help="the trials' wandb [default: disabled]"
    )
    args = parser.parse_args(argv)
    if args.count is not None and args.count < 1:
        parser.error(f"--count got {args.count}; must be >= 1")
    return args


def dry_run(trials: list[sweeps.Trial], folder: sweeps.SweepFolder) -> None:
    for trial in trials:
        state = "finished" if sweeps.finished(folder, trial) else "to run"
        state = "running" if sweeps.is_running(folder, trial.name) else state
        print(f"{trial} [{state}] in {trial.folder}\n  {shlex.join(trial.command)}")


def report(sweep: sweeps.Sweep, folder: sweeps.SweepFolder) -> None:
    """The ranking (printed and written) and compare.py's plots of the trials."""
    rows = sweeps.rank(folder, sweep.metric, sweep.goal)
    if not rows:
        print(f"sweep: no trial in {folder.path} has run yet: nothing to rank")
        return
    text = sweeps.ranking_markdown(sweep, rows)
    print(text)
    written = [str(sweeps.write_ranking(folder, text))]
    trained = [str(p) for p in folder.trial_folders() if runs.RunFolder(p).config_file.is_file()]
    if trained:  # compare.py reads run folders
        out = subprocess.run(
            [sys.executable, str(COMPARE), *trained, "--out", str(folder.comparison)], capture_output=True, text=True
        )
        if out.returncode:
            print(f"sweep: compare.py failed: {(out.stderr.strip().splitlines() or ['?'])[-1]}")
        else:
            written.append(str(folder.comparison))
    print(f"sweep: wrote {', '.join(written)}")


def sweep_and_rank(args) -> None:
    """Run the sweep's trials (unless --dry_run or --rank_only), then rank them."""
    sweep = sweeps.load(args.file)
    for note in sweep.notes:
        print(f"note: {note}")
    trials = sweeps.plan(sweep, args.seed, args.count, sys.executable)
    folder = sweeps.SweepFolder(trials[0].folder.parent)
    if args.dry_run:
        return dry_run(trials, folder)
    outcome = sweeps.Outcome()
    if not args.rank_only:
        print(f"sweep {sweep.id}: {len(trials)} trials ({sweep.method}) in {folder.path}")
        outcome = sweeps.run(trials, folder, sweeps.trial_env(sweep, args.wandb_mode), args.count)
        if outcome.stopped is not None:
            stopped = f"{outcome.stopped} stopped at a checkpoint; " if outcome.stopped else ""
            print(f"sweep: stopped by a signal; {stopped}rerun the same command to resume")
            return
        ran = len(outcome.finished) + len(outcome.failed)
        if ran:
            print(f"sweep: this runner ran {ran} trials: {len(outcome.finished)} finished")
        else:
            print("sweep: nothing to run: every trial has finished or is run by another runner")
    report(sweep, folder)
    if outcome.failed:
        raise RunFailure(
            f"{len(outcome.failed)} of the {len(outcome.failed) + len(outcome.finished)} trials run did not finish: "
            f"{'; '.join(outcome.failed)}; rerun "
            "the command to retry them (a stopped trial resumes from its checkpoint)"
        )


def main(argv: Sequence[str] | None = None) -> None:
    def run():
        args = parse_args(argv)
        try:
            sweep_and_rank(args)
        except OSError as e:  # a full disk or a read-only logdir: one line, exit 2
            raise runs.RunError(runs.fs_message(e, "write the sweep's files")) from None

    cli.main_guard(run)


if __name__ == "__main__":
    main()
