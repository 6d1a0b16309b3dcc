"""Task families: rewards recomputed from `info` and the task, dynamics, sampling, plumbing."""

from __future__ import annotations

import pickle

import gymnasium as gym
import numpy as np
import pytest

from meta_rl import envs
from meta_rl.envs.base import TaskEnv


def make(env_id: str, **kwargs) -> gym.Env:
    return gym.make(f"MetaRL/{env_id}", **kwargs)


# ---------------------------------------------------------------- Navigation2D


def test_navigation_reward_is_minus_distance_after_the_move():
    env = make("Navigation2D-v0")
    obs, _ = env.reset(seed=0, options={"task": {"goal": [0.3, -0.4]}})
    assert obs.dtype == np.float32 and obs.tolist() == [0.0, 0.0]
    obs, reward, terminated, truncated, info = env.step(np.array([0.1, 0.05], np.float32))
    expected = -np.hypot(0.3 - 0.1, -0.4 - 0.05)  # 0.49244...
    assert reward == pytest.approx(expected, abs=1e-7)
    assert info["distance"] == pytest.approx(-expected, abs=1e-7)
    assert info["reward_distance"] == reward
    assert not terminated and not truncated


def test_navigation_big_actions_are_clipped_to_0_1_per_axis():
    env = make("Navigation2D-v0")
    env.reset(seed=0)
    obs, *_ = env.step(np.array([5.0, -3.0], np.float32))
    np.testing.assert_allclose(obs, [0.1, -0.1], atol=1e-7)
    obs, *_ = env.step(np.array([0.05, 100.0], np.float32))
    np.testing.assert_allclose(obs, [0.15, 0.0], atol=1e-7)


def test_navigation_driven_to_the_goal_terminates_at_the_predicted_step():
    goal = np.array([0.23, -0.37])
    env = make("Navigation2D-v0")
    env.reset(seed=0, options={"task": {"goal": goal.tolist()}})
    position = np.zeros(2)
    for step in range(1, 101):  # noqa: B007 (step is read after the loop)
        action = np.clip(goal - position, -0.1, 0.1)
        _, reward, terminated, truncated, info = env.step(action)
        position = position + action
        if terminated:
            break
    # y needs 0.37 / 0.1 -> 4 moves; the last one lands exactly on the goal.
    assert step == 4
    assert info["distance"] < 0.01 and reward == pytest.approx(0.0, abs=1e-6)
    assert not truncated


@pytest.mark.parametrize(
    ("goal", "terminates"),
    [
        ([0.109, 0.109], True),  # 0.009 off on each axis (Euclidean 0.0127): the code's test
        ([0.111, 0.1], False),  # 0.011 off on one axis
        ([0.1, 0.1], True),
    ],
)
def test_navigation_termination_is_the_per_axis_0_01_test(goal, terminates):
    env = make("Navigation2D-v0")
    env.reset(seed=0, options={"task": {"goal": goal}})
    *_, terminated, _, _ = env.step(np.array([0.1, 0.1], np.float32))
    assert terminated is terminates


def test_navigation_horizon_is_100():
    env = make("Navigation2D-v0")
    env.reset(seed=0, options={"task": {"goal": [0.5, 0.5]}})
    steps, truncated = 0, False
    while not truncated:
        *_, terminated, truncated, _ = env.step(np.array([-0.1, -0.1], np.float32))
        assert not terminated
        steps += 1
    assert steps == 100


# ---------------------------------------------------------------- MuJoCo families


def _rollout(env: gym.Env, task: dict, steps: int, seed: int = 0):
    env.action_space.seed(seed)
    env.reset(seed=seed, options={"task": task})
    out = []
    for _ in range(steps):
        action = env.action_space.sample()
        _, reward, terminated, _, info = env.step(action)
        out.append((action, reward, terminated, info))
        if terminated:
            break
    return out


def test_half_cheetah_vel_reward_formula():
    env = make("HalfCheetahVel-v0")
    dt = env.unwrapped.dt
    previous_x = None
    for action, reward, _, info in _rollout(env, {"velocity": 1.3}, 30):
        ctrl = 0.05 * np.sum(np.square(action))
        assert info["reward_forward"] == pytest.approx(-abs(info["x_velocity"] - 1.3))
        assert info["reward_ctrl"] == pytest.approx(-ctrl)
        assert reward == pytest.approx(-abs(info["x_velocity"] - 1.3) - ctrl)
        assert info["velocity"] == 1.3
        if previous_x is not None:
            assert info["x_velocity"] == pytest.approx((info["x_position"] - previous_x) / dt)
        previous_x = info["x_position"]


def test_half_cheetah_dir_reward_formula_and_symmetry():
    env = make("HalfCheetahDir-v0")
    forward = _rollout(env, {"direction": 1}, 30)
    backward = _rollout(env, {"direction": -1}, 30)
    for (action, r_fwd, _, i_fwd), (_, r_bwd, _, i_bwd) in zip(forward, backward, strict=True):
        ctrl = 0.05 * np.sum(np.square(action))
        assert r_fwd == pytest.approx(i_fwd["x_velocity"] - ctrl)
        assert r_bwd == pytest.approx(-i_bwd["x_velocity"] - ctrl)
        # Same seed and actions: identical physics, so the two rewards sum to -2 ctrl.
        assert i_fwd["x_velocity"] == i_bwd["x_velocity"]
        assert r_fwd + r_bwd == pytest.approx(-2 * ctrl)
    assert max(abs(i["x_velocity"]) for *_, i in forward) > 0.1  # it did move


def _check_ant_terms(env: gym.Env, action, reward, terminated, info) -> None:
    contact = 5e-4 * np.sum(np.square(np.clip(env.unwrapped.data.cfrc_ext, -1.0, 1.0)))
    ctrl = 0.005 * np.sum(np.square(action))
    assert info["reward_ctrl"] == pytest.approx(-ctrl)
    assert info["reward_contact"] == pytest.approx(-contact)
    assert info["reward_survive"] == (0.0 if terminated else 0.05)
    assert reward == pytest.approx(info["reward_forward"] + info["reward_survive"] - ctrl - contact)


def _step_all(env: gym.Env, task: dict, steps: int, seed: int = 0):
    """Like `_rollout`, but checks the shared ant terms at every step (cfrc_ext is live state)."""
    env.action_space.seed(seed)
    env.reset(seed=seed, options={"task": task})
    infos = []
    for _ in range(steps):
        action = env.action_space.sample()
        _, reward, terminated, _, info = env.step(action)
        _check_ant_terms(env, action, reward, terminated, info)
        infos.append(info)
        if terminated:
            break
    return infos


def test_ant_vel_reward_terms():
    env = make("AntVel-v0")
    infos = _step_all(env, {"velocity": 2.2}, 25)
    assert len(infos) == 25
    for info in infos:
        assert info["reward_forward"] == pytest.approx(-abs(info["x_velocity"] - 2.2) + 1.0)
    assert any(info["reward_contact"] < 0 for info in infos)  # contact cost is live


def test_ant_dir_reward_terms():
    env = make("AntDir-v0")
    for direction in (1, -1):
        for info in _step_all(env, {"direction": direction}, 20):
            assert info["reward_forward"] == pytest.approx(direction * info["x_velocity"])


def test_ant_goal_reward_is_minus_l1_distance_plus_4_and_observes_position():
    env = make("AntGoal-v0")
    goal = [2.5, -1.0]
    env.reset(seed=0, options={"task": {"goal": goal}})
    env.action_space.seed(0)
    obs, *_ = env.step(env.action_space.sample())
    assert obs.shape == (107,)
    np.testing.assert_allclose(obs[:2], env.unwrapped.data.qpos[:2])
    for info in _step_all(env, {"goal": goal}, 20):
        l1 = abs(info["x_position"] - 2.5) + abs(info["y_position"] + 1.0)
        assert info["distance"] == pytest.approx(l1)
        assert info["reward_forward"] == pytest.approx(-l1 + 4.0)


def test_ant_keeps_v5_termination_outside_healthy_z():
    env = make("AntVel-v0")
    env.reset(seed=0)
    base = env.unwrapped
    qpos = base.init_qpos.copy()
    qpos[2] = 1.5  # torso far above the healthy range [0.2, 1.0]
    base.set_state(qpos, np.zeros(base.model.nv))
    *_, terminated, _, info = env.step(np.zeros(8, np.float32))
    assert terminated and info["reward_survive"] == 0.0


def test_mujoco_horizon_is_200():
    for env_id in ("HalfCheetahVel-v0", "HalfCheetahDir-v0", "AntVel-v0", "AntDir-v0"):
        assert make(env_id).spec.max_episode_steps == 200


def test_reacher_goal_reward_observation_and_goal_disk():
    env = make("ReacherGoal-v0")
    base = env.unwrapped
    goal = [0.12, -0.05]
    first, _ = env.reset(seed=3, options={"task": {"goal": goal}})
    assert first.shape == (8,) and env.observation_space.shape == (8,)
    np.testing.assert_allclose(base.get_body_com("target")[:2], goal)  # the target is the goal
    again, _ = env.reset(seed=3)  # a reset keeps the task (v5 would redraw its target)
    np.testing.assert_array_equal(first, again)
    np.testing.assert_allclose(base.get_body_com("target")[:2], goal)
    env.action_space.seed(0)
    for _ in range(20):
        action = env.action_space.sample()
        _, reward, _, _, info = env.step(action)
        tip = base.get_body_com("fingertip")[:2]
        assert info["distance"] == pytest.approx(np.hypot(*(tip - goal)))
        assert info["reward_ctrl"] == pytest.approx(-np.sum(np.square(action)))
        assert reward == pytest.approx(info["reward_ctrl"] - info["distance"])
    other, _ = env.reset(seed=3, options={"task": {"goal": [-0.1, 0.1]}})
    np.testing.assert_array_equal(first, other)  # the goal is not observed
    goals = np.array([t["goal"] for t in base.sample_tasks(4000, np.random.default_rng(0))])
    radius = np.hypot(*goals.T)
    assert radius.max() <= 0.2 and np.mean(radius < 0.1) == pytest.approx(0.25, abs=0.03)


# ---------------------------------------------------------------- Bandit and tabular MDP


def test_bandit_rewards_are_bernoulli_with_the_arm_mean():
    means = [0.1, 0.35, 0.8, 0.5, 0.95]
    env = make("Bandit-K5-v0").unwrapped
    obs, _ = env.reset(seed=3, options={"task": {"means": means}})
    assert obs == 0
    n = 4000
    for arm in (0, 2, 4):
        rewards = np.array([env.step(arm)[1] for _ in range(n)])
        assert set(np.unique(rewards)) <= {0.0, 1.0}
        sigma = np.sqrt(means[arm] * (1 - means[arm]) / n)
        assert abs(rewards.mean() - means[arm]) < 4 * sigma


def test_bandit_rewards_are_reproducible_from_the_reset_seed():
    env = make("Bandit-K10-v0")

    def pulls(seed: int) -> list[float]:
        env.reset(seed=seed, options={"task": {"means": [0.5] * 10}})
        return [env.step(3)[1] for _ in range(10)]

    assert pulls(1) == pulls(1)
    assert pulls(1) != pulls(2)


def test_tabular_mdp_next_state_frequencies_match_the_transition_row():
    env = make("TabularMDP-v0").unwrapped
    task = env.sample_tasks(1, np.random.default_rng(7))[0]
    env.reset(seed=0, options={"task": task})
    action, n = 3, 5000
    counts = np.zeros(10)
    rewards = []
    for _ in range(n):
        env.reset()
        state, reward, *_, info = env.step(action)
        assert info["state"] == 0
        counts[state] += 1
        rewards.append(reward)
    row = np.array(task["transitions"][0][action])
    sigma = np.sqrt(row * (1 - row) / n)
    assert np.all(np.abs(counts / n - row) < 4 * sigma + 1e-3)
    mean = task["rewards_mean"][0][action]
    assert np.mean(rewards) == pytest.approx(mean, abs=4 / np.sqrt(n))
    assert np.std(rewards) == pytest.approx(1.0, abs=0.05)


def test_tabular_mdp_zero_reward_std_pays_the_mean_and_starts_in_state_0():
    env = gym.make("MetaRL/TabularMDP-v0", reward_std=0.0)
    task = env.unwrapped.sample_tasks(1, np.random.default_rng(0))[0]
    state, _ = env.reset(seed=0, options={"task": task})
    assert state == 0
    for _ in range(10):
        next_state, reward, *_ = env.step(1)
        assert reward == task["rewards_mean"][state][1]
        state = next_state


# ---------------------------------------------------------------- task sampling


@pytest.mark.parametrize(
    ("env_id", "key", "low", "high"),
    [
        ("Navigation2D-v0", "goal", -0.5, 0.5),
        ("HalfCheetahVel-v0", "velocity", 0.0, 2.0),
        ("AntVel-v0", "velocity", 0.0, 3.0),
        ("AntGoal-v0", "goal", -3.0, 3.0),
        ("Bandit-K50-v0", "means", 0.0, 1.0),
    ],
)
def test_uniform_task_samples_cover_the_documented_range(env_id, key, low, high):
    env = make(env_id).unwrapped
    tasks = env.sample_tasks(1000, np.random.default_rng(0))
    values = np.array([t[key] for t in tasks])
    assert values.min() >= low and values.max() <= high
    spread = 0.01 * (high - low)
    assert values.min() < low + spread and values.max() > high - spread
    assert values.mean() == pytest.approx((low + high) / 2, abs=0.05 * (high - low))
    again = env.sample_tasks(1000, np.random.default_rng(0))
    other = env.sample_tasks(1000, np.random.default_rng(1))
    assert tasks == again and tasks != other


@pytest.mark.parametrize("env_id", ["HalfCheetahDir-v0", "AntDir-v0"])
def test_directions_are_plus_minus_one_with_probability_one_half(env_id):
    tasks = make(env_id).unwrapped.sample_tasks(1000, np.random.default_rng(0))
    directions = np.array([t["direction"] for t in tasks])
    assert set(directions.tolist()) == {-1, 1}
    assert abs(np.mean(directions == 1) - 0.5) < 0.05  # 3 sigma = 0.047


def test_tabular_mdp_task_distribution():
    tasks = make("TabularMDP-v0").unwrapped.sample_tasks(200, np.random.default_rng(0))
    transitions = np.array([t["transitions"] for t in tasks])  # [200, 10, 5, 10]
    rewards = np.array([t["rewards_mean"] for t in tasks])
    np.testing.assert_allclose(transitions.sum(-1), 1.0, atol=1e-12)
    # Dirichlet(1, ..., 1) over 10 states: each entry has mean 1/10 and variance 9/1100.
    assert transitions.mean() == pytest.approx(0.1, abs=1e-12)
    assert transitions.var() == pytest.approx(9 / 1100, rel=0.05)
    assert rewards.mean() == pytest.approx(1.0, abs=0.03) and rewards.std() == pytest.approx(
        1.0, abs=0.03
    )


def test_sampling_never_touches_the_global_numpy_rng():
    np.random.seed(123)
    before = np.random.random()
    np.random.seed(123)
    for env_id in envs.FAMILY_IDS:
        gym.make(env_id).unwrapped.sample_tasks(3, np.random.default_rng(0))
    assert np.random.random() == before


# ---------------------------------------------------------------- the task property


def test_task_setter_validates_and_converts_lists_to_arrays():
    env = make("Navigation2D-v0")
    base = env.unwrapped
    base.task = {"goal": (0.25, np.float32(-0.5))}
    assert isinstance(base._goal, np.ndarray) and base._goal.dtype == np.float64
    assert base.task == {"goal": [0.25, -0.5]}
    assert type(base.task["goal"][1]) is float
    with pytest.raises(ValueError, match="outside"):
        base.task = {"goal": [0.6, 0.0]}
    with pytest.raises(ValueError, match="keys"):
        base.task = {"target": [0.1, 0.0]}
    with pytest.raises(ValueError, match="shape"):
        base.task = {"goal": [0.1, 0.0, 0.0]}
    with pytest.raises(ValueError, match="-1 or \\+1"):
        make("AntDir-v0").unwrapped.task = {"direction": 0}
    with pytest.raises(ValueError, match="integer"):
        make("HalfCheetahDir-v0").unwrapped.task = {"direction": 0.5}
    bad_rows = np.full((10, 5, 10), 0.2)
    with pytest.raises(ValueError, match="sum to 1"):
        make("TabularMDP-v0").unwrapped.task = {
            "transitions": bad_rows,
            "rewards_mean": 0 * bad_rows[..., 0],
        }
    assert base.task == {"goal": [0.25, -0.5]}  # failed sets leave the task alone


def test_wider_goal_range_kwarg_accepts_out_of_distribution_goals():
    env = gym.make("MetaRL/Navigation2D-v0", goal_low=-2.0, goal_high=2.0)
    env.unwrapped.task = {"goal": [1.5, -1.5]}
    assert env.unwrapped.task_description == "goal ~ U[-2, 2]^2"
    goals = np.array([t["goal"] for t in env.unwrapped.sample_tasks(500, np.random.default_rng(0))])
    assert goals.min() < -1.9 and goals.max() > 1.9


def test_set_attr_reaches_each_base_env_through_the_wrapper_stack():
    goals = [[0.3, 0.4], [-0.3, 0.0], [0.0, -0.5]]
    vec = gym.vector.SyncVectorEnv([lambda: make("Navigation2D-v0") for _ in goals])
    vec.set_attr("task", [{"goal": g} for g in goals])
    for sub_env in vec.envs:
        layer = sub_env
        while layer is not layer.unwrapped:  # TimeLimit, OrderEnforcing, PassiveEnvChecker
            assert "task" not in vars(layer)
            layer = layer.env
    assert [t["goal"] for t in vec.get_attr("task")] == goals
    vec.reset(seed=0)
    _, rewards, *_ = vec.step(np.zeros((3, 2), np.float32))
    np.testing.assert_allclose(rewards, [-0.5, -0.3, -0.5], atol=1e-12)


@pytest.mark.parametrize("env_id", ["AntGoal-v0", "TabularMDP-v0"])
def test_pickle_keeps_kwargs_and_task(env_id):
    kwargs = {"goal_high": 4.0} if env_id == "AntGoal-v0" else {"num_states": 4}
    env = gym.make(f"MetaRL/{env_id}", **kwargs).unwrapped
    task = env.sample_tasks(1, np.random.default_rng(0))[0]
    env.task = task
    clone = pickle.loads(pickle.dumps(env))
    assert clone.task == task and clone.task_space == env.task_space
    assert clone.observation_space == env.observation_space


def test_every_registered_family_is_a_task_env_with_the_paper_horizon():
    horizons = {"Navigation2D-v0": 100, "TabularMDP-v0": 10, "ReacherGoal-v0": 50}
    assert len(envs.FAMILY_IDS) == 11
    for env_id in envs.FAMILY_IDS:
        spec = gym.spec(env_id)
        name = env_id.removeprefix("MetaRL/")
        expected = horizons.get(name, 10 if name.startswith("Bandit") else 200)
        assert spec.max_episode_steps == expected
        assert isinstance(gym.make(env_id).unwrapped, TaskEnv)


@pytest.mark.parametrize("env_id", ["MetaRL/HalfCheetahVel-v0", "MetaRL/AntGoal-v0"])
def test_mujoco_sub_envs_share_one_model_and_keep_their_own_state(env_id):
    import mujoco

    first, second = gym.make(env_id), gym.make(env_id)
    assert first.unwrapped.model is second.unwrapped.model
    assert first.unwrapped.data is not second.unwrapped.data
    # a private model gives the same trajectory: sharing changes memory, not dynamics
    private = gym.make(env_id).unwrapped
    private.model = mujoco.MjModel.from_xml_path(private.fullpath)
    private.data = mujoco.MjData(private.model)
    actions = np.random.default_rng(0).uniform(-1, 1, (20, *first.action_space.shape))
    obs_shared, obs_private = first.reset(seed=3)[0], private.reset(seed=3)[0]
    second.reset(seed=4)
    for action in actions:
        obs_shared = first.step(action)[0]
        second.step(-action)  # interleaved steps of another env must not leak into this one
        obs_private = private.step(action)[0]
    np.testing.assert_array_equal(obs_shared, obs_private)
