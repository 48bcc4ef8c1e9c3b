"""benchmarks.py, what bench.py prints: the conv profile times the layers the model really has, and
every part of each; the metric and loader measurements report real values; peak memory is measured in a
fresh process; the README figures' script."""

import dataclasses
import sys

import jax
import numpy as np
from conftest import ROOT, mmnist

import benchmarks


def test_conv_layers_chain_like_the_encoder_and_decoder():
    layers = benchmarks.conv_layers(benchmarks.paper_config("mazes"))  # 3 channels
    shapes = [
        jax.eval_shape(op, jax.ShapeDtypeStruct((1, *x), "float32"), jax.ShapeDtypeStruct(w, "float32")).shape
        for _, op, x, w in layers
    ]
    names = [name for name, *_ in layers]
    assert names == ["enc1", "enc2", "enc3", "enc4", "dec1", "dec2", "dec3", "dec4"]
    for i in (0, 1, 2, 4, 5, 6):  # each layer's output is the next layer's input
        assert shapes[i][1:] == layers[i + 1][2], (names[i], shapes[i], layers[i + 1][2])
    assert shapes[3][1:] == (2, 2, 256) and shapes[7][1:] == (64, 64, 3)


def test_conv_profile_times_forward_and_both_gradients(tiny):
    rows = benchmarks.conv_profile(tiny(), frames=2, repeats=1)
    assert len(rows) == 8
    for row in rows:
        for part in benchmarks.PARTS:
            assert row[f"{part}_s"] > 0 and row[f"{part}_gflop_per_s"] > 0, (row["layer"], part)


def test_metric_speed_reports_equal_values():
    result = benchmarks.metric_speed(mmnist(), num_frames=20, repeats=1)
    assert result["ssim_max_abs_diff"] < 1e-4 and result["psnr_max_abs_diff"] < 1e-3
    assert result["jax_s"] > 0 and result["speedup"] > 0


def test_loader_throughput_is_positive(tiny):
    assert benchmarks.loader_throughput(dataclasses.replace(tiny(), num_epochs=10), num_batches=3) > 0


def test_walk_strip_has_eight_frames_with_gaps():
    sys.path.insert(0, str(ROOT / "scripts"))
    import make_assets

    strip = make_assets.walk_strip("mazes", every=2)
    assert strip.shape == (64, 8 * 64 + 7 * 2, 3) and strip.dtype == np.uint8
    assert np.all(strip[:, 64:66] == 255)


def test_peak_memory_runs_each_measurement_in_a_fresh_process():
    row = benchmarks.peak_memory("eval:tiny:2:24")  # the tiny model's rollout of 2 videos, 24 frames
    assert "error" not in row, row
    assert 100 < row["peak_rss_mb"] < 8192, row  # JAX alone takes over 100 MiB
    assert (row["batch"], row["frames"]) == (2, 24)
