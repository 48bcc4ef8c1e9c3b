"""Action-conditioned runs end to end (use_actions): a tiny model trained and evaluated on all-zero
actions, eval.py given the videos' actions or none, and inference.Run.predict's actions."""

import json

import numpy as np
import pytest
from conftest import tiny_args

import config as cfg_lib
import eval as eval_lib
import generators
import inference
import runs
import train
from errors import UserError


def smooth_videos(count: int, frames: int) -> np.ndarray:
    """(count, frames, 64, 64, 3) uint8: a pattern drifting to the right, from another phase in each video."""
    x = np.arange(64) / 64.0
    t = np.arange(frames)[:, None] / 20.0
    rows = 0.5 + 0.4 * np.sin(2 * np.pi * (x[None] - t + np.arange(count)[:, None, None] / 7))  # (N, T, 64)
    return np.repeat((255 * rows)[:, :, None, :, None], 64, axis=2).repeat(3, axis=4).astype(np.uint8)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny action-conditioned model trained for 2 steps (validated at the second) on 'generated' mazes
    whose training actions are all zero (its test videos turn and walk); returns its run folder."""
    tmp = tmp_path_factory.mktemp("run")
    argv = tiny_args(tmp, "--dataset", "mazes", "--use_actions", "true", "--save_gifs", "false")
    config = cfg_lib.parse([*argv, "--max_steps", "2", "--save_scalars_every", "2", "--save_model_every", "2"])
    for split, (count, frames) in {"train": (8, 32), "test": (4, 24)}.items():
        path = generators.generated_file(config, split)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, smooth_videos(count, frames))
        actions = np.zeros((count, frames, 2), np.float32)
        if split == "test":
            actions[:] = 5.0, 1.0  # turn 5 degrees to the right and walk at full speed, every frame
        np.save(generators.actions_file(config, split), actions)
    result = train.train(config)
    assert result.step == 2 and all(np.isfinite(list(result.losses.values())))
    return result.exp_dir


def run_eval(run_dir, *argv):
    quick = ["--progress", "false", "--references", "false", "--eval_videos", "0", "--no_save_grid", "true"]
    config, run, step = runs.load_run_config(["--logdir", str(run_dir), *quick, *argv])
    return json.loads((eval_lib.evaluate(config, run, step) / "metrics.json").read_text())


def test_a_model_trains_on_all_zero_actions_and_evaluates_given_the_videos_actions_or_none(trained):
    assert "_generated_actions_" in trained.name  # the run's folder says it is action-conditioned
    logged = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    assert any(np.isfinite(r.get("val/open_loop_ssim", np.nan)) for r in logged)  # validated with its actions
    given, zero = run_eval(trained), run_eval(trained, "--eval_actions", "zero")
    assert (given["settings"]["actions"], zero["settings"]["actions"]) == ("given", "zero")
    assert 0 < given["ssim_mean"] <= 1 and np.isfinite(given["psnr_mean"])
    assert given["horizons"] != zero["horizons"]  # the test videos' actions reach the rollout


def test_predict_takes_one_action_per_frame_and_refuses_others_in_one_line(trained):
    run = inference.load(trained)
    videos, actions = run.test_videos(2), run.test_actions(2)
    assert actions.shape == (2, 24, 2) and (actions == (5.0, 1.0)).all()
    context = videos[:, :8]
    none = run.predict(context, horizon=16)
    np.testing.assert_array_equal(none, run.predict(context, horizon=16, actions=np.zeros_like(actions)))  # zeros
    turned = np.zeros_like(actions)
    turned[:, 10:, 0] = 9.0  # turn right from frame 10 on
    moved = run.predict(context, horizon=16, actions=turned)
    np.testing.assert_array_equal(moved[:, :3], none[:, :3])  # frames 8-10: before the first turn took effect
    assert not np.array_equal(moved[:, 3:], none[:, 3:])
    for wrong, shape in [(actions[:, :20], "(2, 20, 2)"), (np.zeros((2, 24, 11)), "(2, 24, 11)")]:
        with pytest.raises(UserError) as e:
            run.predict(context, horizon=16, actions=wrong)
        assert str(e.value) == (
            f"actions: shape {shape}; expected (2, 24, 2): one action of 2 numbers (turn, forward) per frame of "
            "the 2 videos' context and prediction (24 frames)"
        )
