"""train.clip_actions: the env gets the action clipped to its Box, the episodes keep the draw."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gymnasium import spaces
from gymnasium.envs.registration import register
from gymnasium.utils import EzPickle

from meta_rl.agents.policies import make_policy
from meta_rl.builders import build_sampler
from meta_rl.config import config_from_dict
from meta_rl.envs import TaskEnv
from meta_rl.functional import expand_to_tasks, policy_params
from meta_rl.samplers import MuJoCoSampler, VectorSampler
from meta_rl.samplers.base import action_bounds
from meta_rl.samplers.process import ProcessSampler
from meta_rl.samplers.torch_native import BatchedNavigation2D, TorchSampler

RECORDER = "ClipTests/Recorder-v0"
BOUND = 0.3


class RecorderEnv(TaskEnv):
    """Rewards ``-sum(a^2)`` of the action it is given, and keeps every action it was given."""

    def __init__(self) -> None:
        EzPickle.__init__(self)
        self.task_space = spaces.Dict({"goal": spaces.Box(-1.0, 1.0, shape=())})
        self.observation_space = spaces.Box(-np.inf, np.inf, shape=(1,), dtype=np.float32)
        self.action_space = spaces.Box(-BOUND, BOUND, shape=(2,), dtype=np.float32)
        self.task = {"goal": 0.0}
        self.received: list[np.ndarray] = []

    def sample_tasks(self, n: int, rng: np.random.Generator) -> list[dict]:
        return [{"goal": float(g)} for g in rng.uniform(-1, 1, n)]

    def _apply_task(self, task: dict) -> None:
        self._goal = float(task["goal"])

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed, options=options)
        return np.zeros(1, dtype=np.float32), {}

    def step(self, action):
        action = np.array(action)
        self.received.append(action)
        cost = float(np.sum(np.square(action, dtype=np.float64)))
        return np.full(1, self._goal, dtype=np.float32), -cost, False, False, {}


register(id=RECORDER, entry_point=RecorderEnv, max_episode_steps=6)


def _sample(sampler, init_std: float = 1.0, seed: int = 0):
    policy = make_policy(
        sampler.observation_space, sampler.action_space, (8,), "tanh", init_std=init_std
    )
    policy.reset_parameters(torch.Generator().manual_seed(seed))
    params = expand_to_tasks({k: v.detach() for k, v in policy_params(policy).items()}, 2)
    tasks = sampler.sample_tasks()
    return sampler.sample(policy, params, tasks)


def _assert_same(a, b, *, skip: tuple[str, ...] = ()) -> None:
    assert a.tensors().keys() == b.tensors().keys()
    for name, tensor in a.tensors().items():
        if name not in skip:
            assert torch.equal(tensor, getattr(b, name)), name


@pytest.mark.parametrize("clip", [True, False])
def test_the_env_gets_the_clipped_action_and_the_episodes_keep_the_draw(clip):
    sampler = VectorSampler(RECORDER, 2, 3, seed=5, clip_actions=clip)
    episodes = _sample(sampler)
    drawn = episodes.actions.permute(1, 2, 0, 3).reshape(6, 6, 2).numpy()  # [env, t, a]
    assert np.abs(drawn).max() > BOUND  # std 1 against a bound of 0.3: most draws lie outside
    for i, env in enumerate(sampler.envs.envs):
        received = np.stack(env.unwrapped.received)
        expected = np.clip(drawn[i], -BOUND, BOUND) if clip else drawn[i]
        assert np.array_equal(received, expected)  # off: exactly the raw draw, as before
    # the learner's log-probability of the stored (unclipped) action is the one recorded
    policy = make_policy(sampler.observation_space, sampler.action_space, (8,), "tanh")
    policy.reset_parameters(torch.Generator().manual_seed(0))
    recomputed = policy(episodes.observations[:-1]).log_prob(episodes.actions)
    torch.testing.assert_close(recomputed, episodes.log_probs)


def test_clipping_changes_only_what_the_env_sees():
    on = _sample(VectorSampler(RECORDER, 2, 3, seed=5, clip_actions=True))
    off = _sample(VectorSampler(RECORDER, 2, 3, seed=5, clip_actions=False))
    _assert_same(on, off, skip=("rewards",))
    clipped = on.actions.clamp(-BOUND, BOUND).double()
    torch.testing.assert_close(on.rewards.double(), -clipped.square().sum(-1))
    assert (on.rewards > off.rewards).any() and (on.rewards >= off.rewards).all()


def test_worker_processes_clip_as_the_in_process_sampler():
    kwargs = {"num_tasks": 2, "episodes_per_task": 3, "seed": 5}
    vector = _sample(VectorSampler(RECORDER, **kwargs))
    with ProcessSampler(RECORDER, num_workers=2, **kwargs) as process:
        parallel = _sample(process)
    _assert_same(vector, parallel)  # a reward of the raw draw would differ here


@pytest.mark.parametrize("clip", [True, False])
def test_batched_mujoco_equals_vector_bitwise_and_clipping_only_cuts_the_control_cost(clip):
    env_id, kwargs = "MetaRL/HalfCheetahVel-v0", {"seed": 2, "max_episode_steps": 12}
    vector = _sample(VectorSampler(env_id, 2, 2, clip_actions=clip, **kwargs))
    batched = _sample(MuJoCoSampler(env_id, 2, 2, threads=1, clip_actions=clip, **kwargs))
    _assert_same(vector, batched)
    if clip:  # MuJoCo clamps ctrl to its range itself: same motion, only the cost differs
        raw = _sample(VectorSampler(env_id, 2, 2, clip_actions=False, **kwargs))
        _assert_same(vector, raw, skip=("rewards",))
        a = vector.actions.double()
        saved = 0.05 * (a.square().sum(-1) - a.clamp(-1, 1).square().sum(-1))
        assert saved.max() > 0.05
        torch.testing.assert_close(
            vector.rewards.double() - raw.rewards.double(), saved, rtol=0, atol=1e-5
        )


def test_the_torch_native_sampler_clamps_to_the_same_bounds(monkeypatch):
    seen: list[torch.Tensor] = []
    step = BatchedNavigation2D.step

    def spy(self, action, generator):
        seen.append(action.clone())
        return step(self, action, generator)

    monkeypatch.setattr(BatchedNavigation2D, "step", spy)
    kwargs = {"seed": 4, "max_episode_steps": 8}
    native = _sample(TorchSampler("MetaRL/Navigation2D-v0", 2, 3, **kwargs))
    vector = _sample(VectorSampler("MetaRL/Navigation2D-v0", 2, 3, **kwargs))
    _assert_same(native, vector)
    sent = torch.stack(seen).view_as(native.actions)
    assert torch.equal(sent, native.actions.clamp(-0.1, 0.1))
    assert (native.actions.abs() > 0.1).any()


def test_the_switch_is_a_config_key_and_discrete_spaces_are_left_alone():
    config = config_from_dict(
        {"env": {"id": "MetaRL/Navigation2D-v0"}, "train": {"clip_actions": False}}
    )
    assert build_sampler(config, torch.device("cpu")).clip_to is None
    default = config_from_dict({"env": {"id": "MetaRL/Navigation2D-v0"}})
    low, high = build_sampler(default, torch.device("cpu")).clip_to
    assert low.dtype == np.float32 and np.array_equal(low, -high)
    assert np.array_equal(high, np.full(2, 0.1, dtype=np.float32))
    assert action_bounds(spaces.Discrete(5), clip=True) is None
    assert VectorSampler("MetaRL/Bandit-K5-v0", 1, 1, seed=0).clip_to is None
