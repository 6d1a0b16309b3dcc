"""``train.sampler: mjx``: MJX HalfCheetah against C MuJoCo, and a training run on it (CPU)."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

import meta_rl.envs  # noqa: F401  (registers the families)
from meta_rl.agents.policies import make_policy
from meta_rl.builders import build_sampler
from meta_rl.config import ConfigError, load_config
from meta_rl.functional import expand_to_tasks, policy_params
from meta_rl.samplers import VectorSampler
from meta_rl.samplers.mjx import MJXHalfCheetah
from meta_rl.samplers.torch_native import TorchSampler
from meta_rl.trainer import train

CONFIGS = Path(__file__).parents[1] / "experiments" / "configs"
# float32 MJX against float64 C MuJoCo, one env step (frame_skip physics steps) from the same
# state: observations hold velocities up to ~15, so 1e-3 absolute is ~1e-4 relative
OBS_TOLERANCE = 1e-3
REWARD_TOLERANCE = 1e-4
STEPS = 100


def c_mujoco_trajectory(env_id: str, seed: int) -> dict[str, np.ndarray]:
    """100 steps of the Gymnasium family with seeded uniform actions: states, actions, results."""
    env = gym.make(env_id)
    env.reset(seed=seed)
    base = env.unwrapped
    rng = np.random.default_rng(seed)
    record: dict[str, list] = {k: [] for k in ("qpos", "qvel", "action", "obs", "reward")}
    for _ in range(STEPS):
        record["qpos"].append(base.data.qpos.copy())
        record["qvel"].append(base.data.qvel.copy())
        action = rng.uniform(-1, 1, size=env.action_space.shape).astype(np.float32)
        obs, reward, *_ = env.step(action)
        record["action"].append(action)
        record["obs"].append(obs)
        record["reward"].append(reward)
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


def test_returns_match_vector_sampler_in_distribution() -> None:
    """Same policy and tasks: per-task mean returns agree with C MuJoCo's within 4 SE.

    Reset noise comes from torch's generator here and from each env's numpy one there, so
    only the distributions can agree; 50 episodes per task, horizon 20.
    """
    kwargs = {"seed": 5, "max_episode_steps": 20}
    env_id = "MetaRL/HalfCheetahDir-v0"
    mjx_sampler = TorchSampler(env_id, 2, 50, batched=MJXHalfCheetah, **kwargs)
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


def test_maml_trains_on_mjx(tmp_path: Path) -> None:
    # 2 tasks x 50 episodes: the batch size of the tests above, so no new compilation
    overrides = ["train.sampler=mjx", "train.episodes_per_task=50", "train.iterations=1"]
    config = load_config(CONFIGS / "maml_halfcheetah_dir_ci.yaml", overrides)
    run_dir = train(config, run_dir=tmp_path / "run")
    with (run_dir / "progress.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == config.train.iterations
    assert all(math.isfinite(float(row[key])) for row in rows for key in row if row[key])


def test_ant_is_refused_in_one_line(tmp_path: Path) -> None:
    config = load_config(CONFIGS / "maml_ant_vel_ci.yaml", ["train.sampler=mjx"])
    with pytest.raises(ConfigError, match="HalfCheetah families only; AntVelEnv") as info:
        build_sampler(config, torch.device("cpu"))
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match=r"^config error: train\.sampler: sampler 'mjx'"):
        train(config, run_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()
