"""Measure the speed of this implementation on the current machine; print a table, write bench.json.

    python bench.py                       # defaults: under 10 minutes on a 2-core CPU
    python bench.py --minerl_batch 50 --steps 10 --out bench_gpu.json   # on a GPU

Measures the machine's limit (fp32 matmul FLOP/s), the train step at the paper's mmnist and
minerl configs (compile time, median step time, frames/s, FLOPs from XLA's cost analysis and
the fraction of the matmul limit), the conv stacks' forward+gradient (plain nnx layers against
the custom-gradient ops of cnns.py), the 36 + 964 frame open-loop rollout (time, memory), the
SSIM/PSNR metrics against scikit-image, and the data loader's frames/s.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import platform
import resource
import statistics
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import cnns
import config as cfg_lib
import cwvae
import data
import tools
import train

ROOT = pathlib.Path(__file__).resolve().parent
PARTS = ("forward", "input_grad", "kernel_grad")


def timed(fn, repeats: int) -> list[float]:
    """Wall-clock seconds of `repeats` calls of fn(), each waited for."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return times


def matmul_limit(n: int = 4096, repeats: int = 5) -> dict:
    """fp32 FLOP/s of one large jit-compiled matmul: the machine's practical limit."""
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    f = jax.jit(lambda x: x @ x)
    jax.block_until_ready(f(a))
    secs = statistics.median(timed(lambda: f(a), repeats))
    return {"n": n, "seconds": secs, "flops_per_sec": 2 * n**3 / secs}


def paper_config(name: str, **overrides) -> cfg_lib.Config:
    config = cfg_lib.parse(["--config", str(ROOT / "configs" / f"{name}.yml"), "--seed", "0"])
    return dataclasses.replace(config, **overrides)


def train_step(name: str, batch: int, steps: int, limit: float, precision: str = "float32") -> dict:
    """Compile time, median step time and FLOP count of the train step on random input."""
    config = paper_config(name, batch_size=batch, precision=precision)
    mesh = train.make_mesh()
    graphdef, params = train.init_model(config)
    step = train.train_step_fn(graphdef, config, mesh)
    opt_state = train.make_optimizer(config).init(params)
    frames = np.random.default_rng(0).integers(0, 256, (batch, config.seq_len, 64, 64, config.channels), np.uint8)
    start = time.perf_counter()
    compiled = step.lower(params, opt_state, frames, train.step_key(0, 0)).compile()
    compile_s = time.perf_counter() - start
    cost = compiled.cost_analysis()
    flops = float((cost[0] if isinstance(cost, list) else cost).get("flops", float("nan")))
    state = [params, opt_state]

    def run():
        state[0], state[1], metrics = compiled(state[0], state[1], frames, train.step_key(0, 1))
        return metrics

    jax.block_until_ready(run())  # warm-up
    secs = statistics.median(timed(run, steps))
    return {
        "config": name,
        "batch": batch,
        "seq_len": config.seq_len,
        "precision": precision,
        "compile_s": compile_s,
        "step_s": secs,
        "frames_per_s": batch * config.seq_len / secs,
        "gflop_per_step": flops / 1e9,
        "fraction_of_matmul_limit": flops / secs / limit,
    }


def conv_layers(config: cfg_lib.Config) -> list[tuple[str, object, tuple, tuple]]:
    """(name, op, input shape per frame, kernel shape) of every conv of the encoder and decoder,
    read off the model's modules (shapes only, nothing initialised)."""
    model = nnx.eval_shape(lambda: cwvae.CWVAE(config, rngs=nnx.Rngs(0)))
    stacks = [
        ("enc", cnns.conv_s2, model.encoder.convs, (64, 64, config.channels)),
        ("dec", cnns.conv_transpose_s2, model.decoder.deconvs, (1, 1, model.decoder.feat)),
    ]
    layers = []
    for prefix, op, convs, shape in stacks:
        for i, conv in enumerate(convs):
            kernel = tuple(conv.kernel.shape)
            layers.append((f"{prefix}{i + 1}", op, shape, kernel))
            x, w = jax.ShapeDtypeStruct((1, *shape), jnp.float32), jax.ShapeDtypeStruct(kernel, jnp.float32)
            shape = jax.eval_shape(op, x, w).shape[1:]
    return layers


def conv_profile(config: cfg_lib.Config, frames: int, repeats: int = 3) -> list[dict]:
    """Where the train step's time goes: each conv's forward, input gradient and kernel gradient over
    `frames` frames (a batch-8 step has 800), best-of-`repeats` seconds and GFLOP/s."""
    rows = []
    for name, op, x_shape, w_shape in conv_layers(config):
        kx, kw, kc = jax.random.split(jax.random.key(0), 3)
        x = jax.random.normal(kx, (frames, *x_shape))
        w = jax.random.normal(kw, w_shape) * 0.05
        y_shape = jax.eval_shape(op, x, w).shape
        dy = jax.random.normal(kc, y_shape)
        pixels = y_shape[1] * y_shape[2] if op is cnns.conv_s2 else x_shape[0] * x_shape[1]
        flop = 2 * frames * pixels * int(np.prod(w_shape))
        parts = {
            "forward": jax.jit(op),
            "input_grad": jax.jit(lambda x, w, dy, op=op: jax.vjp(lambda x: op(x, w), x)[1](dy)[0]),
            "kernel_grad": jax.jit(lambda x, w, dy, op=op: jax.vjp(lambda w: op(x, w), w)[1](dy)[0]),
        }
        row = {"layer": name, "input": [frames, *x_shape], "kernel": list(w_shape), "gflop": flop / 1e9}
        for part, fn in parts.items():
            args = (x, w) if part == "forward" else (x, w, dy)
            jax.block_until_ready(fn(*args))
            row[f"{part}_s"] = min(timed(lambda fn=fn, args=args: fn(*args), repeats))
            row[f"{part}_gflop_per_s"] = flop / row[f"{part}_s"] / 1e9
        rows.append(row)
    return rows


def rollout(batch: int, predicted: int, repeats: int = 2) -> dict:
    """Time and XLA memory of the mmnist open-loop rollout: 36 context frames, `predicted` more."""
    config = paper_config("mmnist", eval_batch_size=batch, eval_seq_len=36 + predicted)
    graphdef, params = train.init_model(config)
    fn = train.make_open_loop(graphdef, config.open_loop_ctx, config.ssim_data_range)
    videos = np.zeros((batch, config.eval_seq_len, 64, 64, 1), np.uint8)
    keys = jax.random.split(jax.random.key(0), batch)
    start = time.perf_counter()
    compiled = fn.lower(params, videos, keys).compile()
    compile_s = time.perf_counter() - start
    mem = compiled.memory_analysis()
    jax.block_until_ready(compiled(params, videos, keys))
    secs = min(timed(lambda: compiled(params, videos, keys), repeats))
    out_bytes = batch * predicted * 64 * 64 * 4
    return {
        "batch": batch,
        "predicted_frames": predicted,
        "compile_s": compile_s,
        "seconds": secs,
        "frames_per_s": batch * predicted / secs,
        "xla_temp_mb": mem.temp_size_in_bytes / 2**20,
        "xla_output_mb": mem.output_size_in_bytes / 2**20,
        "xla_peak_mb": (mem.temp_size_in_bytes + mem.output_size_in_bytes + mem.argument_size_in_bytes) / 2**20,
        "predicted_frames_mb": out_bytes / 2**20,
    }


def loader(batches: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        config = paper_config("mmnist", datadir=tmp, num_gen_train=200, num_gen_test=2)
        fps = data.loader_throughput(config, batches)
    return {"config": "mmnist", "batch": 50, "seq_len": 100, "frames_per_s": fps}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", default="mmnist,minerl", help="train-step configs to time")
    parser.add_argument("--mmnist_batches", default="8,50", help="mmnist batch sizes to time")
    parser.add_argument("--minerl_batch", type=int, default=4, help="minerl batch size (large on CPU)")
    parser.add_argument("--steps", type=int, default=3, help="timed train steps after one warm-up")
    parser.add_argument("--rollout_batches", default="1,10", help="open-loop rollout batch sizes")
    parser.add_argument("--precision", default="float32", help="float32 or bfloat16 (GPU/TPU)")
    parser.add_argument("--skip", default="", help="comma list of: train,convs,profile,rollout,metrics,loader")
    parser.add_argument("--out", default="bench.json", help="where to write the results")
    args = parser.parse_args(argv)
    skip = set(filter(None, args.skip.split(",")))
    device = jax.devices()[0]
    result = {
        "device": f"{device.platform}: {device.device_kind} x{jax.device_count()}",
        "cpu_cores": os.cpu_count(),
        "machine": platform.machine(),
        "jax": jax.__version__,
        "date": time.strftime("%Y-%m-%d"),
    }
    result["matmul"] = matmul_limit()
    limit = result["matmul"]["flops_per_sec"]
    print(f"{result['device']}, jax {jax.__version__}; fp32 matmul limit {limit / 1e9:.0f} GFLOP/s")
    if "train" not in skip:
        result["train"] = []
        for name in args.configs.split(","):
            batches = [int(b) for b in args.mmnist_batches.split(",")] if name == "mmnist" else [args.minerl_batch]
            for batch in batches:
                row = train_step(name, batch, args.steps, limit, args.precision)
                result["train"].append(row)
                print(
                    f"train {name:6s} B={batch:<3d} T={row['seq_len']}: compile {row['compile_s']:.0f} s, "
                    f"step {row['step_s']:.3f} s, {row['frames_per_s']:.0f} frames/s, "
                    f"{row['gflop_per_step']:.0f} GFLOP/step, {100 * row['fraction_of_matmul_limit']:.0f}% of limit"
                )
    if "convs" not in skip:
        convs = cnns.conv_benchmark(paper_config("mmnist"), frames=800, repeats=1)
        result["convs_800_frames"] = convs
        grads = [f"{k.rsplit('/', 1)[0]} {v:.2f} s" for k, v in convs.items() if k.endswith("grad")]
        print("conv stacks, 800 frames, forward+grad: " + ", ".join(grads))
    if "profile" not in skip:
        result["conv_profile"] = conv_profile(paper_config("mmnist"), frames=800)
        print("mmnist convs, 800 frames (one batch-8 step), ms (GFLOP/s): forward, input grad, kernel grad")
        for row in result["conv_profile"]:
            parts = [f"{1e3 * row[f'{p}_s']:4.0f} ({row[f'{p}_gflop_per_s']:3.0f})" for p in PARTS]
            print(
                f"  {row['layer']} {str(tuple(row['input'])):19s} k{row['kernel'][0]} {row['gflop']:5.2f} GFLOP: "
                + ", ".join(parts)
            )
        total = sum(
            row[f"{p}_s"]
            for row in result["conv_profile"]
            for p in PARTS
            if (row["layer"], p) != ("enc1", "input_grad")
        )
        print(f"  sum (without enc1's unused input grad): {total:.2f} s")
    if "rollout" not in skip:
        result["rollout"] = []
        for batch in [int(b) for b in args.rollout_batches.split(",")]:
            for predicted in (100, 964):
                row = rollout(batch, predicted)
                result["rollout"].append(row)
                print(
                    f"rollout B={batch:<3d} 36+{predicted} frames: {row['seconds']:.2f} s "
                    f"({row['frames_per_s']:.0f} frames/s), XLA peak {row['xla_peak_mb']:.0f} MiB "
                    f"(temp {row['xla_temp_mb']:.0f}, predicted frames {row['predicted_frames_mb']:.0f})"
                )
    if "metrics" not in skip:
        m = tools.metric_speed()
        result["metrics"] = m
        print(
            f"SSIM+PSNR on {m.get('num_frames', 964)} frames: JAX {m['jax_s'] * 1e3:.1f} ms, scikit-image "
            f"{m['skimage_s'] * 1e3:.0f} ms, {m['speedup']:.1f}x; max diff SSIM {m['ssim_max_abs_diff']:.1e}, "
            f"PSNR {m['psnr_max_abs_diff']:.1e} dB"
        )
    if "loader" not in skip:
        result["loader"] = loader(20)
        line = f"loader mmnist B=50 T=100: {result['loader']['frames_per_s']:.0f} frames/s"
        if "train" in result:
            consumed = max(r["frames_per_s"] for r in result["train"] if r["config"] == "mmnist")
            result["loader"]["train_consumption_frames_per_s"] = consumed
            line += f" = {result['loader']['frames_per_s'] / consumed:.0f}x the train step's consumption"
        print(line)
    result["max_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    pathlib.Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
