"""Fast convolutions on XLA:CPU for the encoder's and decoder's stride-2 VALID layers.

The model calls one function, `conv(layer, x, form)`: the layer's own computation (its kernel and
bias, its dtype) by the kernels of `form`, or the layer itself where the kernels do not implement it
(any stride but 2, any padding but VALID, dilation, groups). The forms:

    xla     the nnx layer itself (XLA's convolutions; the fast ones on GPU/TPU)
    blocks  pure-JAX forms with hand-written gradients (kernels/blocks.py)
    onednn  oneDNN primitives behind XLA FFI custom calls (kernels/onednn.py, built from ext/ at set-up)

`resolve(conv_impl)` checks the config key (one of CONV_IMPLS: `auto` or a form) and turns it into a
form once, at set-up: `auto` is `xla` on GPU/TPU and on CPU `onednn` where its extension loads, else
`blocks`. The mathematics and the parameters are the same in every form; the tests compare them.
"""

from __future__ import annotations

import functools
import sys

import jax
from flax import nnx

from errors import ConfigError
from kernels import blocks, onednn

FORMS = ("xla", "blocks", "onednn")
CONV_IMPLS = ("auto", *FORMS)  # the values of config key conv_impl


def resolve(conv_impl: str) -> str:
    """The form that config key `conv_impl` (one of CONV_IMPLS) names on this backend; a ConfigError in
    one line when it names none, or names onednn where its extension does not load."""
    if conv_impl not in CONV_IMPLS:
        raise ConfigError(f"key 'conv_impl' got {conv_impl!r}; valid: {', '.join(CONV_IMPLS)}")
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


def implements(layer: nnx.Module) -> bool:
    """Whether the kernels compute this layer: an nnx.Conv or (untransposed-kernel) nnx.ConvTranspose
    with stride 2, VALID padding, no dilation and one group."""
    ones = (None, 1, (1, 1))
    return (
        isinstance(layer, (nnx.Conv, nnx.ConvTranspose))
        and layer.strides in (2, (2, 2))
        and layer.padding == "VALID"
        and layer.kernel_dilation in ones
        and getattr(layer, "input_dilation", 1) in ones
        and getattr(layer, "feature_group_count", 1) == 1
        and not getattr(layer, "transpose_kernel", False)
    )


def conv(layer: nnx.Conv | nnx.ConvTranspose, x: jax.Array, form: str) -> jax.Array:
    """`layer(x)`, computed by the kernels of `form` where they implement the layer."""
    assert form in FORMS, f"conv form {form!r}; valid: {', '.join(FORMS)}"
    if form == "xla" or not implements(layer):
        return layer(x)
    op = ops(form)[isinstance(layer, nnx.ConvTranspose)]
    dtype = layer.dtype or x.dtype
    y = op(x.astype(dtype), layer.kernel[...].astype(dtype))
    return y if layer.bias is None else y + layer.bias[...].astype(dtype)


def ops(form: str):
    """(conv_s2, conv_transpose_s2) of the form 'blocks' or 'onednn': (N, H, W, Cin) x HWIO kernels."""
    if form == "onednn":
        return onednn.conv_s2_fast, onednn.conv_transpose_s2_fast
    return blocks.conv_s2, blocks.conv_transpose_s2
