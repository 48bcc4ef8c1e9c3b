"""oneDNN stride-2 VALID convolutions for XLA:CPU, through XLA FFI custom calls (ext/onednn_conv.cc).

`conv_s2(x, w)` and `conv_transpose_s2(x, w)` have the signatures and semantics of blocks.conv_s2 and
blocks.conv_transpose_s2: NHWC activations (any leading dims), HWIO kernels, stride 2, VALID; the
transposed conv is lax.conv_transpose with VALID padding and the kernel not flipped. Forward pass,
input gradient and kernel gradient are each one oneDNN primitive (convolution forward, backward data,
backward weights; the transposed conv uses the same three with roles swapped), as in TensorFlow's CPU
convs; conv_s2's forward pass adds the partial sums of input-channel chunks (see `chunks`). fp32 only
(other dtypes are cast), CPU only, first-order gradients only. `conv_s2_fast` and `conv_transpose_s2_fast`,
what the 'onednn' form runs, take the forward pass from the pure-JAX forms on the layers where those win.

The extension is built by `python ext/build.py` (ext/_onednn_conv.so). Where it is missing or cannot be
loaded, importing this module still works and `available()` is False.
"""

from __future__ import annotations

import ctypes
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.custom_batching import custom_vmap

from kernels import blocks

LIBRARY = pathlib.Path(__file__).resolve().parent.parent / "ext" / "_onednn_conv.so"
_TARGETS = {"fwd": "OnednnConvFwd", "bwd_data": "OnednnConvBwdData", "bwd_weights": "OnednnConvBwdWeights"}
_lib = None
_error = "not loaded"


def _load() -> None:
    global _lib, _error
    if not LIBRARY.is_file():
        _error = f"{LIBRARY} not built (python ext/build.py)"
        return
    try:
        dnnl = pathlib.Path(sys.prefix) / "lib" / "libdnnl.so.3"
        if dnnl.exists():  # where the .so's rpath is stale (a moved environment)
            ctypes.CDLL(str(dnnl), mode=ctypes.RTLD_GLOBAL)
        lib = ctypes.CDLL(str(LIBRARY))
        for name, symbol in _TARGETS.items():
            jax.ffi.register_ffi_target(f"onednn_conv_{name}", jax.ffi.pycapsule(getattr(lib, symbol)), platform="cpu")
        lib.OnednnConvInfo.restype = ctypes.c_char_p
    except (OSError, AttributeError, ValueError, RuntimeError) as err:
        _error = f"{type(err).__name__}: {err}"
        return
    _lib, _error = lib, ""


def available() -> bool:
    """Whether the oneDNN ops can run: the extension loads (once, on first use) and JAX's default
    backend is the CPU."""
    if _error == "not loaded":
        _load()
    return _lib is not None and jax.default_backend() == "cpu"


def info() -> str:
    """oneDNN's version and CPU ISA ("3.2.0 avx512_core"), or why the extension is unavailable."""
    available()
    return _lib.OnednnConvInfo().decode() if _lib is not None else _error


def _ffi(name: str, out_shape: tuple, *args: jax.Array, flip_swap: bool) -> jax.Array:
    if not available():
        raise RuntimeError(f"onednn: extension unavailable: {_error}")
    call = jax.ffi.ffi_call(
        f"onednn_conv_{name}",
        jax.ShapeDtypeStruct(out_shape, jnp.float32),
        vmap_method="sequential",  # not reached: the custom_vmap rules below batch these calls
    )
    return call(*[a.astype(jnp.float32) for a in args], flip_swap=np.int32(flip_swap))


# The three primitives of convolution C (stride 2, VALID). With flip_swap the kernel buffer is the
# transposed conv's kernel v (k, k, Co, Ci) and C's kernel is flip(v, (0, 1)).swapaxes(2, 3).
# Activations keep their leading dims (C++ folds them into N). Under vmap, fwd and bwd_data with the
# kernel unbatched take the vmapped axis as one more leading dim (one oneDNN call); everything else
# (a batched kernel, any batched bwd_weights) runs one call per element (lax.map).


def _call(name: str, flip_swap: bool, out_shape, a: jax.Array, b: jax.Array) -> jax.Array:
    """Primitive `name` on (a, b); out_shape(a.shape, b.shape) gives the result's shape."""

    @custom_vmap
    def op(a, b):
        return _ffi(name, out_shape(a.shape, b.shape), a, b, flip_swap=flip_swap)

    @op.def_vmap
    def _rule(axis_size, in_batched, a, b):
        if name != "bwd_weights" and not in_batched[1]:
            return op(a, b), in_batched[0]
        a, b = [x if batched else jnp.broadcast_to(x, (axis_size, *x.shape)) for x, batched in zip((a, b), in_batched)]
        return lax.map(lambda ab: op(*ab), (a, b)), True

    return op(a, b)


# Input channels per float32 partial sum of conv_s2's forward pass: at most 32 (16 taps x 32 = 512
# products for the model's kernel 4).
CHUNK_CHANNELS = 32


def chunks(cin: int) -> int:
    """How many input-channel chunks conv_s2's forward pass sums apart before adding them in order: the
    fewest that split `cin` evenly into chunks of at most CHUNK_CHANNELS.

    Why: each encoder conv feeds a leaky ReLU, whose derivative is taken from the sign of the float32
    output. An output within its rounding error of zero can land on the other side of zero than the
    exact sum, and the gradients of that conv and of every conv below it then change by that unit's
    share (0.8 of its input gradient): in the whole model's float32 gradient against float64, 5e-4 of
    a tensor's largest value and more on the first three convs (tests/test_gradients.py). One oneDNN
    primitive sums all 16 * Cin products of an output in one float32 chain, 1.35x (enc3) and 1.8x
    (enc4) as far from float64 as XLA's CPU convolutions, which add the partial sums of 32-channel
    chunks; so more of its outputs land on the wrong side. Summed in these chunks, the forward pass
    equals XLA's bit for bit on every mmnist encoder layer (AVX-512, jax 0.10.2, oneDNN 3.2)."""
    return next(g for g in range(-(-cin // CHUNK_CHANNELS), cin + 1) if cin % g == 0)


@jax.custom_vjp
def conv_s2(x: jax.Array, w: jax.Array) -> jax.Array:
    """Stride-2 VALID convolution (..., H, W, Cin) x (k, k, Cin, Cout) -> (..., (H-k)//2+1, ., Cout).
    The forward pass is one grouped oneDNN primitive that returns the `chunks(Cin)` partial sums side by
    side (..., G * Cout), added here in order (XLA fuses the adds into the layer's bias and activation)."""
    k, cout, g = w.shape[0], w.shape[3], chunks(w.shape[2])
    shape = lambda xs, ws: (*xs[:-3], blocks.valid_size(xs[-3], k), blocks.valid_size(xs[-2], k), g * ws[3])
    parts = _call("fwd", False, shape, x, w)
    y = parts[..., :cout]
    for i in range(1, g):
        y = y + parts[..., i * cout : (i + 1) * cout]
    return y.astype(x.dtype)


def _conv_s2_fwd(x, w):
    return conv_s2(x, w), (x, w)


def _conv_s2_bwd(res, dy):
    x, w = res
    h, wd = x.shape[-3:-1]
    dx = _call("bwd_data", False, lambda ds, ws: (*ds[:-3], h, wd, ws[2]), dy, w)
    dw = _call("bwd_weights", False, lambda xs, ds: w.shape, x, dy)
    return dx.astype(x.dtype), dw.astype(w.dtype)


conv_s2.defvjp(_conv_s2_fwd, _conv_s2_bwd)


@jax.custom_vjp
def conv_transpose_s2(x: jax.Array, w: jax.Array) -> jax.Array:
    """Stride-2 VALID transposed convolution (..., H, W, Cin) x (k, k, Cin, Cout) -> (..., 2(H-1)+k, ., Cout),
    as lax.conv_transpose / nnx.ConvTranspose (kernel not flipped)."""
    k = w.shape[0]
    shape = lambda xs, ws: (*xs[:-3], 2 * (xs[-3] - 1) + k, 2 * (xs[-2] - 1) + k, ws[3])
    return _call("bwd_data", True, shape, x, w).astype(x.dtype)


def _conv_transpose_s2_fwd(x, w):
    return conv_transpose_s2(x, w), (x, w)


def conv_transpose_s2_grads(x: jax.Array, w: jax.Array, dy: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The input and kernel gradients of conv_transpose_s2 at (x, w) for output cotangent dy."""
    h, wd = x.shape[-3:-1]
    dx = _call("fwd", True, lambda ds, ws: (*ds[:-3], h, wd, ws[2]), dy, w)
    dw = _call("bwd_weights", True, lambda ds, xs: w.shape, dy, x)
    return dx.astype(x.dtype), dw.astype(w.dtype)


conv_transpose_s2.defvjp(_conv_transpose_s2_fwd, lambda res, dy: conv_transpose_s2_grads(*res, dy))


def conv_s2_fast(x: jax.Array, w: jax.Array) -> jax.Array:
    """conv_s2 as the 'onednn' form runs it: where the output is at most 2 pixels wide (the encoder's
    last layer) the forward pass is the pure-JAX matmul over all k*k taps, which beats the primitive there
    even before its chunked sum (and XLA's matmul sums in blocks, as accurately); the gradients are
    oneDNN's in every case."""
    return _taps_s2_then_onednn(x, w) if blocks.few_output_pixels(x, w) else conv_s2(x, w)


def _conv_s2_taps(x: jax.Array, w: jax.Array) -> jax.Array:
    y = blocks.conv_s2_taps(x.reshape(-1, *x.shape[-3:]), w)  # leading dims folded into frames
    return y.reshape(*x.shape[:-3], *y.shape[1:])


@jax.custom_vjp
def _taps_s2_then_onednn(x, w):
    return _conv_s2_taps(x, w)


_taps_s2_then_onednn.defvjp(lambda x, w: (_conv_s2_taps(x, w), (x, w)), _conv_s2_bwd)


def conv_transpose_s2_fast(x: jax.Array, w: jax.Array) -> jax.Array:
    """conv_transpose_s2 as the 'onednn' form runs it: where the layer has few outputs per input pixel
    (the decoder's last layer) the forward pass is the pure-JAX taps form, which beats the primitive
    there; the gradients are oneDNN's in every case."""
    return _taps_then_onednn(x, w) if blocks.few_outputs(w) else conv_transpose_s2(x, w)


@jax.custom_vjp
def _taps_then_onednn(x, w):
    return blocks.conv_transpose_s2_taps(x, w)


_taps_then_onednn.defvjp(
    lambda x, w: (blocks.conv_transpose_s2_taps(x, w), (x, w)), lambda res, dy: conv_transpose_s2_grads(*res, dy)
)
