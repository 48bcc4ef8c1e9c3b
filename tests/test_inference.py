"""The Python entry point (inference.py): the README's example runs as written on a trained run, and
its predictions are eval.py's (the same rollout and metrics)."""

import re

import numpy as np
import pytest
from conftest import ROOT, tiny_args

import config as cfg_lib
import inference
import train
from errors import UserError


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("run")
    return train.train(cfg_lib.parse(tiny_args(tmp, max_steps=4, run_name="demo"))).exp_dir


def readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split("## In Python", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_example_runs_on_a_trained_run_from_any_folder(trained, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # not the repository: the example finds the run from inference's own path
    # The tiny config's clock needs context frames in multiples of 4 and its test videos are 24 frames.
    example = readme_example()
    assert 'repo / "logs/mmnist/demo"' in example
    code = example.replace('repo / "logs/mmnist/demo"', repr(str(trained)))
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


@pytest.mark.parametrize(
    "change, words",
    [
        (lambda c: np.repeat(c, 3, axis=-1), "context: shape (2, 8, 64, 64, 3)"),  # a 1-channel run
        (lambda c: c[:, :, :32, :32], "context: shape (2, 8, 32, 32, 1)"),
        (lambda c: c[:, :6], "context: 6 frames; must be a positive multiple of"),
        (lambda c: c.astype(np.float32), "context: float values in [0, 255]; floats must lie in [0, 1]"),
        (lambda c: c.astype(np.int64), "context: dtype int64"),
    ],
)
def test_predict_refuses_context_that_does_not_fit_the_run_in_one_line(trained, change, words):
    run = inference.load(trained)
    context = change(run.test_videos(2)[:, :8])
    with pytest.raises(UserError) as info:
        run.predict(context, horizon=4)
    assert words in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("horizon", [0, -3, 2.5])
def test_predict_refuses_a_horizon_below_one_frame(trained, horizon):
    run = inference.load(trained)
    with pytest.raises(UserError, match=rf"^horizon: got {re.escape(repr(horizon))}; must be a whole number"):
        run.predict(run.test_videos(2)[:, :8], horizon=horizon)


def test_metrics_refuses_prediction_and_truth_of_different_shapes(trained):
    run = inference.load(trained)
    videos = run.test_videos(2)
    pred = run.predict(videos[:, :8], horizon=4)
    with pytest.raises(UserError, match=r"^pred and truth: shapes \(2, 4, 64, 64, 1\) and \(2, 5, 64, 64, 1\)"):
        run.metrics(pred, videos[:, 8:13])
    with pytest.raises(UserError, match=r"^truth: float values in \[0, 255\]"):
        run.metrics(pred, videos[:, 8:12].astype(np.float32))


def test_a_run_without_actions_refuses_them_in_one_line(trained):
    run = inference.load(trained)
    with pytest.raises(UserError) as info:
        run.predict(run.test_videos(2)[:, :8], horizon=4, actions=np.zeros((2, 12, 2)))
    assert str(info.value) == "actions: this run was trained without actions (use_actions false); pass actions=None"
    with pytest.raises(UserError, match=r"^test_actions: this run was trained without actions \(use_actions false\)$"):
        run.test_actions(2)
