"""Test setup: two simulated CPU devices (so data-parallel code runs sharded) and tiny configs."""

import atexit
import os
import pathlib
import shutil
import sys
import tempfile

# XLA:CPU compiles the suite's programs at optimisation level 1 instead of 2: a third less time in
# the compiler, which is most of what the suite does. Tests compare runs compiled alike, or references
# to a float tolerance; the test of init_model's bits runs at the default level (test_train.py).
TEST_XLA_FLAGS = "--xla_backend_optimization_level=1"


def xla_flags(devices: int) -> str:
    """XLA_FLAGS for the tests' processes: `devices` simulated CPU devices, compiled as above."""
    return f"--xla_force_host_platform_device_count={devices} {TEST_XLA_FLAGS}"


# Before JAX is imported anywhere: two host devices, like a 2-device data-parallel machine.
os.environ.setdefault("XLA_FLAGS", xla_flags(2))
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("WANDB_SILENT", "true")
# One compilation cache for this session's tests and the scripts they start: the many runs of the
# tiny model compile once. Fresh per session (and removed at its end), so a test that counts
# compilations still sees them.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="cwvae-jax-cache-")
    atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
# Scripts the tests start get huge pages from the start instead of restarting (hugepages.py).
os.environ.setdefault("GLIBC_TUNABLES", "glibc.malloc.hugetlb=1")

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pytest  # noqa: E402


def mmnist(*argv):
    """The paper's mmnist config (configs/mmnist.yml), with command-line overrides."""
    import config as cfg_lib

    return cfg_lib.parse(["--config", str(ROOT / "configs" / "mmnist.yml"), *argv])


def tiny_args(tmp_path, *argv, **overrides) -> list[str]:
    """Command-line arguments of the tiny config (configs/tiny.yml) writing into tmp_path."""
    args = ["--config", str(ROOT / "configs" / "tiny.yml"), "--datadir", str(tmp_path / "data")]
    args += ["--logdir", str(tmp_path / "logs"), "--seed", "0", "--progress", "false", *argv]
    for key, value in overrides.items():
        args += [f"--{key}", str(value)]
    return args


@pytest.fixture
def tiny(tmp_path):
    """A tiny config writing into tmp_path; override keys with tiny("--key", "value") or tiny(key=value)."""
    import config as cfg_lib

    return lambda *argv, **overrides: cfg_lib.parse(tiny_args(tmp_path, *argv, **overrides))


@pytest.fixture(scope="session")
def blob_clips_i3d():
    """Four 16-frame 64x64 grey clips of moving blobs (benchmarks.blob_frames, seeds 0-3) and their I3D
    logits (tools.i3d_features, batch 4): the FVD tests share one run of I3D."""
    import numpy as np

    import benchmarks
    import tools

    clips = np.stack([benchmarks.blob_frames(16, (64, 64, 1), seed=s) for s in range(4)])
    return clips, tools.i3d_features(clips, batch_size=4)
