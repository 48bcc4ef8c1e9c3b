"""Tests of generators/minerl.py: the procedural MineRL Navigate stand-in (voxel worlds, walker, ray caster)."""

import numpy as np
import pytest

import dataspec
from generators import minerl


@pytest.fixture(scope="module")
def video():
    """One full-length (500-frame) video, shared by the tests that need one."""
    return minerl.minerl_video(500, np.random.default_rng([0, 0]))


def test_video_shape_and_dtype(video):
    assert video.shape == (500, 64, 64, 3)
    assert video.dtype == np.uint8
    assert video.std() > 20  # not a blank picture


def test_deterministic_from_the_generator():
    a = minerl.minerl_video(30, np.random.default_rng([0, 1]))
    b = minerl.minerl_video(30, np.random.default_rng([0, 1]))
    c = minerl.minerl_video(30, np.random.default_rng([0, 2]))
    assert a.tobytes() == b.tobytes()
    assert np.abs(a.astype(int) - c).mean() > 10


def test_consecutive_frames_are_similar_and_distant_frames_differ(video):
    v = video.astype(np.float32)
    steps = np.abs(v[1:] - v[:-1]).mean(axis=(1, 2, 3))  # per pair of consecutive frames
    apart = np.abs(v[200:] - v[:-200]).mean()
    # Measured on this video (of 255): consecutive pairs 9.4 on average, 28 at most; 73 for frames 200 apart.
    # (Turning up to 0.6 rad a frame instead of 0.07 gives 12.4 on average and 60 at most.)
    assert steps.mean() < 12.5 and steps.max() < 45
    assert apart > 40
    assert apart > 4 * steps.mean()


@pytest.mark.parametrize("seed", range(4))
def test_walker_stays_on_dry_ground_in_free_space(seed):
    rng = np.random.default_rng([0, seed])
    world = minerl.random_world(rng)
    positions, yaw, pitch = minerl.walk(world, 500, rng)
    assert positions.shape == (500, 3) and yaw.shape == pitch.shape == (500,)
    x = np.floor(positions[:, 0]).astype(int) % minerl.WORLD_XZ
    z = np.floor(positions[:, 2]).astype(int) % minerl.WORLD_XZ
    eye, feet = positions[:, 1], positions[:, 1] - minerl.EYE
    ground = world.height[x, z]
    for y in (eye, feet):  # the cells at the eyes and at the feet are air
        assert (world.blocks[x, np.floor(y).astype(int), z] == minerl.AIR).all()
    below = world.blocks[x, ground - 1, z]  # the block stood on: solid, and no water above it
    assert minerl.is_solid(below).all() and (below != minerl.WATER).all()
    assert (world.blocks[x, ground, z] != minerl.WATER).all()
    assert (feet >= ground - 1e-6).all() and (feet < ground + 1.5).all()
    # It walks (never stuck for long), turns with bounded angular velocity, the eye rises and sinks smoothly.
    steps = np.hypot(*((np.diff(positions[:, [0, 2]], axis=0) + 32) % 64 - 32).T)
    assert steps.sum() > 40
    still = np.concatenate([[0], (steps < 0.02) & (np.abs(np.diff(yaw)) < 0.005), [0]]).astype(int)
    runs = np.diff(np.flatnonzero(np.diff(still)))[::2]  # lengths of the runs of frames with an unchanged view
    assert runs.max(initial=0) < 40  # (deliberate stops last up to 30 frames)
    assert np.abs(np.diff(yaw)).max() <= minerl.MAX_TURN + 1e-6
    assert np.abs(np.diff(eye)).max() < 0.7 and np.abs(pitch).max() < 0.5


def test_sky_terrain_and_trees_appear():
    seen = set()
    for seed in range(3):
        rng = np.random.default_rng([seed, 0])
        world = minerl.random_world(rng)
        positions, yaw, pitch = minerl.walk(world, 500, rng)
        pick = slice(0, 500, 25)
        frames, kinds = minerl.render(world, positions[pick], yaw[pick], pitch[pick], return_kinds=True)
        assert kinds.shape == frames.shape[:3] and kinds.dtype == np.uint8 and kinds.max() <= minerl.LEAVES
        assert np.array_equal(frames, minerl.render(world, positions[pick], yaw[pick], pitch[pick]))
        sky = frames[kinds == minerl.AIR].astype(int)
        assert (sky[:, 2] > sky[:, 0]).mean() > 0.95  # the sky is bluish (bar the sun)
        grass = frames[kinds == minerl.GRASS].astype(int)
        assert (grass[:, 1] >= grass[:, 2]).mean() > 0.8  # grass-topped blocks read green or brown, not blue
        seen |= {k for k in np.unique(kinds) if (kinds == k).mean() > 0.002}
    assert {minerl.AIR, minerl.GRASS, minerl.WATER} <= seen
    assert seen & {minerl.TRUNK, minerl.LEAVES}


def test_recorded_actions_integrate_to_the_rendered_headings():
    rng = np.random.default_rng([3, 0])
    world = minerl.random_world(rng)
    positions, yaw, pitch, _ = minerl.walk_with_keys(world, 100, rng)
    frames, actions = minerl.video(100, np.random.default_rng([3, 0]), "test", with_actions=True)
    np.testing.assert_array_equal(frames, minerl.render(world, positions, yaw, pitch))  # these headings were rendered
    field = {name: i for i, name in enumerate(dataspec.MINERL_ACTIONS)}
    assert actions.shape == (100, 11) and actions.dtype == np.float32
    turned = yaw[0] + np.cumsum(np.radians(actions[:-1, field["camera_yaw"]], dtype=np.float64))
    np.testing.assert_allclose(turned, yaw[1:], rtol=0, atol=1e-5)
    looked = pitch[0] - np.cumsum(np.radians(actions[:-1, field["camera_pitch"]], dtype=np.float64))  # > 0: down
    np.testing.assert_allclose(looked, pitch[1:], rtol=0, atol=1e-5)
    assert np.count_nonzero(actions[:, field["camera_yaw"]]) > 10  # it turns
    assert set(np.unique(actions[:, field["forward"]])) <= {0.0, 1.0} and actions[:, field["forward"]].mean() > 0.5
    unused = [field[k] for k in ("attack", "back", "left", "place", "right", "sneak", "sprint")]
    assert not actions[:, unused].any() and not actions[-1].any()  # the last action leads out of the video
