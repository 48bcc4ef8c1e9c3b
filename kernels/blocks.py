"""Stride-2 VALID convolutions in pure JAX with hand-written gradients: the `blocks` form, fast on XLA:CPU.

XLA:CPU differentiates these convolutions badly (the kernel gradient of a stride-2 transposed conv
runs ~40x slower than its forward pass; jax-ml/jax#23783). `conv_s2` and `conv_transpose_s2` therefore
carry their own gradients: the two ops are each other's adjoint in x, and both kernel gradients are a
few large matmuls over shifted strided slices. Forward passes pick the fastest plain form per shape:
for transposed convs with few outputs per pixel (the decoder's last layer, 1 or 3 channels) one matmul
over all taps and an overlap-add (also used by the `onednn` form, whose primitive is slow there), else
the sub-pixel (phase) form for even transposed kernels (one stride-1 conv to 4*Cout channels, then
depth-to-space), a matmul over all taps when the output is 1 or 2 pixels wide, and for stride-2 convs
with wide inputs a stride-1 conv over 2x2 pixel blocks done as one matmul per kernel row (its transpose
is then the kernel gradient). bench.py's conv profile times each part. The mathematics and the
parameters (ordinary HWIO kernels) are those of lax.conv_general_dilated / lax.conv_transpose.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

_DN = ("NHWC", "HWIO", "NHWC")


def valid_size(size: int, k: int, stride: int = 2) -> int:
    """Output size of a VALID convolution along one axis."""
    return (size - k) // stride + 1


# Stride-2 VALID convolutions with hand-written gradients. Kernels are HWIO (k, k, Cin, Cout).
# conv_s2:           y[i] = sum_j x[2i + j] @ w[j]          (N, H, W, Cin) -> (N, (H-k)//2+1, ., Cout)
# conv_transpose_s2: y[2i + j] += x[i] @ w[k-1-j]           (N, H, W, Cin) -> (N, 2(H-1)+k, ., Cout)
# (the second is lax.conv_transpose / nnx.ConvTranspose with VALID padding, kernel not flipped).


def _flip_swap(w: jax.Array) -> jax.Array:
    """The kernel of the adjoint op: spatially flipped, in/out channels swapped."""
    return jnp.flip(w, (0, 1)).swapaxes(2, 3)


def _tap_row(x: jax.Array, ky: int, k: int, out: int) -> jax.Array:
    """The k taps x[2i + ky, 2j + kx] (kx = 0..k-1) concatenated on channels: (N, out, out, k*C)."""
    end = 2 * out - 1
    return jnp.concatenate([x[:, ky : ky + end : 2, kx : kx + end : 2] for kx in range(k)], axis=-1)


def _correlate_s2(x: jax.Array, y: jax.Array, k: int) -> jax.Array:
    """sum_i x[2i + j] (outer) y[i] for every tap j: the kernel gradient of conv_s2, (k, k, Cx, Cy).
    One matmul per kernel row keeps the slice buffer at k (not k*k) taps."""
    out, cx, cy = y.shape[1], x.shape[-1], y.shape[-1]
    yf = y.reshape(-1, cy)
    rows = [
        jnp.dot(_tap_row(x, ky, k, out).reshape(-1, k * cx).T, yf, preferred_element_type=jnp.float32)
        for ky in range(k)
    ]
    return jnp.stack(rows).reshape(k, k, cx, cy)


def _space_to_depth(x: jax.Array) -> jax.Array:
    """(N, 2m, 2m, C) -> (N, m, m, 4C): each 2x2 block of pixels becomes one pixel, channels (py, px, c)."""
    n, h, w, c = x.shape
    return x.reshape(n, h // 2, 2, w // 2, 2, c).transpose(0, 1, 3, 2, 4, 5).reshape(n, h // 2, w // 2, 4 * c)


def _conv_s2_blocks(x: jax.Array, w: jax.Array) -> jax.Array:
    """conv_s2 for even k as a stride-1 conv over 2x2 pixel blocks, one matmul per kernel row:
    block tap (a, b) holds the 2x2 kernel taps w[2a + py, 2b + px]. Each matmul gives every
    block's product with a whole kernel row; shifted slices of it are summed (overlap-add)."""
    k, _, cin, cout = w.shape
    out, t = valid_size(x.shape[1], k), k // 2
    s = _space_to_depth(x[:, : 2 * out + k - 2, : 2 * out + k - 2])  # (N, m, m, 4Cin), m = out + t - 1
    n, m = s.shape[:2]
    rows = w.reshape(t, 2, t, 2, cin, cout).transpose(0, 1, 3, 4, 2, 5).reshape(t, 4 * cin, t * cout)
    y = 0.0
    for a in range(t):
        z = (s[:, a : a + out].reshape(-1, 4 * cin) @ rows[a]).reshape(n, out, m, t, cout)
        y = y + sum(z[:, :, b : b + out, b] for b in range(t))
    return y


def _use_blocks(k: int, cin: int, out: int) -> bool:
    """Where the block form wins on XLA:CPU (measured on the mmnist layers: ~2x over the stride-2
    conv forward, ~1.4x over `_correlate_s2`): even kernels, wide inputs, outputs over 2 pixels."""
    return k % 2 == 0 and cin >= 32 and out > 2


def _kernel_grad_s2(x: jax.Array, dy: jax.Array, k: int) -> jax.Array:
    """The kernel gradient of conv_s2 at input x and output cotangent dy: (k, k, Cx, Cy)."""
    cin, out, cout = x.shape[-1], dy.shape[1], dy.shape[-1]
    if _use_blocks(k, cin, out):  # the block form is linear in w: its transpose is the gradient
        w = jax.ShapeDtypeStruct((k, k, cin, cout), dy.dtype)
        return jax.linear_transpose(lambda w: _conv_s2_blocks(x, w), w)(dy)[0]
    return _correlate_s2(x, dy, k)


def few_output_pixels(x: jax.Array, w: jax.Array) -> bool:
    """Whether conv_s2's output is at most 2 pixels wide (the encoder's last layer): there, with many
    channels, `conv_s2_taps` beats lax.conv and oneDNN's primitive."""
    return valid_size(x.shape[-3], w.shape[0]) <= 2


def conv_s2_taps(x: jax.Array, w: jax.Array) -> jax.Array:
    """conv_s2 as one matmul of all k*k taps of every output pixel with the kernel (N, H, W, Cin)."""
    k, _, cin, cout = w.shape
    out = valid_size(x.shape[1], k)
    taps = jnp.concatenate([_tap_row(x, ky, k, out) for ky in range(k)], axis=-1)
    return taps @ w.reshape(k * k * cin, cout)


def _conv_s2_forward(x: jax.Array, w: jax.Array) -> jax.Array:
    k, _, cin, cout = w.shape
    out = valid_size(x.shape[1], k)
    if few_output_pixels(x, w):
        return conv_s2_taps(x, w)
    if _use_blocks(k, cin, out):
        return _conv_s2_blocks(x, w)
    return lax.conv_general_dilated(x, w, (2, 2), "VALID", dimension_numbers=_DN)


def _phase_kernel(w: jax.Array) -> jax.Array:
    """The stride-1 kernel (k/2, k/2, Cin, 4*Cout) of the sub-pixel form of conv_transpose_s2 (k even):
    output phase (py, px) at pixel m is sum_t x[m - t] @ w[k-1 - 2t - p]."""
    k, _, cin, cout = w.shape
    t = k // 2
    v = jnp.flip(w, (0, 1)).reshape(t, 2, t, 2, cin, cout)  # v[ty, py, tx, px] = w[k-1 - 2ty - py, ...]
    v = jnp.flip(v, (0, 2))  # correlation order: tap s pairs x[m - (t-1) + s] with t-1-s
    return v.transpose(0, 2, 4, 1, 3, 5).reshape(t, t, cin, 4 * cout)


def few_outputs(w: jax.Array) -> bool:
    """Whether a transposed conv has few output values per input pixel (k*k*Cout; 36 and 108 in the
    decoder's last layer): there `conv_transpose_s2_taps` beats the conv primitives 2.3-4x."""
    k, _, _, cout = w.shape
    return k * k * cout <= 128


def conv_transpose_s2_taps(x: jax.Array, w: jax.Array) -> jax.Array:
    """conv_transpose_s2 as one matmul of every input pixel with all k*k taps, then an overlap-add:
    input pixel i adds tap j of the flipped kernel to output pixel 2i + j. Written j = 2a + p, output
    phase p at pixel m sums the taps (a, p) of input pixels m - a, a = 0..k/2-1: (k/2)^2 shifted
    slices per phase. oneDNN and XLA run the decoder's last layer (32 -> 1 or 3 channels) as a conv
    at ~20-40 GFLOP/s; this form is a matmul and one pass over its output."""
    n, h, _, cin = x.shape
    k, _, _, cout = w.shape
    t = (k + 1) // 2  # an odd kernel gets a zero tap: output one row/column too long, cropped below
    v = jnp.pad(jnp.flip(w, (0, 1)), ((0, 2 * t - k), (0, 2 * t - k), (0, 0), (0, 0)))
    y = (x.reshape(-1, cin) @ v.transpose(2, 0, 1, 3).reshape(cin, -1)).reshape(n, h, h, t, 2, t, 2, cout)
    m = h + t - 1
    pad = lambda a, b: ((0, 0), (a, t - 1 - a), (b, t - 1 - b), (0, 0), (0, 0), (0, 0))
    phases = sum(jnp.pad(y[:, :, :, a, :, b], pad(a, b)) for a in range(t) for b in range(t))  # (n, m, m, 2, 2, C)
    out = phases.transpose(0, 1, 3, 2, 4, 5).reshape(n, 2 * m, 2 * m, cout)
    size = 2 * (h - 1) + k
    return out[:, :size, :size]


def _conv_transpose_s2_forward(x: jax.Array, w: jax.Array) -> jax.Array:
    n, h, _, cin = x.shape
    k, _, _, cout = w.shape
    if few_outputs(w):
        return conv_transpose_s2_taps(x, w)
    if h == 1:  # one pixel in: the output is its outer product with the kernel
        wm = jnp.flip(w, (0, 1)).transpose(2, 0, 1, 3).reshape(cin, k * k * cout)
        return (x.reshape(n, cin) @ wm).reshape(n, k, k, cout)
    if k % 2:  # odd kernels would waste taps in the sub-pixel form
        return lax.conv_transpose(x, w, (2, 2), "VALID", dimension_numbers=_DN)
    # Sub-pixel form: one stride-1 conv gives the 4 output phases as channels, then depth-to-space.
    t = k // 2
    y = lax.conv_general_dilated(x, _phase_kernel(w), (1, 1), [(t - 1, t - 1)] * 2, dimension_numbers=_DN)
    m = y.shape[1]  # = h + t - 1, and 2m = 2(h-1) + k
    return y.reshape(n, m, m, 2, 2, cout).transpose(0, 1, 3, 2, 4, 5).reshape(n, 2 * m, 2 * m, cout)


@jax.custom_vjp
def conv_s2(x: jax.Array, w: jax.Array) -> jax.Array:
    """Stride-2 VALID convolution (N, H, W, Cin) x (k, k, Cin, Cout), fast gradients on CPU."""
    return _conv_s2_forward(x, w)


def _conv_s2_fwd(x, w):
    return _conv_s2_forward(x, w), (x, w)


def _conv_s2_bwd(res, dy):
    x, w = res
    dx = conv_transpose_s2(dy, _flip_swap(w))  # may be one row/column short of x (odd sizes)
    dx = jnp.pad(dx, ((0, 0), (0, x.shape[1] - dx.shape[1]), (0, x.shape[2] - dx.shape[2]), (0, 0)))
    return dx, _kernel_grad_s2(x, dy, w.shape[0]).astype(w.dtype)


conv_s2.defvjp(_conv_s2_fwd, _conv_s2_bwd)


@jax.custom_vjp
def conv_transpose_s2(x: jax.Array, w: jax.Array) -> jax.Array:
    """Stride-2 VALID transposed convolution, as nnx.ConvTranspose; fast gradients on CPU."""
    return _conv_transpose_s2_forward(x, w)


def _conv_transpose_s2_fwd(x, w):
    return _conv_transpose_s2_forward(x, w), (x, w)


def _conv_transpose_s2_bwd(res, dy):
    x, w = res
    dx = conv_s2(dy, _flip_swap(w))
    dw = jnp.flip(_kernel_grad_s2(dy, x, w.shape[0]).swapaxes(2, 3), (0, 1))
    return dx, dw.astype(w.dtype)


conv_transpose_s2.defvjp(_conv_transpose_s2_fwd, _conv_transpose_s2_bwd)
