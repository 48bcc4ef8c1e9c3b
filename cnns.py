"""Convolutional encoder and decoder of the Clockwork VAE.

The encoder maps frames to one input sequence per level of the hierarchy; the decoder
maps the bottom level's states back to frames. Shapes are (B, T, H, W, C) with frames
in [0, 1]; both fold B and T together so the convolutions run over all frames at once,
outside the time scan.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from config import Config

GLOROT = nnx.initializers.xavier_uniform()  # Keras' glorot_uniform, as in the official code


def conv_feature_size(config: Config) -> int:
    """Features per frame after the conv stack: 2x2 x 8*filters*m (1024m at filters=32)."""
    return 2 * 2 * 8 * config.filters * config.channels_mult


def merge_time(x: jax.Array, factor: int) -> jax.Array:
    """Sum windows of `factor` steps along T, padding T with zeros: (B, T, F) -> (B, ceil(T/factor), F)."""
    b, t, f = x.shape
    pad = -t % factor
    x = jnp.pad(x, ((0, 0), (0, pad), (0, 0)))
    return x.reshape(b, (t + pad) // factor, factor, f).sum(axis=2)


class Encoder(nnx.Module):
    """Frames (B, T, 64, 64, C) -> one input sequence per level: [(B, ceil(T / k**l), F)]."""

    def __init__(self, config: Config, *, rngs: nnx.Rngs):
        self.levels = config.levels
        self.factor = config.tmp_abs_factor
        self.dtype = jnp.dtype(config.precision)
        width = config.filters * config.channels_mult
        chans = [config.channels, width, 2 * width, 4 * width, 8 * width]
        self.convs = nnx.List(
            [
                nnx.Conv(
                    cin, cout, (4, 4), strides=2, padding="VALID", kernel_init=GLOROT, dtype=self.dtype, rngs=rngs
                )
                for cin, cout in zip(chans[:-1], chans[1:])
            ]
        )
        feat = conv_feature_size(config)
        self.feat = feat
        self.dense = nnx.List()
        for _ in range(1, config.levels):
            sizes = [feat] + [config.enc_dense_embed_size] * (config.enc_dense_layers - 1) + [feat]
            self.dense.append(
                nnx.List(
                    [nnx.Linear(a, b, kernel_init=GLOROT, rngs=rngs) for a, b in zip(sizes[:-1], sizes[1:])]
                )
            )

    def __call__(self, obs: jax.Array) -> list[jax.Array]:
        b, t = obs.shape[:2]
        assert obs.shape[2:4] == (64, 64), f"Encoder expects 64x64 frames, got {obs.shape}"
        h = obs.reshape(b * t, *obs.shape[2:]).astype(self.dtype)
        for conv in self.convs:
            h = jax.nn.leaky_relu(conv(h), 0.2)
        h = h.reshape(b, t, -1).astype(jnp.float32)
        assert h.shape[-1] == self.feat, (h.shape, self.feat)
        inputs = [h]
        for level, layers in enumerate(self.dense, start=1):
            for layer in layers[:-1]:
                h = jax.nn.relu(layer(h))
            h = layers[-1](h)  # the running per-frame feature, carried to the next level
            inputs.append(merge_time(h, self.factor**level))
        return inputs


class Decoder(nnx.Module):
    """Bottom-level states (B, T, D) -> frame means (B, T, 64, 64, C) in [-1, 1] (tanh)."""

    def __init__(self, config: Config, in_features: int, *, rngs: nnx.Rngs):
        self.dtype = jnp.dtype(config.precision)
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

    def __call__(self, states: jax.Array) -> jax.Array:
        b, t = states.shape[:2]
        h = self.dense(states).reshape(b * t, 1, 1, self.feat).astype(self.dtype)
        for deconv in self.deconvs[:-1]:
            h = jax.nn.leaky_relu(deconv(h), 0.2)
        h = jnp.tanh(self.deconvs[-1](h).astype(jnp.float32))
        assert h.shape[1:3] == (64, 64), f"Decoder produced {h.shape}, expected 64x64 frames"
        return h.reshape(b, t, *h.shape[1:])


def level_lengths(seq_len: int, levels: int, factor: int) -> list[int]:
    """Steps per level for a clip of seq_len frames: ceil(T / k**l)."""
    return [math.ceil(seq_len / factor**level) for level in range(levels)]
