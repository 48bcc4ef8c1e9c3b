"""Convolutional encoder and decoder of the Clockwork VAE.

The encoder maps frames to one input sequence per level of the hierarchy; the decoder maps the
bottom level's states back to frames. Shapes are (B, T, H, W, C) with frames in [0, 1]; both fold
B and T together so the convolutions run over all frames at once, outside the time scan.

Every convolution goes through `kernels.conv(layer, x, form)`: on CPU the stride-2 VALID layers
below run as fast hand-written or oneDNN kernels, computing exactly what the nnx layer computes (a
layer of any other kind runs as itself). `form` is an attribute of each module, chosen once at set-up
(`use_kernels`), so a researcher can edit the layers here freely.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

import kernels

GLOROT = nnx.initializers.xavier_uniform()  # Keras' glorot_uniform, as in the official code


def use_kernels(model: nnx.Module, form: str) -> nnx.Module:
    """Run every Encoder and Decoder inside `model` with the convolution kernels of `form`
    (`kernels.resolve(config.conv_impl)`); the parameters are unchanged."""
    for _, module in nnx.iter_modules(model):
        if isinstance(module, (Encoder, Decoder)):
            module.form = form
    return model


class Encoder(nnx.Module):
    """Frames (B, T, 64, 64, C) -> one feature sequence per level, per frame: [(B, T, F)] * levels.
    Four convolutions (kernel 4, stride 2, VALID, leaky ReLU) take 64x64 frames to 2x2x(8 filters m)
    features, F = 1024m; above level 0, dense blocks carry a running feature from level to level.

    Level 0 gets the conv features; level l > 0 the running feature after l dense blocks. The
    clockwork (``cwvae.Clock.merge``) then sums each level's features over its k**l-frame ticks."""

    form = "xla"  # the convolution kernels (see use_kernels)

    def __init__(self, config, *, rngs: nnx.Rngs):
        self.dtype = jnp.dtype(config.precision)
        self.frame_size = config.frame_size
        width = config.filters * config.channels_mult
        chans = [config.channels, width, 2 * width, 4 * width, 8 * width]
        self.convs = nnx.List(
            [
                nnx.Conv(cin, cout, (4, 4), strides=2, padding="VALID", kernel_init=GLOROT, dtype=self.dtype, rngs=rngs)
                for cin, cout in zip(chans[:-1], chans[1:])
            ]
        )
        frame = jax.ShapeDtypeStruct((1, config.frame_size, config.frame_size, config.channels), self.dtype)
        feat = self.feature_size = jax.eval_shape(self._convs, frame).size  # 1024m for 64x64 frames
        self.dense = nnx.List()
        for _ in range(1, config.levels):
            sizes = [feat] + [config.enc_dense_embed_size] * (config.enc_dense_layers - 1) + [feat]
            self.dense.append(
                nnx.List([nnx.Linear(a, b, kernel_init=GLOROT, rngs=rngs) for a, b in zip(sizes[:-1], sizes[1:])])
            )

    def _convs(self, frames: jax.Array) -> jax.Array:
        """(N, H, W, C) frames -> (N, h, w, c) conv features."""
        h = frames.astype(self.dtype)
        for conv in self.convs:
            h = jax.nn.leaky_relu(kernels.conv(conv, h, self.form), 0.2)
        return h

    def __call__(self, obs: jax.Array) -> list[jax.Array]:
        b, t = obs.shape[:2]
        size = self.frame_size
        assert obs.shape[2:4] == (size, size), f"Encoder expects {size}x{size} frames, got {obs.shape}"
        h = self._convs(obs.reshape(b * t, *obs.shape[2:])).reshape(b, t, -1).astype(jnp.float32)
        assert h.shape[-1] == self.feature_size, (h.shape, self.feature_size)
        features = [h]
        for layers in self.dense:
            for layer in layers[:-1]:
                h = jax.nn.relu(layer(h))
            h = layers[-1](h)  # the running per-frame feature, carried to the next level
            features.append(h)
        return features


class Decoder(nnx.Module):
    """Bottom-level states (B, T, D) -> frame means (B, T, 64, 64, C) in [-1, 1] (tanh)."""

    form = "xla"  # the convolution kernels (see use_kernels)

    def __init__(self, config, in_features: int, *, rngs: nnx.Rngs):
        self.dtype = jnp.dtype(config.precision)
        self.frame_size = config.frame_size
        width = config.filters * config.channels_mult
        self.feat = 32 * width
        self.dense = nnx.Linear(in_features, self.feat, kernel_init=GLOROT, rngs=rngs)
        chans = [self.feat, 4 * width, 2 * width, width, config.channels]
        sizes = [5, 5, 6, 6]  # kernel sizes: 1 -> 5 -> 13 -> 30 -> 64 pixels
        # The last layer, which draws the frame, stays float32 under bfloat16: rounding the predicted
        # frame to bf16 cost the 300-step demo 0.11-0.15 of open-loop SSIM at equal loss.
        dtypes = [self.dtype] * (len(sizes) - 1) + [jnp.float32]
        self.deconvs = nnx.List(
            [
                nnx.ConvTranspose(
                    cin, cout, (k, k), strides=2, padding="VALID", kernel_init=GLOROT, dtype=dtype, rngs=rngs
                )
                for cin, cout, k, dtype in zip(chans[:-1], chans[1:], sizes, dtypes)
            ]
        )

    def _deconv(self, i: int, h: jax.Array) -> jax.Array:
        return kernels.conv(self.deconvs[i], h, self.form)

    def __call__(self, states: jax.Array) -> jax.Array:
        b, t = states.shape[:2]
        h = self.dense(states).reshape(b * t, 1, 1, self.feat).astype(self.dtype)
        for i in range(len(self.deconvs) - 1):
            h = jax.nn.leaky_relu(self._deconv(i, h), 0.2)
        h = jnp.tanh(self._deconv(len(self.deconvs) - 1, h.astype(jnp.float32)))
        size = self.frame_size
        assert h.shape[1:3] == (size, size), f"Decoder produced {h.shape}, expected {size}x{size} frames"
        return h.reshape(b, t, *h.shape[1:])
