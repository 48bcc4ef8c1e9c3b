"""Measure this code on one accelerator within a wall-clock budget, as one table (run by accelerator_check.sh).

    python scripts/accelerator_check.py [--out accelerator_check.md] [--budget 480] [--steps 10]
    python scripts/accelerator_check.py --tiny --out /tmp/check.md    # CPU, tiny.yml's sizes: the tests

Measures, most telling first, while the budget lasts: the train step of the paper's configs (mmnist,
minerl, mazes) at their config batch sizes (compile time, step time, frames/s, peak device memory), the
mmnist open-loop rollout of 36 + 964 frames, a 50-step mmnist training run (`train.py`, its loss curve)
and a short evaluation of it (`eval.py`, a few videos). The timing is the benchmarks' (`benchmarks.train_step`,
`benchmarks.rollout`); each of those runs in its own process, so that the device's peak memory is that
measurement's and a failure or a hang costs one row. A measurement starts only while the budget has
time left, and is stopped when the budget runs out; the table is written with what was measured.
The table also turns the MineRL step into hours for the paper's 600 epochs: the figure to beat is 6 h
on one TPU v3 (the earlier JAX port's), a step of 0.375 s at batch 50.

--tiny checks the code paths, not the speed: tiny.yml's model sizes, one process for the benchmarks' parts,
the training run beside them, XLA:CPU compiling without LLVM's optimisations (35-70 s on 2 shared cores).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import IO, Any

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the checkout's modules, from any working directory

PAPER_CONFIGS = ("mmnist", "mazes", "minerl")  # the table's order
ORDER = ("step:mmnist", "step:minerl", "rollout", "training", "eval", "step:mazes")  # the measuring order
TPU_V3_MINERL_HOURS = 6.0  # the figure to beat: the earlier JAX port trained MineRL 600 epochs in 6 h on one TPU v3
MINERL_TRAIN_VIDEOS = 961  # videos in the MineRL Navigate training split (the archive the paper published)
TRAIN_STEPS = 50  # the training run's steps
SCALARS_EVERY = 10  # its loss curve's spacing (each point also runs a validation)
TINY_RUN_KEYS = ("seq_len", "batch_size")  # what --tiny takes from configs/tiny.yml beside its model sizes
TINY_XLA_FLAGS = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
WRITE_MARGIN_S = 5.0  # budget kept back for writing the table
RESULT = "RESULT "  # a worker's last line: RESULT <json>


@dataclasses.dataclass(frozen=True)
class Settings:
    """What one check measures: the paper's sizes, or (tiny) configs/tiny.yml's on CPU."""

    tiny: bool
    conv_impl: str  # the convs (tiny: 'blocks', compiled once; onednn would compile a second form for its FLOPs)
    steps: int  # timed train steps (after one warm-up)
    rollout_predicted: int  # frames predicted after 36 of context
    matmul_n: int  # the size of the matmul that measures the fp32 limit
    eval_videos: int
    eval_samples: int

    @classmethod
    def of(cls, tiny: bool, steps: int) -> Settings:
        if tiny:
            return cls(True, "blocks", min(steps, 2), rollout_predicted=24, matmul_n=256, eval_videos=2, eval_samples=2)
        return cls(False, "auto", steps, rollout_predicted=964, matmul_n=4096, eval_videos=4, eval_samples=2)


def tiny_overrides() -> dict[str, Any]:
    """The model keys that configs/tiny.yml sets (config.ModelKeys; the dataset's facts stay the paper
    config's), and its TINY_RUN_KEYS: a paper config with these runs tiny.yml's model on the paper's data."""
    import yaml

    import config

    values = yaml.safe_load((ROOT / "configs" / "tiny.yml").read_text())
    model_keys = {f.name for f in dataclasses.fields(config.ModelKeys)}
    return {k: v for k, v in values.items() if k in model_keys or k in TINY_RUN_KEYS}


def paper_config(name: str, settings: Settings, **overrides: Any) -> Any:
    """configs/<name>.yml (a config.Config), with tiny.yml's sizes under --tiny, and `overrides`."""
    import benchmarks

    return benchmarks.paper_config(name, **{**(tiny_overrides() if settings.tiny else {}), **overrides})


def peak_memory_bytes() -> int | None:
    """The device's peak bytes in use since the process started; None where the backend does not say (CPU)."""
    import jax

    stats = jax.devices()[0].memory_stats() or {}
    return stats.get("peak_bytes_in_use")


def environment() -> dict[str, Any]:
    """The device and the versions the numbers were measured with."""
    import flax
    import jax
    import jaxlib

    device = jax.devices()[0]
    return {
        "device": f"{device.platform}: {device.device_kind} x{jax.device_count()}",
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "flax": flax.__version__,
        "python": sys.version.split()[0],
    }


def measure_step(name: str, settings: Settings) -> dict[str, Any]:
    """benchmarks.train_step of paper config `name` at its config batch size, with the device's peak memory."""
    import benchmarks

    limit = benchmarks.matmul_limit(settings.matmul_n)["flops_per_sec"]
    row = benchmarks.train_step(paper_config(name, settings, conv_impl=settings.conv_impl), settings.steps, limit)
    return {**row, "matmul_limit_tflops": limit / 1e12, "peak_memory_bytes": peak_memory_bytes(), **environment()}


def measure_rollout(settings: Settings) -> dict[str, Any]:
    """benchmarks.rollout of mmnist (36 context frames, then settings.rollout_predicted) at its eval_batch_size."""
    import benchmarks

    row = benchmarks.rollout(paper_config("mmnist", settings), settings.rollout_predicted)
    return {**row, "peak_memory_bytes": peak_memory_bytes(), **environment()}


WORKERS: dict[str, Callable[[Settings], dict[str, Any]]] = {
    **{f"step:{name}": (lambda settings, name=name: measure_step(name, settings)) for name in PAPER_CONFIGS},
    "rollout": measure_rollout,
}


@dataclasses.dataclass
class Started:
    """A command running in its own process group (so that it stops with its children), its output going to a
    file (a pipe nobody reads while it runs could fill and stop it)."""

    proc: subprocess.Popen
    log: IO[str]
    start: float


def start_command(command: list[str]) -> Started:
    log = tempfile.TemporaryFile("w+")
    proc = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    return Started(proc, log, time.perf_counter())


def finish_command(started: Started, timeout: float) -> tuple[int | None, str]:
    """(exit code, output) of a started command; stopped with its children (code None) after `timeout` seconds."""
    try:
        code = started.proc.wait(timeout=max(timeout, 1.0))
    except subprocess.TimeoutExpired:
        os.killpg(started.proc.pid, signal.SIGKILL)
        started.proc.wait()
        code = None
    started.log.seek(0)
    out = started.log.read()
    started.log.close()
    return code, out


def run_command(command: list[str], timeout: float) -> tuple[int | None, str]:
    """(exit code, output) of a command; None as the code when it outlived `timeout` seconds."""
    return finish_command(start_command(command), timeout)


def failure(code: int | None, out: str, timeout: float) -> dict[str, Any]:
    """A measurement that gave no result: why, in a few words (the output's last line)."""
    if code is None:
        return {"error": f"stopped at the budget's end after {timeout:.0f} s"}
    last = next((line.strip() for line in reversed(out.splitlines()) if line.strip()), "no output")
    return {"error": f"exit {code}: {last[:200]}"}


def run_worker(part: str, settings: Settings, timeout: float) -> dict[str, Any]:
    """One measurement of WORKERS in a fresh process (its own peak memory; a crash or a hang costs one row)."""
    command = [sys.executable, str(pathlib.Path(__file__).resolve()), "--worker", part, "--steps", str(settings.steps)]
    code, out = run_command(command + (["--tiny"] if settings.tiny else []), timeout)
    return worker_result(code, out, timeout)


def worker_result(code: int | None, out: str, timeout: float) -> dict[str, Any]:
    """A worker's result (its last RESULT line), or why there is none."""
    results = [line[len(RESULT) :] for line in out.splitlines() if line.startswith(RESULT)]
    return json.loads(results[-1]) if code == 0 and results else failure(code, out, timeout)


def run_here(part: str, settings: Settings) -> dict[str, Any]:
    """One measurement of WORKERS in this process; an exception (out of memory, say) costs one row."""
    try:
        return WORKERS[part](settings)
    except Exception as e:  # the table is written whatever one measurement does
        first = next(iter(str(e).strip().splitlines()), "")
        return {"error": f"{type(e).__name__}: {first[:200]}"}


def start_training(workdir: pathlib.Path, settings: Settings) -> Started:
    """train.py for TRAIN_STEPS steps of mmnist (generated data, wandb off), as a user runs it."""
    config = "tiny.yml" if settings.tiny else "mmnist.yml"
    data = [] if settings.tiny else ["--num_gen_train", "100", "--num_gen_test", "10"]  # 2 steps an epoch
    args = ["--config", str(ROOT / "configs" / config), "--max_steps", str(TRAIN_STEPS), "--seed", "0"]
    args += ["--logdir", str(workdir / "logs"), "--datadir", str(workdir / "data"), "--run_name", "check"]
    args += ["--wandb_mode", "disabled", "--progress", "false", "--conv_impl", settings.conv_impl, *data]
    args += ["--save_scalars_every", str(SCALARS_EVERY), "--save_gifs_every", str(TRAIN_STEPS)]
    args += ["--save_model_every", str(TRAIN_STEPS)]
    return start_command([sys.executable, str(ROOT / "train.py"), *args])


def finish_training(started: Started, workdir: pathlib.Path, timeout: float) -> dict[str, Any]:
    """The training run's losses every SCALARS_EVERY steps (from its metrics.jsonl) and wall time."""
    import logger
    import runs

    code, out = finish_command(started, timeout)
    if code != 0:
        return failure(code, out, timeout)
    run = workdir / "logs" / "mmnist" / "check"
    logged = logger.read_metrics(runs.RunFolder(run).metrics_file).steps
    losses = {step: values["train/loss"] for step, values in sorted(logged.items()) if "train/loss" in values}
    return {"run": str(run), "seconds": time.perf_counter() - started.start, "train_loss": losses}


def run_eval(run: str, settings: Settings, timeout: float) -> dict[str, Any]:
    """eval.py on the training run's last checkpoint, a few test videos: its metrics.json's means."""
    args = ["--logdir", run, "--num_examples", str(settings.eval_videos), "--num_samples", str(settings.eval_samples)]
    args += ["--eval_batch_size", str(settings.eval_videos), "--no_save_grid", "true"]
    start = time.perf_counter()
    code, out = run_command([sys.executable, str(ROOT / "eval.py"), *args], timeout)
    import runs

    found = runs.RunFolder(pathlib.Path(run)).evaluations()
    if code != 0 or not found:
        return failure(code, out, timeout)
    summary = json.loads(runs.EvalFolder(found[-1]).summary.read_text())
    means = {k: v for k, v in summary.items() if k.endswith(("_mean", "_last_frame"))}
    return {**means, "num_examples": summary["num_examples"], "seconds": time.perf_counter() - start}


def minerl_hours(step_s: float, settings: Settings) -> dict[str, Any]:
    """Hours for the paper's 600 MineRL epochs (961 videos, each cut into seq_len clips) at `step_s` a step."""
    import dataspec

    config = paper_config("minerl", settings)
    clips = MINERL_TRAIN_VIDEOS * (dataspec.get("minerl").train_frames // config.seq_len)
    num_steps = clips * config.num_epochs // config.batch_size
    return {"epochs": config.num_epochs, "steps": num_steps, "hours": num_steps * step_s / 3600}


def measure_all(settings: Settings, budget: float, isolate: bool, workdir: pathlib.Path) -> dict[str, Any]:
    """Every part of ORDER while the budget lasts; a part not started says so. With --tiny, where only the
    code paths matter, the training run starts first, beside the others (on a second core)."""
    start, results = time.monotonic(), {}
    early = start_training(workdir, settings) if settings.tiny and budget > WRITE_MARGIN_S else None
    for part in ORDER:
        left = budget - (time.monotonic() - start) - WRITE_MARGIN_S
        if left < min(30.0, 0.05 * budget):  # nearly spent: start nothing more
            results[part] = {"error": "not started: the budget was spent"}
        elif part == "training":
            results[part] = finish_training(early or start_training(workdir, settings), workdir, left)
        elif part == "eval":
            run = results["training"].get("run")
            results[part] = run_eval(run, settings, left) if run else {"error": "no training run to evaluate"}
        elif isolate:
            results[part] = run_worker(part, settings, left)
        else:
            results[part] = run_here(part, settings)
        print(f"{part}: {_brief(results[part])} ({time.monotonic() - start:.0f} s of {budget:.0f})", flush=True)
    if early and early.proc.poll() is None:  # started, then not waited for: the budget ran out before it
        finish_command(early, 0)
    step = results["step:minerl"]
    if "step_s" in step:
        results["minerl_600_epochs"] = minerl_hours(step["step_s"], settings)
    results["seconds"] = time.monotonic() - start
    return results


def _brief(result: dict[str, Any]) -> str:
    if "error" in result:
        return result["error"]
    return ", ".join(f"{k} {v:.4g}" for k, v in result.items() if isinstance(v, float))


def _gib(value: int | None) -> str:
    return "n/a" if value is None else f"{value / 2**30:.2f}"


def table(results: dict[str, Any], settings: Settings, budget: float) -> str:
    """The results as markdown: the environment, then one table per kind of measurement."""
    env = next((r for r in results.values() if isinstance(r, dict) and "device" in r), {})
    sizes = "configs/tiny.yml's model sizes (--tiny)" if settings.tiny else "the paper's sizes"
    lines = [
        "# Accelerator check",
        "",
        f"{env.get('device', 'device unknown (no measurement finished)')}; "
        + ", ".join(f"{k} {env.get(k, '?')}" for k in ("jax", "jaxlib", "flax", "python"))
        + f"; {time.strftime('%Y-%m-%d')}; {sizes}; {results['seconds']:.0f} s of a {budget:.0f} s budget.",
        "",
        "## Train step (random frames, benchmarks.train_step)",
        "",
        "| config | batch | seq_len | compile s | step s | frames/s | GFLOP/step | % of fp32 matmul limit | "
        "peak device memory GiB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name in PAPER_CONFIGS:
        r = results[f"step:{name}"]
        if "error" in r:
            lines.append(f"| {name} | {r['error']} |")
            continue
        lines.append(
            f"| {name} | {r['batch']} | {r['seq_len']} | {r['compile_s']:.1f} | {r['step_s']:.4f} | "
            f"{r['frames_per_s']:.0f} | {r['gflop_per_step']:.3g} | {100 * r['fraction_of_matmul_limit']:.1f} | "
            f"{_gib(r['peak_memory_bytes'])} |"
        )
    if "minerl_600_epochs" in results:
        m = results["minerl_600_epochs"]
        lines += [
            "",
            f"MineRL, {m['epochs']} epochs of the paper's {MINERL_TRAIN_VIDEOS} videos ({m['steps']:,} steps) at this "
            f"step time: **{m['hours']:.1f} h**; the figure to beat: {TPU_V3_MINERL_HOURS:g} h on one TPU v3.",
        ]
    lines += _rollout_lines(results["rollout"]) + _training_lines(results["training"]) + _eval_lines(results["eval"])
    return "\n".join(lines) + "\n"


def _rollout_lines(r: dict[str, Any]) -> list[str]:
    lines = ["", "## Open-loop rollout (mmnist, benchmarks.rollout)", ""]
    if "error" in r:
        return lines + [f"rollout: {r['error']}"]
    return lines + [
        "| batch | frames | compile s | seconds | frames/s | XLA peak MiB | peak device memory GiB |",
        "|---|---|---|---|---|---|---|",
        f"| {r['batch']} | 36 + {r['predicted_frames']} | {r['compile_s']:.1f} | {r['seconds']:.3f} | "
        f"{r['frames_per_s']:.0f} | {r['xla_peak_mb']:.0f} | {_gib(r['peak_memory_bytes'])} |",
    ]


def _training_lines(r: dict[str, Any]) -> list[str]:
    lines = ["", f"## Training run (train.py, mmnist, {TRAIN_STEPS} steps, generated data)", ""]
    if "error" in r:
        return lines + [f"training: {r['error']}"]
    losses = r["train_loss"]
    return lines + [
        "| step | " + " | ".join(str(s) for s in losses) + " |",
        "|---|" + "---|" * len(losses),
        "| train loss | " + " | ".join(f"{v:.1f}" for v in losses.values()) + " |",
        "",
        f"{r['seconds']:.0f} s for the whole command (start-up, data, compile, steps, checkpoint, summaries).",
    ]


def _eval_lines(r: dict[str, Any]) -> list[str]:
    lines = ["", "## Evaluation (eval.py on that run)", ""]
    if "error" in r:
        return lines + [f"eval: {r['error']}"]
    rows = [f"| {k} | {v:.4f} |" for k, v in r.items() if k.endswith(("_mean", "_last_frame"))]
    return lines + [
        "| metric | value |",
        "|---|---|",
        *rows,
        "",
        f"{r['num_examples']} videos, {r['seconds']:.0f} s for the whole command.",
    ]


def compile_quickly(folder: pathlib.Path) -> None:
    """For --tiny, where compiling is most of the time: XLA:CPU without LLVM's optimisations, and one persistent
    compilation cache for this check's processes (the training run's train step is the one the mmnist row
    compiled); a cache set by the caller (the tests') is kept. Compile times are then no measure of anything."""
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {TINY_XLA_FLAGS}".strip()
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(folder))
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")


def main(argv: list[str] | None = None) -> None:
    import cli

    parser = cli.ArgumentParser(prog="accelerator_check.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="accelerator_check.md", help="the table (markdown); results also as .json")
    parser.add_argument("--budget", type=float, default=480.0, help="wall-clock seconds for all measurements")
    parser.add_argument("--steps", type=int, default=10, help="timed train steps per config (after a warm-up)")
    parser.add_argument("--tiny", action="store_true", help="configs/tiny.yml's sizes, for a CPU (the tests)")
    parser.add_argument(
        "--isolate",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="a process per "
        "measurement (default: yes, except with --tiny, where the CPU has no peak memory to keep apart)",
    )
    parser.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    out = args.out if args.worker else parser.writable("--out", args.out)  # not after the whole budget
    settings = Settings.of(args.tiny, args.steps)
    if args.worker:  # one measurement, for run_worker
        print(RESULT + json.dumps(WORKERS[args.worker](settings)), flush=True)
        return
    isolate = not args.tiny if args.isolate is None else args.isolate
    with tempfile.TemporaryDirectory(prefix="accelerator-check-") as tmp:
        if settings.tiny:
            compile_quickly(pathlib.Path(tmp) / "jax-cache")
        results = measure_all(settings, args.budget, isolate, pathlib.Path(tmp))
    out.write_text(table(results, settings, args.budget))
    out.with_suffix(".json").write_text(json.dumps(results, indent=1))
    print(out.read_text() + f"wrote {out} and {out.with_suffix('.json')}")


if __name__ == "__main__":
    import hugepages

    hugepages.reexec()  # once, before JAX: the processes it starts inherit huge pages instead of restarting
    main()
