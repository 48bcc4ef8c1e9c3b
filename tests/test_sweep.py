"""The local sweep runner (sweep.py, sweeps.py): a wandb sweep file's trials, their commands and folders,
resuming, several runners, failures, signals, the ranking and one-line errors. The trials are a fake
train.py (a few lines of Python that name their folder as train.py does and log a metric), except one
real train.py trial that checks the folder train.py picks is the runner's."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml
from conftest import ROOT, tiny_args

import sweeps

FAKE_TRAIN = """
import dataclasses, json, os, signal, sys, time
sys.path.insert(0, {root!r})
import config as cfg_lib
import runs

argv = sys.argv[1:]
c = cfg_lib.parse(argv)
c = runs.name_trial(dataclasses.replace(c, run_name=c.run_name or cfg_lib.trial_name(argv)))  # as train.py
folder = runs.run_dir(c)
folder.mkdir(parents=True, exist_ok=True)
(folder / "config.yml").write_text(c.to_yaml())
stop = []
signal.signal(signal.SIGINT, lambda *a: stop.append(1))
event = dict(trial=folder.name, runner=os.getppid(), sweep=os.environ.get("CWVAE_SWEEP_ID"))
event.update(wandb=os.environ.get("WANDB_MODE"), start=time.time())
with open(os.environ["FAKE_EVENTS"], "a") as f:
    f.write(json.dumps(event) + "\\n")
while time.time() < event["start"] + float(os.environ.get("FAKE_SLEEP", "0")) and not stop:
    time.sleep(0.02)
if stop:
    sys.exit(0)  # as train.py: a signal stops it at a checkpoint, exit 0
if str(c.beta) == os.environ.get("FAKE_FAIL_BETA"):
    sys.exit("error: fake failure")
with open(folder / "metrics.jsonl", "a") as f:
    f.write(json.dumps(dict(step=c.max_steps, time=time.time(), **{{"val/neg_elbo": 10 * c.beta}})) + "\\n")
(folder / "checkpoints" / str(c.max_steps)).mkdir(parents=True, exist_ok=True)
with open(os.environ["FAKE_EVENTS"], "a") as f:
    f.write(json.dumps(dict(trial=folder.name, end=time.time())) + "\\n")
"""

# compare.py starts JAX (seconds): the runners here but one run this instead
FAKE_COMPARE = "import pathlib, sys; pathlib.Path(sys.argv[sys.argv.index('--out') + 1]).mkdir(exist_ok=True)"


@pytest.fixture
def fake(tmp_path, monkeypatch):
    """A sweep file over beta whose trials run the fake train.py; returns (write(**spec) -> path, events)."""
    (tmp_path / "fake_train.py").write_text(FAKE_TRAIN.format(root=str(ROOT)))
    (tmp_path / "fake_compare.py").write_text(FAKE_COMPARE)
    events = tmp_path / "events.jsonl"
    monkeypatch.setenv("FAKE_EVENTS", str(events))

    def write(name="fake", **spec):
        command = [sys.executable, "${program}", "--config", str(ROOT / "configs" / "tiny.yml")]
        spec = {
            "program": str(tmp_path / "fake_train.py"),
            "method": "grid",
            "metric": {"name": "val/neg_elbo", "goal": "minimize"},
            "parameters": {"beta": {"values": [1.0, 2.0, 0.5]}},
            "command": [*command, "--logdir", str(tmp_path / "logs"), "${args}"],
        } | spec
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(spec, sort_keys=False))  # the order as written
        return path

    return write, events


def read_events(path):
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def runner(sweep_file, *args, compare=True, **popen):
    """sweep.py as a process; with `compare` False its compare.py is the fake one beside the sweep file."""
    if compare:
        argv = [sys.executable, str(ROOT / "sweep.py")]
    else:
        fake = sweep_file.parent / "fake_compare.py"
        code = f"import pathlib, sys; import sweep; sweep.COMPARE = pathlib.Path({str(fake)!r}); sweep.main()"
        argv = [sys.executable, "-c", code]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    kw = {"capture_output": True, "text": True} if not popen else {"stdout": subprocess.PIPE, "text": True}
    call = subprocess.Popen if popen else subprocess.run
    return call([*argv, str(sweep_file), *args], cwd=ROOT, env=env, **kw)


def sweep_folder(tmp_path, name="fake"):
    return sweeps.SweepFolder(tmp_path / "logs" / "mmnist" / f"sweep-local-{name}")


def test_grid_is_every_combination_in_wandbs_order(fake):
    write, _ = fake
    params = {"b": {"values": [1, 2]}, "a": {"values": ["x", "y"]}, "c": {"value": 5}, "d": {"min": 1, "max": 2}}
    sweep = sweeps.load(write(parameters=params))
    got = [tuple(v.values()) for v in sweeps.draws(sweep, seed=0)]
    # wandb's grid: the parameters in name order, the last one varying fastest
    assert got == [(a, b, 5, d) for a in "xy" for b in (1, 2) for d in (1, 2)]
    assert list(sweeps.draws(sweep, seed=0)[0]) == ["a", "b", "c", "d"]
    capped = sweeps.load(write(parameters=params, run_cap=3))
    assert [tuple(v.values()) for v in sweeps.draws(capped, seed=0)] == got[:3]
    q = sweeps.load(write(parameters={"q": {"distribution": "q_uniform", "min": 0, "max": 1, "q": 0.25}}))
    assert [v["q"] for v in sweeps.draws(q, seed=0)] == [0.0, 0.25, 0.5, 0.75]  # wandb's np.arange: max left out


def test_random_draws_are_seeded_and_within_their_distributions(fake):
    write, _ = fake
    params = {
        "lr": {"distribution": "log_uniform_values", "min": 1e-5, "max": 1e-1},
        "beta": {"min": 0.5, "max": 2.0},  # floats: uniform
        "levels": {"min": 1, "max": 3},  # ints: int_uniform
        "free_nats": {"distribution": "q_uniform", "min": 0, "max": 3, "q": 0.5},
        "batch_size": {"values": [4, 8, 16], "probabilities": [0.0, 1.0, 0.0]},
    }
    sweep = sweeps.load(write(method="random", parameters=params))
    a, b, other = (sweeps.draws(sweep, seed, count=400) for seed in (0, 0, 1))
    assert a == b and a != other and len(a) == 400
    lr, beta, levels, nats = (np.array([v[k] for v in a]) for k in ("lr", "beta", "levels", "free_nats"))
    assert lr.min() >= 1e-5 and lr.max() <= 1e-1 and 0.4 < np.mean(lr < 1e-3) < 0.6  # uniform in log: half below
    assert beta.min() >= 0.5 and beta.max() <= 2.0 and 0.4 < np.mean(beta < 1.25) < 0.6
    assert set(levels) == {1, 2, 3} and all(isinstance(v["levels"], int) for v in a)
    assert set(nats) <= {0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0} and len(set(nats)) == 7
    assert {v["batch_size"] for v in a} == {8}  # the only value with a probability
    capped = sweeps.load(write(method="random", parameters=params, run_cap=5))
    assert sweeps.draws(capped, seed=0, count=100) == a[:5]  # run_cap draws; --count only bounds a runner


def test_each_trial_runs_the_command_wandbs_agent_builds_in_the_folder_train_py_names(fake, monkeypatch):
    from wandb.sdk.launch.sweeps.utils import create_sweep_command_args

    monkeypatch.chdir(ROOT)
    trials = sweeps.plan(sweeps.load(ROOT / "configs" / "sweep_mmnist.yaml"), 0, None, "python")
    assert len(trials) == 6 and trials[0].values == {"beta": 0.5, "free_nats": None, "max_steps": 2000}
    args = create_sweep_command_args({"args": {k: {"value": v} for k, v in trials[0].values.items()}})["args"]
    assert trials[0].command == [".venv/bin/python", "train.py", "--config", "configs/mmnist.yml", *args]
    assert str(trials[0].folder) == "logs/mmnist/sweep-local-sweep_mmnist/beta0.5_free_natsNone"  # max_steps: no
    assert trials[-1].max_steps == 2000 and len({t.folder for t in trials}) == 6
    write, _ = fake
    macros = ["${env}", "${interpreter}", "${program}", "--config", "configs/mmnist.yml", "${args_no_equals}"]
    sweep = sweeps.load(write(name="levels", parameters={"levels": {"values": [3, 1]}}, command=macros))
    trials = sweeps.plan(sweep, 0, None, "/venv/python")
    start = ["/usr/bin/env", "/venv/python", sweep.program, "--config", "configs/mmnist.yml"]
    assert [t.command for t in trials] == [[*start, "--levels", "3"], [*start, "--levels", "1"]]
    assert [str(t.folder) for t in trials] == [f"logs/mmnist/sweep-local-levels/levels{k}" for k in (3, 1)]


def test_a_sweep_runs_every_trial_reports_a_failure_and_a_rerun_skips_the_finished(fake, tmp_path, monkeypatch):
    write, events = fake
    path = write()
    monkeypatch.setenv("FAKE_FAIL_BETA", "2.0")
    out = runner(path)
    assert out.returncode == 1, out.stderr
    assert out.stderr.strip().splitlines() == [
        "error: fake failure",  # the trial's own line, shown as it printed it
        "error: 1 of the 3 trials run did not finish: beta2.0 (failed with exit 1); rerun the command to retry them "
        "(a stopped trial resumes from its checkpoint)",
    ]
    assert "sweep: trial 2/3 beta2.0 failed with exit 1; its output is above" in out.stdout
    started = [e for e in read_events(events) if "start" in e]
    assert [e["trial"] for e in started] == ["beta1.0", "beta2.0", "beta0.5"]  # one after another, all of them
    assert {e["sweep"] for e in started} == {"local-fake"} and {e["wandb"] for e in started} == {"disabled"}
    folder = sweep_folder(tmp_path)
    ranking = folder.ranking.read_text()
    rows = [line.split(" | ")[1:4] for line in ranking.splitlines() if line.startswith("| ") and "rank" not in line]
    assert rows == [["beta0.5", "5", "20"], ["beta1.0", "10", "20"], ["beta2.0", "-", "-"]], ranking
    assert (folder.comparison / "training.png").is_file() and "beta0.5" in (folder.comparison / "table.md").read_text()

    monkeypatch.delenv("FAKE_FAIL_BETA")
    again = runner(path, compare=False)
    assert again.returncode == 0, again.stderr
    assert [e["trial"] for e in read_events(events) if "start" in e][3:] == ["beta2.0"]  # the finished are skipped
    dry = runner(path, "--dry_run", compare=False)
    assert dry.stdout.count("[finished] in ") == 3 and f"{folder.path / 'beta0.5'}\n  {sys.executable}" in dry.stdout
    assert len(read_events(events)) == 7  # a dry run runs nothing


def test_two_runners_run_the_trials_in_parallel_each_trial_once(fake, monkeypatch):
    write, events = fake
    path = write(parameters={"beta": {"values": [1.0, 2.0]}})
    monkeypatch.setenv("FAKE_SLEEP", "3")
    first, second = (runner(path, compare=False, popen=True) for _ in range(2))
    assert first.wait(60) == 0 and second.wait(60) == 0
    started = {e["trial"]: e for e in read_events(events) if "start" in e}
    ended = {e["trial"]: e["end"] for e in read_events(events) if "end" in e}
    assert sorted(started) == ["beta1.0", "beta2.0"] and len(read_events(events)) == 4  # each trial ran once
    assert {e["runner"] for e in started.values()} == {first.pid, second.pid}
    assert max(e["start"] for e in started.values()) < min(ended.values())  # at the same time


def test_a_signal_stops_the_trial_and_the_runner_and_a_rerun_resumes(fake, tmp_path, monkeypatch):
    write, events = fake
    path = write(parameters={"beta": {"values": [1.0, 2.0]}})
    monkeypatch.setenv("FAKE_SLEEP", "60")
    proc = runner(path, compare=False, popen=True)
    deadline = time.time() + 30
    while not read_events(events) and time.time() < deadline:
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)  # to the runner only: it passes it on to the trial
    assert proc.wait(20) == 0
    assert "sweep: stopped by a signal; trial 1/2 beta1.0 stopped at a checkpoint; rerun" in proc.stdout.read()
    assert [e["trial"] for e in read_events(events)] == ["beta1.0"]  # stopped, and the next one never started
    assert sweep_folder(tmp_path).records()["beta1.0"]["status"] == "stopped"
    monkeypatch.setenv("FAKE_SLEEP", "0")
    assert runner(path, compare=False).returncode == 0
    assert [e["trial"] for e in read_events(events) if "start" in e] == ["beta1.0", "beta1.0", "beta2.0"]


def test_the_ranking_follows_the_goal(fake, tmp_path):
    write, _ = fake
    folder = sweep_folder(tmp_path)
    for name, value in (("a", 3.0), ("b", 1.0), ("c", float("nan")), ("d", 2.0)):
        (folder.path / name).mkdir(parents=True)
        (folder.path / name / "metrics.jsonl").write_text(json.dumps({"step": 5, "val/neg_elbo": value}) + "\n")
    (folder.path / "e").mkdir()  # no metrics.jsonl nor config.yml: not a trial
    assert [r.trial for r in sweeps.rank(folder, "val/neg_elbo", "minimize")] == ["b", "d", "a", "c"]
    assert [r.trial for r in sweeps.rank(folder, "val/neg_elbo", "maximize")] == ["a", "d", "b", "c"]


BAD_FILES = [
    ("missing", None, "sweep file '{path}' does not exist; pass a wandb sweep YAML"),
    ("yaml", "method: [grid", "sweep file '{path}' is not valid YAML: "),
    ("bayes", {"method": "bayes"}, "method 'bayes' is not run locally (wandb's server chooses its trials: run it"),
    ("key", {"metrics": 1}, "unknown key 'metrics'; valid: program, method, metric"),
    ("param", {"parameters": {"beta": {"mean": 1}}}, "parameter 'beta' has no value, values or min and max"),
    ("dist", {"parameters": {"lr": {"distribution": "beta", "min": 0, "max": 1}}}, "distribution 'beta' is not"),
    ("grid", {"parameters": {"lr": {"min": 0.1, "max": 1.0}}}, "parameter 'lr' is uniform; a grid takes"),
    ("none", {"run_cap": 0}, "has no trials"),
    ("random", {"method": "random"}, "random draws without end; set run_cap in it or pass --count N"),
    ("macro", {"command": ["${program}", "${args_dict}"]}, "command has ${args_dict}; valid: ${env}"),
]


@pytest.mark.parametrize("case,content,message", BAD_FILES, ids=[c[0] for c in BAD_FILES])
def test_a_bad_sweep_file_is_one_error_naming_the_file_and_key(fake, tmp_path, case, content, message):
    write, _ = fake
    path = tmp_path / "missing.yaml"
    if isinstance(content, str):
        path.write_text(content)
    elif content is not None:
        path = write(**content)
    with pytest.raises(sweeps.SweepError) as e:
        sweeps.plan(sweeps.load(path), 0, None, sys.executable)
    assert message.replace("{path}", str(path)) in str(e.value) and "\n" not in str(e.value)


def test_a_key_train_py_does_not_know_is_train_py_s_line_before_any_trial_runs(fake):
    write, events = fake
    out = runner(write(parameters={"levles": {"values": [1, 3]}}), compare=False)
    assert out.returncode == 2 and not read_events(events)
    assert out.stderr == (
        f"error: sweep file '{out.args[-1]}', trial 1 (levles=1): command line: unknown key '--levles' "
        "(did you mean 'levels'?); see --help for valid keys\n"
    )


def test_train_py_trains_a_local_sweeps_trial_in_the_folder_the_runner_names(tmp_path, monkeypatch):
    """train.py with the runner's environment (the local sweep's id) trains a trial's command line in
    the folder the runner named for it, and wandb knows of no wandb sweep."""
    import runs
    import train

    argv = tiny_args(tmp_path, "--beta=0.5", max_steps=0)  # max_steps 0: the folder and its config, no step
    folder, _ = sweeps.trial_folder(argv, "local-x")
    monkeypatch.setenv(runs.LOCAL_SWEEP, "local-x")
    monkeypatch.delenv("WANDB_SWEEP_ID", raising=False)
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        train.main(argv)  # as the trial's process runs it
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    assert folder == tmp_path / "logs" / "mmnist" / "sweep-local-x" / "beta0.5_seed0"
    assert (folder / "config.yml").is_file() and runs.in_sweep() and not runs.in_wandb_sweep()
