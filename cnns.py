"""Convolutional encoder and decoder of the Clockwork VAE.

The encoder maps frames to one input sequence per level of the hierarchy; the decoder
maps the bottom level's states back to frames. Shapes are (B, T, H, W, C) with frames
in [0, 1]; both fold B and T together so the convolutions run over all frames at once,
outside the time scan.

Speed: every conv here is kernel k, stride 2, VALID. XLA:CPU differentiates such convs
badly (the kernel gradient of a stride-2 transposed conv runs ~40x slower than its forward
pass; jax-ml/jax#23783). `conv_s2` and `conv_transpose_s2` therefore carry their own
gradients: the two ops are each other's adjoint in x, and both kernel gradients are a few
large matmuls over shifted strided slices. Forward passes pick the fastest plain form per shape:
for transposed convs with few outputs per pixel (the last layer, 1 or 3 channels) one matmul over
all taps and an overlap-add (also in the `onednn` form, whose primitive is slow there), else the
sub-pixel (phase) form for even transposed kernels (one stride-1 conv to 4*Cout channels,
then depth-to-space), a matmul over all taps when the output is 1 or 2 pixels wide, and for
stride-2 convs with wide inputs a stride-1 conv over 2x2 pixel blocks done as one matmul per
kernel row (its transpose is then the kernel gradient). bench.py's conv profile times each part.
The mathematics and the parameters (ordinary HWIO kernels in nnx.Conv / nnx.ConvTranspose)
are the same in every form. `config.conv_impl` picks the form: `blocks` runs these ops, `onednn`
the same convolutions as oneDNN primitives behind XLA FFI custom calls (onednn.py; TensorFlow's CPU
convolutions; built at set-up), `xla` the plain nnx layers (XLA's own convolutions, the fast ones on
GPU/TPU); `auto` is `xla` on GPU/TPU and on CPU `onednn` where it was built, else `blocks` (see
`conv_form`). The tests compare the forms.
"""

from __future__ import annotations

import functools
import sys

import jax
import jax.numpy as jnp
from flax import nnx
from jax import lax

import onednn
from config import CONV_IMPLS, Config, ConfigError

GLOROT = nnx.initializers.xavier_uniform()  # Keras' glorot_uniform, as in the official code
_DN = ("NHWC", "HWIO", "NHWC")


def conv_form(conv_impl: str) -> str:
    """The conv form that config key `conv_impl` names on this backend: 'blocks' (this module's ops
    with hand-written gradients), 'onednn' (oneDNN primitives, CPU) or 'xla' (plain lax convolutions).
    'auto' is 'xla' on GPU/TPU, and on CPU 'onednn' where its extension loads, else 'blocks'."""
    assert conv_impl in CONV_IMPLS, f"conv_impl {conv_impl!r}; valid: {', '.join(CONV_IMPLS)}"
    if conv_impl == "auto":
        if jax.default_backend() != "cpu":
            return "xla"
        return "onednn" if onednn.available() else _fallback_notice()
    if conv_impl == "onednn" and not onednn.available():
        raise ConfigError(
            f"key 'conv_impl' got 'onednn', which is unavailable here ({onednn.info()}); use auto or blocks"
        )
    return conv_impl


@functools.cache
def _fallback_notice() -> str:
    print(f"note: oneDNN convolutions unavailable ({onednn.info()}); using the pure-JAX forms", file=sys.stderr)
    return "blocks"


def _ops(form: str):
    """(conv_s2, conv_transpose_s2) of a form other than 'xla'."""
    return (onednn.conv_s2, _onednn_conv_transpose_s2) if form == "onednn" else (conv_s2, conv_transpose_s2)


def _onednn_conv_transpose_s2(x: jax.Array, w: jax.Array) -> jax.Array:
    """onednn.conv_transpose_s2, with the taps forward pass where there are few outputs (oneDNN's
    data-gradient primitive runs the decoder's last layer at ~22 GFLOP/s; docs/benchmarks.md)."""
    return _taps_then_onednn(x, w) if _few_outputs(w) else onednn.conv_transpose_s2(x, w)


@jax.custom_vjp
def _taps_then_onednn(x: jax.Array, w: jax.Array) -> jax.Array:
    return _conv_transpose_s2_taps(x, w)


_taps_then_onednn.defvjp(
    lambda x, w: (_conv_transpose_s2_taps(x, w), (x, w)), lambda res, dy: onednn.conv_transpose_s2_grads(*res, dy)
)


def conv_feature_size(config: Config) -> int:
    """Features per frame after the conv stack: 2x2 x 8*filters*m (1024m at filters=32)."""
    return 2 * 2 * 8 * config.filters * config.channels_mult


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
    out, t = (x.shape[1] - k) // 2 + 1, k // 2
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


def _conv_s2_forward(x: jax.Array, w: jax.Array) -> jax.Array:
    k, _, cin, cout = w.shape
    out = (x.shape[1] - k) // 2 + 1
    if out <= 2:  # few output pixels, many channels: one matmul over all k*k taps beats lax.conv
        taps = jnp.concatenate([_tap_row(x, ky, k, out) for ky in range(k)], axis=-1)
        return taps @ w.reshape(k * k * cin, cout)
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


def _few_outputs(w: jax.Array) -> bool:
    """Whether a transposed conv has few output values per input pixel (k*k*Cout; 36 and 108 in the
    decoder's last layer): there `_conv_transpose_s2_taps` beats the conv primitives 2.3-4x."""
    k, _, _, cout = w.shape
    return k * k * cout <= 128


def _conv_transpose_s2_taps(x: jax.Array, w: jax.Array) -> jax.Array:
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
    if _few_outputs(w):
        return _conv_transpose_s2_taps(x, w)
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


def _apply(layer: nnx.Conv | nnx.ConvTranspose, op, h: jax.Array, dtype) -> jax.Array:
    """The layer's kernel and bias through `op` in `dtype` (what the nnx layer computes)."""
    y = op(h.astype(dtype), layer.kernel[...].astype(dtype))
    return y + layer.bias[...].astype(dtype)


class Encoder(nnx.Module):
    """Frames (B, T, 64, 64, C) -> one feature sequence per level, per frame: [(B, T, F)] * levels.

    Level 0 gets the conv features; level l > 0 the running feature after l dense blocks. The
    clockwork (``cwvae.Clock.merge``) then sums each level's features over its k**l-frame ticks."""

    def __init__(self, config: Config, *, rngs: nnx.Rngs):
        self.dtype = jnp.dtype(config.precision)
        self.conv_impl = conv_form(config.conv_impl)  # 'blocks' / 'onednn': a conv_s2; 'xla': the nnx.Conv layers
        width = config.filters * config.channels_mult
        chans = [config.channels, width, 2 * width, 4 * width, 8 * width]
        self.convs = nnx.List(
            [
                nnx.Conv(cin, cout, (4, 4), strides=2, padding="VALID", kernel_init=GLOROT, dtype=self.dtype, rngs=rngs)
                for cin, cout in zip(chans[:-1], chans[1:])
            ]
        )
        feat = conv_feature_size(config)
        self.feat = feat
        self.dense = nnx.List()
        for _ in range(1, config.levels):
            sizes = [feat] + [config.enc_dense_embed_size] * (config.enc_dense_layers - 1) + [feat]
            self.dense.append(
                nnx.List([nnx.Linear(a, b, kernel_init=GLOROT, rngs=rngs) for a, b in zip(sizes[:-1], sizes[1:])])
            )

    def __call__(self, obs: jax.Array) -> list[jax.Array]:
        b, t = obs.shape[:2]
        assert obs.shape[2:4] == (64, 64), f"Encoder expects 64x64 frames, got {obs.shape}"
        h = obs.reshape(b * t, *obs.shape[2:]).astype(self.dtype)
        for conv in self.convs:
            h = conv(h) if self.conv_impl == "xla" else _apply(conv, _ops(self.conv_impl)[0], h, self.dtype)
            h = jax.nn.leaky_relu(h, 0.2)
        h = h.reshape(b, t, -1).astype(jnp.float32)
        assert h.shape[-1] == self.feat, (h.shape, self.feat)
        features = [h]
        for layers in self.dense:
            for layer in layers[:-1]:
                h = jax.nn.relu(layer(h))
            h = layers[-1](h)  # the running per-frame feature, carried to the next level
            features.append(h)
        return features


class Decoder(nnx.Module):
    """Bottom-level states (B, T, D) -> frame means (B, T, 64, 64, C) in [-1, 1] (tanh)."""

    def __init__(self, config: Config, in_features: int, *, rngs: nnx.Rngs):
        self.dtype = jnp.dtype(config.precision)
        self.conv_impl = conv_form(config.conv_impl)  # 'blocks' / 'onednn': a conv_transpose_s2; 'xla': nnx
        width = config.filters * config.channels_mult
        self.feat = 32 * width
        self.dense = nnx.Linear(in_features, self.feat, kernel_init=GLOROT, rngs=rngs)
        chans = [self.feat, 4 * width, 2 * width, width, config.channels]
        kernels = [5, 5, 6, 6]
        self.deconvs = nnx.List(
            [
                nnx.ConvTranspose(
                    cin, cout, (k, k), strides=2, padding="VALID", kernel_init=GLOROT, dtype=self.dtype, rngs=rngs
                )
                for cin, cout, k in zip(chans[:-1], chans[1:], kernels)
            ]
        )

    def _deconv(self, i: int, h: jax.Array) -> jax.Array:
        layer = self.deconvs[i]
        return layer(h) if self.conv_impl == "xla" else _apply(layer, _ops(self.conv_impl)[1], h, self.dtype)

    def __call__(self, states: jax.Array) -> jax.Array:
        b, t = states.shape[:2]
        h = self.dense(states).reshape(b * t, 1, 1, self.feat).astype(self.dtype)
        for i in range(len(self.deconvs) - 1):
            h = jax.nn.leaky_relu(self._deconv(i, h), 0.2)
        h = jnp.tanh(self._deconv(len(self.deconvs) - 1, h).astype(jnp.float32))
        assert h.shape[1:3] == (64, 64), f"Decoder produced {h.shape}, expected 64x64 frames"
        return h.reshape(b, t, *h.shape[1:])
