"""``train.sampler: mjx``: MJX HalfCheetah and Ant against C MuJoCo, and training runs (CPU)."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import gymnasium as gym
import jax
import numpy as np
import pytest
import torch

import meta_rl.envs  # noqa: F401  (registers the families)
from meta_rl.agents.policies import make_policy
from meta_rl.builders import build_sampler
from meta_rl.config import ConfigError, load_config
from meta_rl.functional import expand_to_tasks, policy_params
from meta_rl.samplers import VectorSampler
from meta_rl.samplers import mjx as mjx_module
from meta_rl.samplers.mjx import MJXAnt, MJXHalfCheetah
from meta_rl.samplers.torch_native import TorchSampler
from meta_rl.trainer import train

CONFIGS = Path(__file__).parents[1] / "experiments" / "configs"
# float32 MJX against float64 C MuJoCo, one env step (frame_skip physics steps) from the same
# state: observations hold velocities up to ~15, so 1e-3 absolute is ~1e-4 relative
OBS_TOLERANCE = 1e-3
REWARD_TOLERANCE = 1e-4
# the Ant's clipped contact forces (in [-1, 1]) are stiff in the positions: measured up to
# 2.3e-2 in float32 (seed 3), 1.4e-12 in float64
CFRC_TOLERANCE = 5e-2
FLOAT64_TOLERANCE = 1e-9
STEPS = 100
ANT_STATE_DIM = 27  # AntVel's observation: 13 positions (x, y left out), 14 velocities, cfrc_ext


def c_mujoco_trajectory(env_id: str, seed: int) -> dict[str, np.ndarray]:
    """100 steps of the Gymnasium family with seeded uniform actions: states, actions, results."""
    env = gym.make(env_id)
    env.reset(seed=seed)
    base = env.unwrapped
    rng = np.random.default_rng(seed)
    keys = ("qpos", "qvel", "xy", "action", "obs", "reward", "terminated")
    record: dict[str, list] = {k: [] for k in keys}
    for _ in range(STEPS):
        record["qpos"].append(base.data.qpos.copy())
        record["qvel"].append(base.data.qvel.copy())
        # body 1 is the Ant's torso, whose velocity starts from the xpos the last step left
        # (its last RK4 stage's), not from a forward at qpos
        record["xy"].append(base.data.xpos[1, :2].copy())
        action = rng.uniform(-1, 1, size=env.action_space.shape).astype(np.float32)
        obs, reward, terminated, *_ = env.step(action)  # stepping on after a fall, as MJX does
        record["action"].append(action)
        record["obs"].append(obs)
        record["reward"].append(reward)
        record["terminated"].append(terminated)
    task = base.task
    env.close()
    return {k: np.asarray(v) for k, v in record.items()} | {"task": task}


def test_each_step_matches_c_mujoco() -> None:
    """From each state of a C MuJoCo trajectory, one MJX step gives its obs and reward.

    Every one of the 100 states is a row of one MJX batch, so the float32 error of a single
    step is measured at 100 points of a real trajectory (a free run in float32 drifts away
    chaotically within ~50 steps, as two float64 runs with different solvers would).
    """
    env_id = "MetaRL/HalfCheetahVel-v0"
    ref = c_mujoco_trajectory(env_id, seed=3)
    env = gym.make(env_id)
    batch = MJXHalfCheetah(env, torch.device("cpu"))
    batch.set_tasks([ref["task"]] * STEPS)  # the batch size of the tests below
    batch.set_state(torch.from_numpy(ref["qpos"]), torch.from_numpy(ref["qvel"]))
    obs, reward, terminated = batch.step(torch.from_numpy(ref["action"]), torch.Generator())
    obs_error = np.abs(obs.numpy() - ref["obs"]).max()
    reward_error = np.abs(reward.numpy() - ref["reward"]).max()
    print(f"{env_id}: max obs error {obs_error:.2e}, max reward error {reward_error:.2e}")
    assert obs_error < OBS_TOLERANCE
    assert reward_error < REWARD_TOLERANCE
    assert not terminated.any()


def test_each_ant_step_matches_c_mujoco() -> None:
    """As above for the Ant (``step_as_c``): obs incl. contact forces, reward, termination.

    Seed 3's random actions topple the ant: C terminates at 14 of the 100 states, so the
    termination is tested both ways.
    """
    env_id = "MetaRL/AntVel-v0"
    ref = c_mujoco_trajectory(env_id, seed=3)
    batch = MJXAnt(gym.make(env_id), torch.device("cpu"))
    batch.set_tasks([ref["task"]] * STEPS)
    batch.set_state(torch.from_numpy(ref["qpos"]), torch.from_numpy(ref["qvel"]))
    batch.xy = torch.from_numpy(ref["xy"]).float()
    obs, reward, terminated = batch.step(torch.from_numpy(ref["action"]), torch.Generator())
    error = np.abs(obs.numpy() - ref["obs"])
    reward_error = np.abs(reward.numpy() - ref["reward"]).max()
    state_error, cfrc_error = error[:, :ANT_STATE_DIM].max(), error[:, ANT_STATE_DIM:].max()
    print(
        f"{env_id}: max error state {state_error:.2e}, contact forces {cfrc_error:.2e}, "
        f"reward {reward_error:.2e}"
    )
    assert obs.shape == ref["obs"].shape
    assert np.abs(ref["obs"][:, ANT_STATE_DIM:]).max() == 1.0  # the contacts are exercised
    assert state_error < OBS_TOLERANCE
    assert cfrc_error < CFRC_TOLERANCE
    assert reward_error < REWARD_TOLERANCE
    assert 0 < ref["terminated"].sum() < STEPS
    assert (terminated.numpy() == ref["terminated"]).all()


def test_ant_is_c_mujoco_in_float64() -> None:
    """In float64, the Ant's physics and observation are C MuJoCo's, not an approximation.

    Stock ``mjx.step`` lands up to 0.71 away in qvel from the same states (the module
    docstring says why); ``step_as_c`` within rounding, for every one of the 100 states.
    """
    env_id = "MetaRL/AntGoal-v0"  # full positions observed: x, y checked as well
    ref = c_mujoco_trajectory(env_id, seed=4)
    with jax.enable_x64(True):
        batch = MJXAnt(gym.make(env_id), torch.device("cpu"))
        static = batch._static()
        data, *_ = mjx_module._ant_reset_batch(batch.model, ref["qpos"], ref["qvel"], **static)
        action = ref["action"].astype(np.float64)
        data, obs, xy, _ = mjx_module._ant_step_batch(
            batch.model, data, action, frame_skip=batch.frame_skip, **static
        )
        obs = np.asarray(obs)
        xy = np.asarray(xy)
    obs_error = np.abs(obs - ref["obs"]).max()
    print(f"{env_id} in float64: max obs error {obs_error:.2e}")
    assert obs.dtype == np.float64
    assert np.abs(ref["obs"][:, 29:]).max() > 0  # contact forces observed
    assert obs_error < FLOAT64_TOLERANCE
    assert np.abs(xy[:-1] - ref["xy"][1:]).max() < FLOAT64_TOLERANCE


@pytest.mark.parametrize(
    ("env_id", "seed", "batched_class"),
    [("MetaRL/HalfCheetahDir-v0", 5, MJXHalfCheetah), ("MetaRL/AntDir-v0", 6, MJXAnt)],
    ids=["cheetah", "ant"],
)
def test_returns_match_vector_sampler_in_distribution(env_id, seed, batched_class) -> None:
    """Same policy and tasks: per-task mean returns agree with C MuJoCo's within 4 SE.

    Reset noise comes from torch's generator here and from each env's numpy one there, so
    only the distributions can agree; 50 episodes per task, horizon 20.
    """
    kwargs = {"seed": seed, "max_episode_steps": 20}
    mjx_sampler = TorchSampler(env_id, 2, 50, batched=mjx_module.mjx_batched_env, **kwargs)
    assert isinstance(mjx_sampler.batched, batched_class)
    vector = VectorSampler(env_id, 2, 50, **kwargs)
    policy = make_policy(vector.observation_space, vector.action_space, (16,), "tanh")
    policy.reset_parameters(torch.Generator().manual_seed(0))
    params = expand_to_tasks({k: v.detach() for k, v in policy_params(policy).items()}, 2)
    tasks = [{"direction": 1.0}, {"direction": -1.0}]
    returns = {}
    for name, sampler in (("mjx", mjx_sampler), ("vector", vector)):
        episodes = sampler.sample(policy, params, tasks)
        returns[name] = (episodes.rewards * episodes.mask).sum(0).double()  # [tasks, episodes]
        sampler.close()
    for task in range(2):
        a, b = returns["mjx"][task], returns["vector"][task]
        se = math.sqrt(a.var() / len(a) + b.var() / len(b))
        assert abs(a.mean() - b.mean()) < 4 * se, (task, a.mean(), b.mean(), se)


@pytest.mark.parametrize(
    "config_name", ["maml_halfcheetah_dir_ci.yaml", "maml_ant_vel_ci.yaml"], ids=["cheetah", "ant"]
)
def test_maml_trains_on_mjx(tmp_path: Path, config_name: str) -> None:
    # 2 tasks x 50 episodes: the batch size of the tests above, so no new compilation
    overrides = ["train.sampler=mjx", "train.episodes_per_task=50", "train.iterations=1"]
    config = load_config(CONFIGS / config_name, overrides)
    run_dir = train(config, run_dir=tmp_path / "run")
    with (run_dir / "progress.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == config.train.iterations
    assert all(math.isfinite(float(row[key])) for row in rows for key in row if row[key])


def test_other_families_are_refused_in_one_line(tmp_path: Path) -> None:
    config = load_config(CONFIGS / "maml_navigation2d_ci.yaml", ["train.sampler=mjx"])
    match = "HalfCheetahTaskEnv or AntTaskEnv; Navigation2DEnv is not one"
    with pytest.raises(ConfigError, match=match) as info:
        build_sampler(config, torch.device("cpu"))
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match=r"^config error: train\.sampler: sampler 'mjx'"):
        train(config, run_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()
    with pytest.raises(ValueError, match="MJXHalfCheetah steps HalfCheetahTaskEnv families"):
        MJXHalfCheetah(gym.make("MetaRL/AntVel-v0"), torch.device("cpu"))
