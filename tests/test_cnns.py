"""Encoder/decoder and the convolution kernels: the fast stride-2 conv ops equal the plain lax/nnx
convs (forward and gradients in inputs and kernels) for every layer shape the model uses, through the
whole encoder and decoder in every form, and for layers the kernels do not implement; output shapes."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import mmnist
from flax import nnx
from jax import lax

import cnns
import cwvae
import kernels
from kernels import blocks, onednn

DN = ("NHWC", "HWIO", "NHWC")
FRAMES = 3


def plain_conv(x, w):
    return lax.conv_general_dilated(x, w, (2, 2), "VALID", dimension_numbers=DN)


def plain_conv_transpose(x, w):
    return lax.conv_transpose(x, w, (2, 2), "VALID", dimension_numbers=DN)


def value_and_grads(op, x, w, cotangent):
    """op(x, w) and the gradients of <op(x, w), cotangent> in x and w."""
    loss = lambda x, w: jnp.sum(op(x, w) * cotangent)
    return op(x, w), *jax.grad(loss, argnums=(0, 1))(x, w)


def assert_ops_agree(fast, plain, x_shape, w_shape):
    kx, kw, kc = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(kx, x_shape)
    w = jax.random.normal(kw, w_shape) / np.sqrt(np.prod(w_shape[:3]))
    cotangent = jax.random.normal(kc, plain(x, w).shape)
    for name, got, want in zip(
        ("output", "input grad", "kernel grad"),
        value_and_grads(jax.jit(fast), x, w, cotangent),
        value_and_grads(plain, x, w, cotangent),
    ):
        assert got.shape == want.shape, (name, got.shape, want.shape)
        scale = float(jnp.max(jnp.abs(want)))
        np.testing.assert_allclose(got, want, atol=1e-5 * scale, rtol=1e-4, err_msg=name)


# (input size, Cin, Cout) of the mmnist encoder's four k=4 convs, and the same with 3 channels
ENCODER_LAYERS = [(64, 1, 32), (64, 3, 32), (31, 32, 64), (14, 64, 128), (6, 128, 256)]
# (input size, Cin, Cout, k) of the decoder's four transposed convs, and the last with 3 channels
DECODER_LAYERS = [(1, 1024, 128, 5), (5, 128, 64, 5), (13, 64, 32, 6), (30, 32, 1, 6), (30, 32, 3, 6)]


# conv_s2 also computes the decoder's input gradients: (30, 32, 64, 6) and (13, 64, 128, 5)
CONV_LAYERS = [(size, cin, cout, 4) for size, cin, cout in ENCODER_LAYERS] + [(30, 32, 64, 6), (13, 64, 128, 5)]


# the ops each form other than 'xla' runs (kernels.ops): 'onednn' mixes oneDNN with a pure-JAX forward
FORMS = ["blocks"] + (["onednn"] if onednn.available() else [])


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("size,cin,cout,k", CONV_LAYERS)
def test_conv_s2_matches_lax_conv(form, size, cin, cout, k):
    assert_ops_agree(kernels.ops(form)[0], plain_conv, (FRAMES, size, size, cin), (k, k, cin, cout))


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("size,cin,cout,k", DECODER_LAYERS)
def test_conv_transpose_s2_matches_lax_conv_transpose(form, size, cin, cout, k):
    op = kernels.ops(form)[1]
    assert_ops_agree(op, plain_conv_transpose, (FRAMES, size, size, cin), (k, k, cin, cout))


@pytest.mark.parametrize("size,cin,cout,k", [(30, 32, 1, 6), (30, 32, 3, 6), (5, 8, 3, 5), (4, 8, 2, 3), (1, 8, 3, 5)])
def test_taps_form_of_conv_transpose_matches_lax_for_even_and_odd_kernels(size, cin, cout, k):
    assert_ops_agree(blocks.conv_transpose_s2_taps, plain_conv_transpose, (FRAMES, size, size, cin), (k, k, cin, cout))


def model_config(*argv) -> cwvae.ModelConfig:
    return cwvae.ModelConfig.from_config(mmnist(*argv))


def encoder_and_decoder(form="xla"):
    """A narrow encoder and decoder of the mmnist config with 3 channels, in conv form `form`, and their inputs."""
    config = model_config("--dataset", "mazes", "--filters", "8")  # 3 channels
    obs = jax.random.uniform(jax.random.key(1), (2, 3, 64, 64, 3))
    states = jax.random.normal(jax.random.key(2), (2, 3, 20))
    modules = [cnns.Encoder(config, rngs=nnx.Rngs(0)), cnns.Decoder(config, 20, rngs=nnx.Rngs(0))]
    return [(cnns.use_kernels(module, form), x) for module, x in zip(modules, (obs, states))]


def values_and_grads(module, x):
    """The module's outputs' sum of sines and its gradients in the parameters and the input, jitted."""
    graph, params = nnx.split(module)
    loss = lambda p, x: sum(jnp.sum(jnp.sin(o)) for o in jax.tree.leaves(nnx.merge(graph, p)(x)))  # noqa: E731
    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(params, x)


def assert_trees_close(got, want):
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(a, b, atol=2e-4 * float(jnp.max(jnp.abs(b))) + 1e-6, rtol=1e-3)


@pytest.mark.parametrize("part", [0, 1], ids=["encoder", "decoder"])
def test_conv_impl_forms_give_equal_values_and_gradients(part):
    results = []
    for form in ["xla", *FORMS]:
        module, x = encoder_and_decoder(form)[part]
        graph, params = nnx.split(module)
        traced = str(jax.make_jaxpr(lambda p, x, g=graph: nnx.merge(g, p)(x))(params, x))
        assert ("custom_vjp_call" in traced) == (form != "xla"), f"{form}: the module's conv form is not used"
        assert ("onednn_conv" in traced) == (form == "onednn"), f"{form}: the module's conv form is not used"
        results.append(values_and_grads(module, x))
    for got in results[1:]:
        assert_trees_close(got, results[0])


@pytest.mark.parametrize("change", ["stride1", "same"])
def test_encoder_layers_the_kernels_do_not_implement_run_as_the_layer_in_every_form(change):
    """Edit an encoder conv as a researcher might (stride 1, or SAME padding): every form computes what
    the edited layer computes, values and gradients, as 'xla' (the layer itself) does."""
    config = model_config("--dataset", "mazes", "--filters", "8", "--levels", "1")  # no dense layers to resize
    obs = jax.random.uniform(jax.random.key(1), (2, 3, 64, 64, 3))
    strides, padding = (1, "VALID") if change == "stride1" else (2, "SAME")
    results = []
    for form in ["xla", *FORMS]:
        encoder = cnns.use_kernels(cnns.Encoder(config, rngs=nnx.Rngs(0)), form)
        assert kernels.implements(encoder.convs[1])
        encoder.convs[1] = nnx.Conv(8, 16, (4, 4), strides=strides, padding=padding, rngs=nnx.Rngs(3))
        assert not kernels.implements(encoder.convs[1])
        frame = jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32)
        encoder.feature_size = jax.eval_shape(encoder._convs, frame).size
        results.append(values_and_grads(encoder, obs))
    assert results[0][1][1].shape == obs.shape
    for got in results[1:]:
        assert_trees_close(got, results[0])


def test_conv_impl_auto_is_onednn_on_cpu_where_built_else_blocks():
    assert jax.default_backend() == "cpu"
    want = "onednn" if onednn.available() else "blocks"
    assert kernels.resolve("auto") == want


def test_encoder_gives_one_feature_sequence_per_level():
    config = model_config()  # 3 levels
    encoder = cnns.Encoder(config, rngs=nnx.Rngs(0))
    features = nnx.jit(lambda m, x: m(x))(encoder, jnp.zeros((1, 100, 64, 64, 1)))
    assert encoder.feature_size == 1024  # 2x2x256 for 64x64 frames and 32 filters
    assert [x.shape for x in features] == [(1, 100, 1024)] * 3


@pytest.mark.parametrize("dataset, channels", [("mmnist", 1), ("mazes", 3)])
def test_decoder_gives_tanh_frames(dataset, channels):
    config = model_config("--dataset", dataset)
    decoder = cnns.Decoder(config, 220, rngs=nnx.Rngs(0))
    frames = nnx.jit(lambda m, x: m(x))(decoder, jax.random.normal(jax.random.key(0), (2, 5, 220)))
    assert frames.shape == (2, 5, 64, 64, channels)
    assert bool(jnp.all(jnp.abs(frames) <= 1))


def test_bfloat16_decoder_draws_the_frame_in_float32():
    """Under bfloat16 the decoder's last layer, which draws the frame, computes in float32 (a frame
    rounded to bf16 cost the demo open-loop SSIM, README), and its frames match float32 loosely."""
    config32 = model_config("--filters", "8")
    config16 = dataclasses.replace(config32, precision="bfloat16")
    dec32, dec16 = cnns.Decoder(config32, 20, rngs=nnx.Rngs(0)), cnns.Decoder(config16, 20, rngs=nnx.Rngs(0))
    assert [layer.dtype for layer in dec16.deconvs] == [jnp.bfloat16] * 3 + [jnp.float32]
    states = jax.random.normal(jax.random.key(0), (1, 2, 20))
    frames32, frames16 = dec32(states), dec16(states)
    assert frames16.dtype == jnp.float32
    np.testing.assert_allclose(frames16, frames32, atol=0.05)


def test_bfloat16_convs_match_float32_loosely():
    config32 = model_config("--filters", "8")
    config16 = dataclasses.replace(config32, precision="bfloat16")
    obs = jax.random.uniform(jax.random.key(1), (1, 2, 64, 64, 1))
    enc32, enc16 = cnns.Encoder(config32, rngs=nnx.Rngs(0)), cnns.Encoder(config16, rngs=nnx.Rngs(0))
    assert enc16.convs[0].kernel[...].dtype == jnp.float32  # params stay float32
    grad = nnx.jit(nnx.grad(lambda m: jnp.sum(m(obs)[0] ** 2)))
    g32, g16 = grad(enc32), grad(enc16)
    a, b = g32.convs[0].kernel[...], g16.convs[0].kernel[...]
    assert b.dtype == jnp.float32
    np.testing.assert_allclose(b, a, atol=0.05 * float(jnp.max(jnp.abs(a))))
