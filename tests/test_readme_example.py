"""README.md stays true: its worked family runs and passes the kit; its table lists every id."""

from __future__ import annotations

import pickle
import re
import sys
import types
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

from meta_rl import envs

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def _section(title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", README, re.S | re.M)
    assert match, f"README.md has no '## {title}' section"
    return match.group(1)


@pytest.fixture(scope="module")
def example() -> types.ModuleType:
    blocks = re.findall(r"```python\n(.*?)```", _section("Add your own family"), re.S)
    assert len(blocks) == 2  # a plain family, then a MuJoCo one
    # A real module, so the family class pickles by reference like a user's own file.
    module = types.ModuleType("readme_example")
    sys.modules[module.__name__] = module
    for block in blocks:  # each runs check_task_env on its family
        exec(compile(block, "README.md", "exec"), module.__dict__)
    yield module
    del sys.modules[module.__name__]
    for env_id in ("MyFamilies/Point1D-v0", "MyFamilies/HopperVel-v0"):
        del gym.registry[env_id]


def test_readme_family_reaches_its_goal(example):
    env = gym.make("MyFamilies/Point1D-v0")
    env.reset(seed=0, options={"task": {"goal": -0.3}})
    rewards, terminated = [], False
    while not terminated:
        _, reward, terminated, truncated, info = env.step(np.array([-1.0], np.float32))
        rewards.append(reward)
        assert not truncated
    # Actions are clipped to 0.1: three moves, the last one lands on the goal.
    np.testing.assert_allclose(rewards, [-0.2, -0.1, 0.0], atol=1e-6)  # float32 actions
    assert info["distance"] < 0.01
    clone = pickle.loads(pickle.dumps(env.unwrapped))
    assert clone.task == {"goal": -0.3}


def test_readme_mujoco_family_rewards_the_goal_velocity(example):
    env = gym.make("MyFamilies/HopperVel-v0")
    env.reset(seed=0, options={"task": {"velocity": 0.7}})
    _, reward, _, _, info = env.step(np.zeros(3, np.float32))
    assert info["reward_forward"] == pytest.approx(-abs(info["x_velocity"] - 0.7))
    assert reward == pytest.approx(info["reward_forward"] + 1.0)  # healthy, no control cost
    clone = pickle.loads(pickle.dumps(env.unwrapped))
    assert clone.task == {"velocity": 0.7} and clone.velocity_range == (0.0, 1.0)
    env.close()


def test_readme_family_table_lists_every_registered_id():
    table = "\n".join(line for line in _section("Task families").splitlines() if line[:1] == "|")
    for env_id in envs.FAMILY_IDS:
        name = env_id.removeprefix("MetaRL/")
        short = name.removeprefix("Bandit")  # the bandits share a row: `-K10-v0`
        assert f"`{env_id}`" in table or f"`{short}`" in table, env_id
        horizon = gym.spec(env_id).max_episode_steps
        row = next(line for line in table.splitlines() if name in line or short in line)
        assert f"| {horizon} |" in row, env_id
