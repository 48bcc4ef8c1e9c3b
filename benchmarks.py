"""The benchmarks' measurements: the machine's matmul limit, the train step, the conv stacks and each
conv's parts, the open-loop rollout, SSIM/PSNR against scikit-image, the data loader, and the peak
resident memory of a fresh process. Each takes the config it measures (`paper_config` loads one of
configs/); bench.py prints them as a table and scripts/accelerator_check.py times them on an
accelerator. Timing and test helpers live here, not in the model or metric modules.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import resource
import statistics
import tempfile
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import cnns
import config as cfg_lib
import cwvae
import data
import dataspec
import generators
import kernels
import steps
import tools

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
    """configs/<name>.yml at seed 0, with `overrides` (config keys) replaced."""
    config = cfg_lib.parse(["--config", str(ROOT / "configs" / f"{name}.yml"), "--seed", "0"])
    return dataclasses.replace(config, **overrides)


def train_step(config: cfg_lib.Config, num_steps: int, limit: float) -> dict:
    """Compile time, median step time and FLOP count of `config`'s train step (its batch_size,
    seq_len and precision) on random input, with the conv form that config.conv_impl resolves to on
    this backend (reported as `conv_impl`); `limit` is the matmul limit in FLOP/s."""
    name, batch, precision, conv_impl = config.dataset, config.batch_size, config.precision, config.conv_impl
    mesh = steps.make_mesh()
    graphdef, params = steps.init_model(config)
    step = steps.train_step(graphdef, mesh, steps.OptimizerOptions.from_config(config))
    opt_state = steps.make_optimizer(config).init(params)
    size = dataspec.get(name).frame_size
    frames = np.random.default_rng(0).integers(0, 256, (batch, config.seq_len, size, size, config.channels), np.uint8)
    start = time.perf_counter()
    compiled = step.lower(params, opt_state, frames, steps.stream_key(0, steps.Stream.TRAIN, 0)).compile()
    compile_s = time.perf_counter() - start
    flops = _flops(compiled)
    if kernels.resolve(conv_impl) == "onednn":  # XLA does not count a custom call's FLOPs: count the same step
        graphdef_b = steps.abstract_model(dataclasses.replace(config, conv_impl="blocks"))[0]  # in its XLA form
        step_b = steps.train_step(graphdef_b, mesh, steps.OptimizerOptions.from_config(config))
        flops = _flops(step_b.lower(params, opt_state, frames, steps.stream_key(0, steps.Stream.TRAIN, 0)).compile())
    state = [params, opt_state]

    def run():
        state[0], state[1], metrics = compiled(state[0], state[1], frames, steps.stream_key(0, steps.Stream.TRAIN, 1))
        return metrics

    jax.block_until_ready(run())  # warm-up
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    secs = statistics.median(timed(run, num_steps))
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    return {
        "config": name,
        "batch": batch,
        "seq_len": config.seq_len,
        "precision": precision,
        "conv_impl": kernels.resolve(conv_impl),
        "compile_s": compile_s,
        "step_s": secs,
        "frames_per_s": batch * config.seq_len / secs,
        "gflop_per_step": flops / 1e9,
        "fraction_of_matmul_limit": flops / secs / limit,
        "page_faults_per_step": faults / num_steps,
    }


def _flops(compiled) -> float:
    cost = compiled.cost_analysis()
    return float((cost[0] if isinstance(cost, list) else cost).get("flops", float("nan")))


def _median_call(fn, *args, repeats: int) -> float:
    """Median seconds of fn(*args), after one call that compiles and warms up."""
    jax.block_until_ready(fn(*args))
    return statistics.median(timed(lambda: fn(*args), repeats))


def conv_benchmark(config: cfg_lib.Config, frames: int = 800, repeats: int = 3) -> dict[str, float]:
    """Seconds (median) for the conv stacks' forward and forward+backward over `frames` frames,
    plain nnx layers ('xla') vs the fast ops ('blocks'): keys like 'encoder/blocks/grad'. For bench.py."""
    rngs, model_config = nnx.Rngs(0), cwvae.ModelConfig.from_config(config)
    state = 8 * config.filters  # any width works for the decoder's input
    size = model_config.frame_size
    frames_in = jax.random.uniform(jax.random.key(1), (1, frames, size, size, config.channels))
    states = jax.random.normal(jax.random.key(2), (1, frames, state))
    results = {}
    for name, module, x in [
        ("encoder", cnns.Encoder(model_config, rngs=rngs), frames_in),
        ("decoder", cnns.Decoder(model_config, state, rngs=rngs), states),
    ]:
        for kind in ("xla", "blocks"):
            graph, params = nnx.split(cnns.use_kernels(module, kind))

            def loss(p, x, graph=graph):
                out = nnx.merge(graph, p)(x)
                return sum(jnp.mean(o.astype(jnp.float32) ** 2) for o in jax.tree.leaves(out))

            results[f"{name}/{kind}/forward"] = _median_call(jax.jit(loss), params, x, repeats=repeats)
            grad = jax.jit(jax.grad(loss, argnums=(0, 1)))
            results[f"{name}/{kind}/grad"] = _median_call(grad, params, x, repeats=repeats)
    return results


def blob_frames(num_frames: int, shape: Sequence[int] = (64, 64, 1), seed: int = 0) -> np.ndarray:
    """Smooth test frames (N, H, W, C) in [0, 1]: blurred bright blobs on black, like Moving MNIST."""
    rng = np.random.default_rng(seed)
    h, w, c = shape
    yy, xx = np.mgrid[:h, :w]
    frames = np.zeros((num_frames, h, w, c), np.float32)
    for _ in range(3):
        cy = rng.uniform(0, h, (num_frames, 1, 1, 1))
        cx = rng.uniform(0, w, (num_frames, 1, 1, 1))
        radius = rng.uniform(3, 8, (num_frames, 1, 1, c))
        dist2 = (yy[None, :, :, None] - cy) ** 2 + (xx[None, :, :, None] - cx) ** 2
        frames += np.exp(-dist2 / (2 * radius**2))
    return np.clip(frames, 0.0, 1.0)


def _skimage_metrics(
    x: np.ndarray, y: np.ndarray, ssim_range: float, psnr_range: float
) -> tuple[np.ndarray, np.ndarray]:
    """The reference: scikit-image frame by frame (PSNR per channel, averaged)."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    ssims, psnrs = [], []
    for a, b in zip(x, y):
        ssims.append(structural_similarity(a, b, data_range=ssim_range, channel_axis=-1))
        channels = range(a.shape[-1])
        psnrs.append(np.mean([peak_signal_noise_ratio(a[..., k], b[..., k], data_range=psnr_range) for k in channels]))
    return np.array(ssims), np.array(psnrs)


def metric_speed(config: cfg_lib.Config, num_frames: int = 964, repeats: int = 5, seed: int = 0) -> dict[str, float]:
    """Times :func:`tools.frame_metrics` (SSIM and PSNR, jitted, warm) against scikit-image's
    per-frame loop on the same frames.

    Frames are :func:`blob_frames` of `config`'s dataset's size and channels and a noisy copy, scored
    with config.ssim_data_range and PSNR's data range. Returns the best of ``repeats`` runs of
    scikit-image and of ``10 * repeats`` runs of JAX (seconds), their ratio, and the largest
    absolute differences of the values.
    """
    ssim_range, psnr_range = config.ssim_data_range, tools.PSNR_DATA_RANGE
    size = dataspec.get(config.dataset).frame_size
    x = blob_frames(num_frames, (size, size, config.channels), seed)
    noise = np.random.default_rng(seed + 1).normal(0, 0.1, x.shape).astype(np.float32)
    y = x + noise  # unclipped, like the official predictions
    xj, yj = jnp.asarray(x), jnp.asarray(y)

    def run_jax():
        return jax.block_until_ready(tools.frame_metrics(xj, yj, ssim_range, psnr_range))

    jax_ssim, jax_psnr = run_jax()  # compile
    jax_s = min(timed(run_jax, 10 * repeats))  # ~100x cheaper than the reference; VM timing noise
    ref_s = min(timed(lambda: _skimage_metrics(x, y, ssim_range, psnr_range), repeats))
    ref_ssim, ref_psnr = _skimage_metrics(x.astype(np.float64), y.astype(np.float64), ssim_range, psnr_range)
    return {
        "num_frames": num_frames,
        "jax_s": jax_s,
        "skimage_s": ref_s,
        "speedup": ref_s / jax_s,
        "ssim_max_abs_diff": float(np.max(np.abs(np.asarray(jax_ssim) - ref_ssim))),
        "psnr_max_abs_diff": float(np.max(np.abs(np.asarray(jax_psnr) - ref_psnr))),
    }


def conv_layers(config: cfg_lib.Config) -> list[tuple[str, object, tuple, tuple]]:
    """(name, op, input shape per frame, kernel shape) of every conv of the encoder and decoder,
    read off the model's modules (shapes only, nothing initialised)."""
    model = nnx.eval_shape(lambda: cwvae.CWVAE(cwvae.ModelConfig.from_config(config), rngs=nnx.Rngs(0)))
    stacks = [
        ("enc", kernels.blocks.conv_s2, model.encoder.convs, (model.encoder.frame_size,) * 2 + (config.channels,)),
        ("dec", kernels.blocks.conv_transpose_s2, model.decoder.deconvs, (1, 1, model.decoder.feat)),
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
    `frames` frames (a batch-8 step has 800), best-of-`repeats` seconds and GFLOP/s, in the conv form
    config.conv_impl resolves to ('xla' is profiled as 'blocks')."""
    rows = []
    ops = kernels.ops(kernels.resolve(config.conv_impl))
    for name, op, x_shape, w_shape in conv_layers(config):
        op = ops[0] if op is kernels.blocks.conv_s2 else ops[1]
        kx, kw, kc = jax.random.split(jax.random.key(0), 3)
        x = jax.random.normal(kx, (frames, *x_shape))
        w = jax.random.normal(kw, w_shape) * 0.05
        y_shape = jax.eval_shape(op, x, w).shape
        dy = jax.random.normal(kc, y_shape)
        pixels = y_shape[1] * y_shape[2] if op is ops[0] else x_shape[0] * x_shape[1]
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


def rollout(config: cfg_lib.Config, predicted: int, repeats: int = 2) -> dict:
    """Time and XLA memory of `config`'s open-loop rollout of eval_batch_size videos: open_loop_ctx
    context frames (36 in the paper's configs), `predicted` more."""
    config = dataclasses.replace(config, eval_seq_len=config.open_loop_ctx + predicted)
    batch = config.eval_batch_size
    graphdef, params = steps.init_model(config)
    fn = steps.open_loop(graphdef, config.open_loop_ctx, config.ssim_data_range, tuple(config.use_obs_per_level()))
    size = dataspec.get(config.dataset).frame_size
    videos = np.zeros((batch, config.eval_seq_len, size, size, config.channels), np.uint8)
    keys = jax.random.split(jax.random.key(0), batch)
    start = time.perf_counter()
    compiled = fn.lower(params, videos, keys).compile()
    compile_s = time.perf_counter() - start
    mem = compiled.memory_analysis()
    jax.block_until_ready(compiled(params, videos, keys))
    secs = min(timed(lambda: compiled(params, videos, keys), repeats))
    out_bytes = batch * predicted * size * size * 4
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


# --- peak memory: each measurement in a fresh process ------------------------------------------

# The child process of peak_memory: this checkout's modules, huge pages as an entry script has them
# (hugepages.reexec), then one spec.
_MEMORY_CHILD = (
    "import sys; sys.path.insert(0, sys.argv[1]); import hugepages; hugepages.reexec(); "
    "import benchmarks; benchmarks.print_peak_memory(sys.argv[2])"
)


def peak_memory(spec: str) -> dict:
    """Peak resident memory (MiB) of a fresh process that runs one `spec` and nothing else:
    'train:<config>:<batch>' (compile and two train steps), 'eval:<config>:<batch>:<frames>' (an
    open-loop rollout of `frames` frames, as eval.py runs it), 'summaries:<config>:<batch>:<frames>'
    (a train step, then training's validation at `frames` frames, in sub-batches of eval_batch_size)."""
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", _MEMORY_CHILD, str(ROOT), spec], capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        return {"spec": spec, "error": (out.stderr.strip().splitlines() or ["?"])[-1]}
    return {"spec": spec, **json.loads(out.stdout.strip().splitlines()[-1])}


def print_peak_memory(spec: str) -> None:
    """The child of peak_memory: run `spec`, print its peak RSS as JSON."""
    kind, name, *numbers = spec.split(":")
    batch, frames = int(numbers[0]), int(numbers[1]) if len(numbers) > 1 else None
    config = paper_config(name, batch_size=batch)
    graphdef, params = steps.init_model(config)
    size, channels = dataspec.get(config.dataset).frame_size, config.channels
    rng = np.random.default_rng(0)
    if kind in ("train", "summaries"):
        step = steps.train_step(graphdef, steps.make_mesh(), steps.OptimizerOptions.from_config(config))
        opt_state = steps.make_optimizer(config).init(params)
        clips = rng.integers(0, 256, (batch, config.seq_len, size, size, channels), np.uint8)
        for i in range(2 if kind == "train" else 1):
            params, opt_state, metrics = step(params, opt_state, clips, steps.stream_key(0, steps.Stream.TRAIN, i))
            jax.block_until_ready(metrics)
    if kind in ("eval", "summaries"):
        sub = batch if kind == "eval" else min(config.eval_batch_size, batch)
        rollout = steps.open_loop(graphdef, config.open_loop_ctx, config.ssim_data_range)
        val_loss = steps.val_loss(graphdef)
        videos = rng.integers(0, 256, (sub, frames, size, size, channels), np.uint8)
        keys = jax.random.split(jax.random.key(0), sub)
        for _ in range(1 if kind == "eval" else batch // sub):
            if kind == "summaries":
                jax.block_until_ready(val_loss(params, videos, keys[0]))
            jax.block_until_ready(rollout(params, videos, keys))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"peak_rss_mb": peak, "batch": batch, "frames": frames or config.seq_len}))


MEMORY_SPECS = ("train:mmnist:8", "train:mmnist:50", "eval:mmnist:10:1000", "summaries:mmnist:50:1000")


def loader_throughput(config: cfg_lib.Config, num_batches: int, warmup: int = 2) -> float:
    """Frames per second delivered by the train loader, measured after `warmup` batches."""
    loader = data.make_train_loader(config)
    for _ in range(warmup):
        next(loader)
    frames = 0
    start = time.perf_counter()
    for _ in range(num_batches):
        frames += int(np.prod(next(loader).shape[:2]))
    return frames / (time.perf_counter() - start)


def loader(config: cfg_lib.Config, batches: int, videos: int) -> dict:
    """The train loader's frames/s on generated data of `config`'s dataset (at its batch_size and
    seq_len), and the seconds it took to generate `videos` train videos."""
    with tempfile.TemporaryDirectory() as tmp:
        config = dataclasses.replace(
            config, data_source="generated", datadir=tmp, num_gen_train=videos, num_gen_test=1, progress=False
        )
        start = time.perf_counter()
        generators.ensure_generated(config, "train", progress=False)
        generate_s = time.perf_counter() - start
        fps = loader_throughput(config, batches)
    return {
        "config": config.dataset,
        "batch": config.batch_size,
        "seq_len": config.seq_len,
        "frames_per_s": fps,
        "generate_s_per_video": generate_s / videos,
    }
