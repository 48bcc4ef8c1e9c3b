"""The Python entry point (inference.py): the README's example runs as written on a trained run, and
its predictions are eval.py's (the same rollout and metrics)."""

import re

import numpy as np
import pytest
from conftest import ROOT, tiny_args

import config as cfg_lib
import inference
import train


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("run")
    return train.train(cfg_lib.parse(tiny_args(tmp, max_steps=4, run_name="demo"))).exp_dir


def readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split("## In Python", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_example_runs_on_a_trained_run(trained, capsys):
    # The tiny config's clock needs context frames in multiples of 4 and its test videos are 24 frames.
    code = readme_example().replace('"logs/mmnist/demo"', repr(str(trained)))
    code = code.replace("[:, :36]", "[:, :8]").replace("horizon=100", "horizon=16").replace("[:, 36:136]", "[:, 8:24]")
    namespace = {}
    exec(compile(code, "README.md", "exec"), namespace)
    run, pred, ssim = namespace["run"], namespace["pred"], namespace["ssim"]
    assert run.step == 4 and pred.shape == (2, 16, 64, 64, 1) and ssim.shape == (2, 16)
    assert re.fullmatch(r"step 4: SSIM 0\.\d{3}, PSNR \d+\.\d\d dB over 16 frames\n", capsys.readouterr().out)


def test_predictions_depend_on_the_seed_and_the_checkpoint_named(trained):
    run = inference.load(trained / "checkpoints" / "4")
    videos = run.test_videos(2)
    a = run.predict(videos[:, :8], horizon=16, seed=0)
    assert np.array_equal(a, run.predict(videos[:, :8], horizon=16, seed=0))
    assert not np.array_equal(a, run.predict(videos[:, :8], horizon=16, seed=1))
    assert np.all(np.isfinite(a)) and run.config.run_name == "demo"
