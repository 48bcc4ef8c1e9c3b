"""Measure the speed of this implementation on the current machine; print a table, write bench.json.

    python bench.py                       # defaults: under 10 minutes on a 2-core CPU
    python bench.py --minerl_batch 50 --steps 10 --out bench_gpu.json   # on a GPU

Measures the machine's limit (fp32 matmul FLOP/s), the train step at the paper's mmnist and
minerl configs (compile time, median step time, frames/s, FLOPs from XLA's cost analysis and
the fraction of the matmul limit), the conv stacks' forward+gradient (plain nnx layers against
the custom-gradient ops of kernels/blocks.py), each conv's forward and gradients in the form
--conv_impl resolves to (kernels/), the 36 + 964 frame open-loop rollout (time, memory), the
SSIM/PSNR metrics against scikit-image, the data loader's frames/s, and the peak resident memory
of a fresh process running one train step, an evaluation rollout or training's validation
(`--memory`, see `benchmarks.peak_memory`). The measurements are benchmarks.py's.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import resource
import time

import jax

import benchmarks
import cli
import hugepages
import kernels
import tools
from benchmarks import PARTS, paper_config

MEASUREMENTS = ("train", "convs", "profile", "rollout", "metrics", "loader", "memory")  # what --skip leaves out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = cli.ArgumentParser(prog="bench.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", default="mmnist,minerl", help="train-step configs to time")
    parser.add_argument("--mmnist_batches", default="8,50", help="mmnist batch sizes to time")
    parser.add_argument("--minerl_batch", type=int, default=4, help="minerl batch size (large on CPU)")
    parser.add_argument("--steps", type=int, default=3, help="timed train steps after one warm-up")
    parser.add_argument("--rollout_batches", default="1,10", help="open-loop rollout batch sizes")
    parser.add_argument("--precision", default="float32", help="float32 or bfloat16 (GPU/TPU)")
    parser.add_argument("--conv_impl", default="auto", choices=kernels.CONV_IMPLS, help="train-step convs (kernels/)")
    parser.add_argument("--skip", default="", help=f"comma list of: {','.join(MEASUREMENTS)}")
    parser.add_argument("--out", default="bench.json", help="where to write the results")
    parser.add_argument(
        "--memory", default=",".join(benchmarks.MEMORY_SPECS), help="peak-memory runs (see benchmarks.peak_memory)"
    )
    args = parser.parse_args(argv)
    unknown = set(filter(None, args.skip.split(","))) - set(MEASUREMENTS)
    if unknown:
        parser.error(f"--skip got {', '.join(sorted(unknown))}; valid: {','.join(MEASUREMENTS)}")
    parser.writable("--out", args.out)
    return args


def environment() -> dict:
    """The machine and versions the numbers were measured on."""
    device = jax.devices()[0]
    return {
        "device": f"{device.platform}: {device.device_kind} x{jax.device_count()}",
        "cpu_cores": os.cpu_count(),
        "machine": platform.machine(),
        "jax": jax.__version__,
        "date": time.strftime("%Y-%m-%d"),
        "huge_pages": hugepages.enabled(),
    }


def train(args: argparse.Namespace, limit: float) -> list[dict]:
    rows = []
    for name in args.configs.split(","):
        batches = [int(b) for b in args.mmnist_batches.split(",")] if name == "mmnist" else [args.minerl_batch]
        for batch in batches:
            config = paper_config(name, batch_size=batch, precision=args.precision, conv_impl=args.conv_impl)
            row = benchmarks.train_step(config, args.steps, limit)
            rows.append(row)
            print(
                f"train {name:6s} B={batch:<3d} T={row['seq_len']} {row['conv_impl']} convs: "
                f"compile {row['compile_s']:.0f} s, "
                f"step {row['step_s']:.3f} s, {row['frames_per_s']:.0f} frames/s, "
                f"{row['gflop_per_step']:.0f} GFLOP/step, {100 * row['fraction_of_matmul_limit']:.0f}% of limit, "
                f"{row['page_faults_per_step']:.0f} page faults/step"
            )
    return rows


def convs() -> dict[str, float]:
    result = benchmarks.conv_benchmark(paper_config("mmnist"), frames=800, repeats=1)
    grads = [f"{k.rsplit('/', 1)[0]} {v:.2f} s" for k, v in result.items() if k.endswith("grad")]
    print("conv stacks, 800 frames, forward+grad: " + ", ".join(grads))
    return result


def profile(args: argparse.Namespace) -> list[dict]:
    rows = benchmarks.conv_profile(paper_config("mmnist", conv_impl=args.conv_impl), frames=800)
    form = kernels.resolve(args.conv_impl)
    print(f"mmnist convs ({form}), 800 frames (one batch-8 step), ms (GFLOP/s): forward, input grad, kernel grad")
    for row in rows:
        parts = [f"{1e3 * row[f'{p}_s']:4.0f} ({row[f'{p}_gflop_per_s']:3.0f})" for p in PARTS]
        print(
            f"  {row['layer']} {str(tuple(row['input'])):19s} k{row['kernel'][0]} {row['gflop']:5.2f} GFLOP: "
            + ", ".join(parts)
        )
    total = sum(row[f"{p}_s"] for row in rows for p in PARTS if (row["layer"], p) != ("enc1", "input_grad"))
    print(f"  sum (without enc1's unused input grad): {total:.2f} s")
    return rows


def rollouts(args: argparse.Namespace) -> list[dict]:
    rows = []
    for batch in [int(b) for b in args.rollout_batches.split(",")]:
        for predicted in (100, 964):
            row = benchmarks.rollout(paper_config("mmnist", eval_batch_size=batch), predicted)
            rows.append(row)
            print(
                f"rollout B={batch:<3d} 36+{predicted} frames: {row['seconds']:.2f} s "
                f"({row['frames_per_s']:.0f} frames/s), XLA peak {row['xla_peak_mb']:.0f} MiB "
                f"(temp {row['xla_temp_mb']:.0f}, predicted frames {row['predicted_frames_mb']:.0f})"
            )
    return rows


def metrics() -> dict:
    m = benchmarks.metric_speed(paper_config("mmnist"))
    print(
        f"SSIM+PSNR on {m.get('num_frames', 964)} frames: JAX {m['jax_s'] * 1e3:.1f} ms, scikit-image "
        f"{m['skimage_s'] * 1e3:.0f} ms, {m['speedup']:.1f}x; max diff SSIM {m['ssim_max_abs_diff']:.1e}, "
        f"PSNR {m['psnr_max_abs_diff']:.1e} {tools.METRICS['psnr'].unit}"
    )
    return m


def loaders(train_rows: list[dict]) -> list[dict]:
    rows = [benchmarks.loader(paper_config("mmnist"), 20, 200), benchmarks.loader(paper_config("minerl"), 10, 10)]
    for row in rows:
        line = (
            f"loader {row['config']} (generated, {row['generate_s_per_video']:.2f} s per video) "
            f"B={row['batch']} T={row['seq_len']}: {row['frames_per_s']:.0f} frames/s"
        )
        consumed = [r["frames_per_s"] for r in train_rows if r["config"] == row["config"]]
        if consumed:
            row["train_consumption_frames_per_s"] = max(consumed)
            line += f" = {row['frames_per_s'] / max(consumed):.0f}x the train step's consumption"
        print(line)
    return rows


def memory(args: argparse.Namespace) -> list[dict]:
    rows = [benchmarks.peak_memory(spec) for spec in filter(None, args.memory.split(","))]
    for row in rows:
        print(
            f"peak memory {row['spec']}: "
            + (f"{row['peak_rss_mb'] / 1024:.2f} GiB resident" if "peak_rss_mb" in row else row["error"])
        )
    return rows


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    skip = set(filter(None, args.skip.split(",")))
    result = environment()
    result["matmul"] = benchmarks.matmul_limit()
    limit = result["matmul"]["flops_per_sec"]
    pages = "huge pages on" if result["huge_pages"] else "huge pages off"
    print(f"{result['device']}, jax {jax.__version__}, {pages}; fp32 matmul limit {limit / 1e9:.0f} GFLOP/s")
    if "train" not in skip:
        result["train"] = train(args, limit)
    if "convs" not in skip:
        result["convs_800_frames"] = convs()
    if "profile" not in skip:
        result["conv_profile"] = profile(args)
    if "rollout" not in skip:
        result["rollout"] = rollouts(args)
    if "metrics" not in skip:
        result["metrics"] = metrics()
    if "loader" not in skip:
        result["loader"] = loaders(result.get("train", []))
    if "memory" not in skip:
        result["memory"] = memory(args)
    result["max_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    pathlib.Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    hugepages.reexec()
    main()
