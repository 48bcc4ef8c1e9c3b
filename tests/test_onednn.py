"""The oneDNN ops (kernels/onednn.py, ext/onednn_conv.cc) equal the plain lax convs: forward pass, input
gradient and kernel gradient at every conv layer shape of the mmnist, mazes and minerl models, under jit,
with leading batch dims and under vmap; their kernel gradients are as accurate as a float64 computation
allows float32 to be. Skipped where the extension is not built (python ext/build.py)."""

import functools
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import ROOT
from test_cnns import FRAMES, plain_conv, plain_conv_transpose  # the lax references

import config as cfg_lib
import errors
import kernels
from kernels import blocks, onednn

requires_onednn = pytest.mark.skipif(not onednn.available(), reason=f"oneDNN extension unavailable: {onednn.info()}")


def layer_shapes(name: str) -> tuple[list, list]:
    """((input size, Cin, Cout, k) of the encoder's convs, the same of the decoder's transposed convs) of a
    paper config, as cnns.Encoder / cnns.Decoder build them."""
    config = cfg_lib.parse(["--config", str(ROOT / "configs" / f"{name}.yml")])
    width = config.filters * config.channels_mult
    enc_chans = [config.channels, width, 2 * width, 4 * width, 8 * width]
    enc, size = [], 64
    for cin, cout in zip(enc_chans[:-1], enc_chans[1:]):
        enc.append((size, cin, cout, 4))
        size = blocks.valid_size(size, 4)
    dec_chans = [32 * width, 4 * width, 2 * width, width, config.channels]
    dec, size = [], 1
    for cin, cout, k in zip(dec_chans[:-1], dec_chans[1:], [5, 5, 6, 6]):
        dec.append((size, cin, cout, k))
        size = 2 * (size - 1) + k
    assert size == 64, size
    return enc, dec


CONFIGS = ("mmnist", "mazes", "minerl")
ENCODER = sorted({layer for name in CONFIGS for layer in layer_shapes(name)[0]})
DECODER = sorted({layer for name in CONFIGS for layer in layer_shapes(name)[1]})
CASES = [("conv_s2", *layer) for layer in ENCODER] + [("conv_transpose_s2", *layer) for layer in DECODER]
OPS = {"conv_s2": (onednn.conv_s2, plain_conv), "conv_transpose_s2": (onednn.conv_transpose_s2, plain_conv_transpose)}


def inputs(x_shape, w_shape, plain, seed=0):
    kx, kw, kc = jax.random.split(jax.random.key(seed), 3)
    x = jax.random.normal(kx, x_shape)
    w = jax.random.normal(kw, w_shape) / np.sqrt(np.prod(w_shape[:3]))
    cotangent = jax.random.normal(kc, jax.eval_shape(plain, x, w).shape)
    return x, w, cotangent


def value_and_grads(op, x, w, cotangent):
    """op(x, w) and the gradients of <op(x, w), cotangent> in x and w."""
    out, vjp = jax.vjp(op, x, w)
    return out, *vjp(cotangent)


def assert_close(got, want):
    for name, g, v in zip(("output", "input grad", "kernel grad"), got, want):
        assert g.shape == v.shape, (name, g.shape, v.shape)
        assert g.dtype == v.dtype, (name, g.dtype, v.dtype)
        scale = float(jnp.max(jnp.abs(v)))
        np.testing.assert_allclose(g, v, atol=1e-5 * scale, rtol=1e-4, err_msg=name)


@requires_onednn
@pytest.mark.parametrize("op,size,cin,cout,k", CASES)
def test_matches_lax_under_jit(op, size, cin, cout, k):
    fast, plain = OPS[op]
    x, w, cotangent = inputs((FRAMES, size, size, cin), (k, k, cin, cout), plain)
    got = jax.jit(functools.partial(value_and_grads, fast))(x, w, cotangent)
    assert_close(got, value_and_grads(plain, x, w, cotangent))


@requires_onednn
@pytest.mark.parametrize("op", OPS)
def test_matches_lax_eagerly_one_frame(op):
    fast, plain = OPS[op]
    size, cin, cout, k = ENCODER[2] if op == "conv_s2" else DECODER[2]
    x, w, cotangent = inputs((1, size, size, cin), (k, k, cin, cout), plain, seed=1)
    assert_close(value_and_grads(fast, x, w, cotangent), value_and_grads(plain, x, w, cotangent))


@requires_onednn
@pytest.mark.parametrize("op", OPS)
def test_leading_batch_dims_fold_into_frames(op):
    """(B, T, H, W, C) inputs give the same values and gradients as the folded (B*T, H, W, C) ones."""
    fast, plain = OPS[op]
    size, cin, cout, k = ENCODER[3] if op == "conv_s2" else DECODER[1]
    x, w, cotangent = inputs((6, size, size, cin), (k, k, cin, cout), plain, seed=2)
    folded = value_and_grads(fast, x, w, cotangent)
    unfold = lambda a: a.reshape(2, 3, *a.shape[1:])
    got = jax.jit(functools.partial(value_and_grads, fast))(unfold(x), w, unfold(cotangent))
    want = (unfold(folded[0]), unfold(folded[1]), folded[2])
    assert_close(got, want)


@requires_onednn
@pytest.mark.parametrize("op", OPS)
def test_vmap(op):
    """vmap over frames with a shared kernel (one call), and over kernels too (one call per element)."""
    fast, plain = OPS[op]
    size, cin, cout, k = ENCODER[1] if op == "conv_s2" else DECODER[2]
    x, w, cotangent = inputs((4, 2, size, size, cin), (k, k, cin, cout), jax.vmap(plain, (0, None)), seed=3)
    per_group = lambda f, w: lambda x, c: value_and_grads(f, x, w, c)
    got = jax.jit(jax.vmap(per_group(fast, w)))(x, cotangent)
    want = jax.vmap(per_group(plain, w))(x, cotangent)
    assert_close(got, want)
    ws = jnp.stack([w, 2 * w, -w, 0.5 * w])
    both = lambda f: lambda x, w, c: value_and_grads(f, x, w, c)
    assert_close(jax.jit(jax.vmap(both(fast)))(x, ws, cotangent), jax.vmap(both(plain))(x, ws, cotangent))


@requires_onednn
def test_conv_s2_fast_equals_conv_s2_where_it_takes_the_taps_forward():
    """conv_s2_fast (the 'onednn' form's op) on a layer with a 2-pixel output (enc4): the pure-JAX taps
    forward with oneDNN's gradients, with leading batch dims and under vmap over frames and kernels."""
    size, cin, cout, k = ENCODER[0]
    x, w, cotangent = inputs((2, 3, size, size, cin), (k, k, cin, cout), jax.vmap(plain_conv, (0, None)), seed=4)
    assert blocks.few_output_pixels(x, w)
    both = lambda f: lambda x, w, c: value_and_grads(f, x, w, c)
    fast, prim = jax.jit(both(onednn.conv_s2_fast)), jax.jit(both(onednn.conv_s2))
    assert_close(fast(x, w, cotangent), prim(x, w, cotangent))
    ws = jnp.stack([w, -w])
    assert_close(jax.vmap(fast)(x, ws, cotangent), jax.vmap(prim)(x, ws, cotangent))


@requires_onednn
def test_inside_a_jitted_loss_with_other_ops():
    """A small encoder-decoder chain of both ops under jit and grad, as the model uses them."""
    enc = [(4, 4, 1, 8), (4, 4, 8, 16)]
    dec = [(6, 6, 16, 8), (6, 6, 8, 1)]
    keys = jax.random.split(jax.random.key(4), 5)
    params = [jax.random.normal(kk, s) * 0.1 for kk, s in zip(keys, enc + dec)]
    frames = jax.random.uniform(keys[-1], (6, 30, 30, 1))

    def loss(params, conv, tconv):
        h = frames
        for w in params[:2]:
            h = jax.nn.leaky_relu(conv(h, w), 0.2)
        for w in params[2:]:
            h = jnp.tanh(tconv(h, w))
        return jnp.mean(h**2)

    got = jax.jit(jax.value_and_grad(loss), static_argnums=(1, 2))(params, onednn.conv_s2, onednn.conv_transpose_s2)
    want = jax.value_and_grad(loss)(params, plain_conv, plain_conv_transpose)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-5)
    for g, v in zip(got[1], want[1]):
        np.testing.assert_allclose(g, v, atol=1e-5 * float(jnp.max(jnp.abs(v))), rtol=1e-4)


@requires_onednn
def test_concurrent_calls_from_threads():
    """Primitives are shared and scratch space is per thread: calls from several threads at once
    (as XLA may run a layer's two gradients at once) give the sequential results."""
    import concurrent.futures

    size, cin, cout, k = DECODER[2]
    fn = jax.jit(functools.partial(value_and_grads, onednn.conv_transpose_s2))
    args = [inputs((FRAMES + i, size, size, cin), (k, k, cin, cout), plain_conv_transpose, seed=i) for i in range(4)]
    want = [fn(*a) for a in args for _ in range(2)]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda a: jax.block_until_ready(fn(*a)), [a for a in args for _ in range(2)]))
    for g, v in zip(got, want):
        for a, b in zip(g, v):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_import_without_the_extension(tmp_path):
    """Without ext/_onednn_conv.so the module imports, available() is False and info() says why."""
    import shutil

    (tmp_path / "kernels").mkdir()
    (tmp_path / "kernels" / "__init__.py").touch()
    for name in ("blocks.py", "onednn.py"):
        shutil.copy(ROOT / "kernels" / name, tmp_path / "kernels" / name)
    code = "from kernels import onednn; assert not onednn.available(); print(onednn.info())"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "not built" in out.stdout


def test_build_without_a_compiler_prints_one_line_and_exits_0(tmp_path):
    """`make setup` goes on where the extension cannot be built: one line on stderr, exit 0, no .so touched."""
    built = ROOT / "ext" / "_onednn_conv.so"
    before = built.stat().st_mtime_ns if built.exists() else None
    env = {k: v for k, v in os.environ.items() if k != "CXX"} | {"PATH": str(tmp_path)}  # no g++ on PATH
    out = subprocess.run([sys.executable, str(ROOT / "ext" / "build.py")], capture_output=True, text=True, env=env)
    assert out.returncode == 0 and out.stdout == "", out
    assert out.stderr.strip().count("\n") == 0 and "no C++ compiler" in out.stderr, out.stderr
    assert (built.stat().st_mtime_ns if built.exists() else None) == before


def test_auto_falls_back_to_the_pure_jax_forms_with_a_notice(monkeypatch, capsys):
    monkeypatch.setattr(onednn, "available", lambda: False)
    kernels._fallback_notice.cache_clear()
    try:
        assert kernels.resolve("auto") == "blocks"
        assert kernels.resolve("auto") == "blocks"  # the notice once per process
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "oneDNN convolutions unavailable" in err, err
        with pytest.raises(errors.ConfigError, match="conv_impl' got 'onednn', which is unavailable"):
            kernels.resolve("onednn")
    finally:
        kernels._fallback_notice.cache_clear()


def kernel_grad_float64(x: np.ndarray, dy: np.ndarray, k: int, transpose: bool) -> np.ndarray:
    """The kernel gradient of conv_s2 (or conv_transpose_s2) at input x for output cotangent dy, in
    float64 with numpy: tap (i, j) of conv_s2 is sum over frames and output pixels of x[2y + i, 2x + j]
    times dy[y, x]; conv_transpose_s2 maps x[y] to output 2y + (k - 1 - i) through tap i (not flipped)."""
    x, dy = x.astype(np.float64), dy.astype(np.float64)
    a, b = (dy, x) if transpose else (x, dy)  # conv_transpose_s2's gradient is conv_s2's with roles swapped
    oh, ow = b.shape[1:3]
    dw = np.zeros((k, k, a.shape[-1], b.shape[-1]))
    for i in range(k):
        for j in range(k):
            patch = a[:, i : i + 2 * oh - 1 : 2, j : j + 2 * ow - 1 : 2].reshape(-1, a.shape[-1])
            dw[i, j] = patch.T @ b.reshape(-1, b.shape[-1])
    return np.flip(dw, (0, 1)).swapaxes(2, 3) if transpose else dw


# the mmnist encoder's first three convs and the decoder's last two transposed convs at the frames of a
# batch-8 step (800), and the first conv at those of a batch-16 one: a longer float32 sum loses more digits
ACCURACY_CASES = [("conv_s2", 64, 1, 32, 4, 800), ("conv_s2", 31, 32, 64, 4, 800), ("conv_s2", 14, 64, 128, 4, 800)]
ACCURACY_CASES += [("conv_transpose_s2", 13, 64, 32, 6, 800), ("conv_transpose_s2", 30, 32, 1, 6, 800)]
ACCURACY_CASES += [("conv_s2", 64, 1, 32, 4, 1600)]


@requires_onednn
@pytest.mark.parametrize("op,size,cin,cout,k,frames", ACCURACY_CASES)
def test_kernel_gradient_is_within_1e_5_of_float64(op, size, cin, cout, k, frames):
    """The official code's float32 kernel gradients are within about 2e-6 of float64 (relative to the
    largest value); oneDNN's backward-weights primitive, given all frames at once, sums each tap in
    float32 partial sums over hundreds of thousands of pixels and lost an order of magnitude more.
    Inputs as in training: frames in [0, 1] at the first layer, ReLU-like (non-negative) activations
    after it, cotangents of both signs. Measured: at most 4.2e-6 (the xla form 5.4e-6), before the fix 3e-5;
    the bound 1e-5 is half the one asked of this port (2e-5)."""
    fn, plain = OPS[op]
    rng = np.random.default_rng(0)
    x = rng.random((frames, size, size, cin), np.float32)
    if cin > 1:
        x = np.maximum(rng.normal(size=x.shape), 0).astype(np.float32)
    w = (rng.normal(size=(k, k, cin, cout)) / np.sqrt(k * k * cin)).astype(np.float32)
    dy = rng.normal(size=jax.eval_shape(plain, x, w).shape).astype(np.float32)
    _, vjp = jax.vjp(lambda w: fn(jnp.asarray(x), w), jnp.asarray(w))
    (got,) = vjp(jnp.asarray(dy))
    want = kernel_grad_float64(x, dy, k, op == "conv_transpose_s2")
    error = float(np.max(np.abs(np.asarray(got, np.float64) - want)) / np.max(np.abs(want)))
    assert error <= 1e-5, f"{op} {size}x{size}x{cin}->{cout}, {frames} frames: kernel gradient off by {error:.2e}"


@requires_onednn
@pytest.mark.parametrize("op", ["conv_s2", "conv_s2_fast"])
@pytest.mark.parametrize("size,cin,cout", [(31, 32, 64), (14, 64, 128), (6, 128, 256)])
def test_forward_pass_rounds_as_little_as_xla(op, size, cin, cout):
    """The encoder's leaky ReLUs take their derivative from the sign of each conv's float32 output: the
    farther the forward pass rounds from float64, the more outputs near zero land on the wrong side and
    change the whole gradient below them (tests/test_gradients.py). Mean |error| over the outputs'
    standard deviation, measured: XLA's convolutions (32-channel partial sums) 2.0e-7, 2.1e-7, 2.2e-7 on
    these layers, as conv_s2 (the same sums; conv_s2_fast's matmul on the last: 2.2e-7); one float32
    chain over all 16 * Cin products 2.0e-7, 2.9e-7, 4.0e-7."""
    rng = np.random.default_rng(0)
    x = np.maximum(rng.normal(size=(50, size, size, cin)), 0).astype(np.float32)
    w = (rng.normal(size=(4, 4, cin, cout)) / np.sqrt(16 * cin)).astype(np.float32)
    with jax.enable_x64(True):
        want = np.asarray(plain_conv(jnp.asarray(x, jnp.float64), jnp.asarray(w, jnp.float64)))
    got = np.asarray(jax.jit(getattr(onednn, op))(x, w), np.float64)
    error = float(np.mean(np.abs(got - want)) / np.std(want))
    assert error <= 2.5e-7, f"{op} {size}x{size}x{cin}->{cout}: forward pass off float64 by {error:.2e} (mean)"


def test_forward_chunks_split_input_channels_evenly_into_at_most_32():
    assert [onednn.chunks(c) for c in (1, 3, 32, 33, 48, 64, 96, 128, 256)] == [1, 1, 1, 3, 2, 2, 3, 4, 8]
