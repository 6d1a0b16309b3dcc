from __future__ import annotations

import typing
from datetime import datetime
from pathlib import Path

import gymnasium
import pytest

from meta_rl.agents.choices import Activation
from meta_rl.algorithms import settings as algorithm_settings
from meta_rl.algorithms.settings import ALGORITHM_SETTINGS
from meta_rl.config import (
    ALGORITHMS,
    Config,
    ConfigError,
    EnvConfig,
    PolicyConfig,
    TrainConfig,
    config_from_dict,
    config_to_dict,
    default_run_dir,
    load_config,
    run_name,
    save_config,
)

DUMMY_ID = "MetaRLTest/Dummy-v0"


class DummyEnv(gymnasium.Env):
    """Never instantiated by the config code: only its constructor signature is read."""

    def __init__(self, goal_range: float = 0.5, render_mode: str | None = None) -> None:
        raise AssertionError("validation must not build the environment")


@pytest.fixture(autouse=True)
def dummy_env():
    gymnasium.register(DUMMY_ID, entry_point=DummyEnv, max_episode_steps=7)
    yield
    del gymnasium.envs.registry[DUMMY_ID]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    return path


MINIMAL = f"env:\n  id: {DUMMY_ID}\n"


def test_defaults_are_the_maml_paper_navigation_settings(tmp_path):
    cfg = load_config(write(tmp_path, MINIMAL))
    assert cfg == Config(env=EnvConfig(id=DUMMY_ID))
    assert cfg.env.kwargs == {} and cfg.env.max_episode_steps is None
    assert (cfg.policy.hidden_sizes, cfg.policy.activation, cfg.policy.init_std) == (
        [100, 100],
        "relu",
        1.0,
    )
    a = cfg.algo
    assert (a.name, a.inner_lr, a.num_inner_steps, a.first_order) == ("maml_trpo", 0.1, 1, False)
    assert (a.gamma, a.gae_lambda, a.normalize_advantages) == (0.99, 1.0, True)
    assert (a.max_kl, a.cg_iters, a.cg_damping) == (0.01, 10, 1e-5)
    assert (a.ls_max_steps, a.ls_backtrack_ratio) == (15, 0.8)
    t = cfg.train
    assert (t.meta_batch_size, t.episodes_per_task, t.iterations, t.seed) == (20, 20, 500, 1)
    assert (t.device, t.checkpoint_every, t.num_threads) == ("cpu", 50, 1)
    assert ALGORITHMS == ("maml_trpo", "reptile", "promp")
    assert cfg.policy.kind == "mlp"
    a = load_config(write(tmp_path, MINIMAL + "algo: {name: reptile}\n")).algo
    assert (a.inner_optimizer, a.inner_loss, a.ppo_epochs, a.ppo_clip) == (
        "sgd",
        "reinforce",
        4,
        0.2,
    )
    assert (a.outer_lr, a.outer_lr_final, a.outer_anneal_iterations) == (1.0, 0.0, None)
    assert (a.outer_optimizer, a.sb3_algo, a.sb3_steps, a.sb3_kwargs) == ("none", None, 2048, {})


def test_every_field_has_a_doc_comment():
    """Each config field, sections and algorithm settings alike, is followed by its docstring."""
    import inspect

    classes = (EnvConfig, PolicyConfig, TrainConfig, Config)
    for cls in (*classes, algorithm_settings.PolicyGradientSettings, *ALGORITHM_SETTINGS.values()):
        lines = inspect.getsource(cls).splitlines()
        for name in inspect.get_annotations(cls):
            i = next(i for i, line in enumerate(lines) if line.strip().startswith(f"{name}:"))
            indent = len(lines[i]) - len(lines[i].lstrip())
            i += 1
            while lines[i].strip() == ")" or len(lines[i]) - len(lines[i].lstrip()) > indent:
                i += 1  # the rest of a default that spans lines
            assert lines[i].strip().startswith('"""'), f"{cls.__name__}.{name}"


def test_activation_choices_are_the_policies_activations():
    from meta_rl.agents.policies import ACTIVATIONS

    assert tuple(ACTIVATIONS) == typing.get_args(Activation)


def test_full_yaml_loads_with_ints_for_floats_and_yaml12_exponents(tmp_path):
    text = f"""
env:
  id: {DUMMY_ID}
  kwargs: {{goal_range: 2}}
  max_episode_steps: 50
policy: {{hidden_sizes: [64, 32], activation: tanh, init_std: 2}}
algo:
  inner_lr: 1
  gamma: 1
  cg_damping: 1e-3
  first_order: true
train: {{meta_batch_size: 3, iterations: 0, device: auto, num_threads: 2}}
"""
    cfg = load_config(write(tmp_path, text))
    assert cfg.env.kwargs == {"goal_range": 2}
    assert cfg.env.max_episode_steps == 50
    assert cfg.policy == PolicyConfig(hidden_sizes=[64, 32], activation="tanh", init_std=2.0)
    assert type(cfg.policy.init_std) is float and type(cfg.algo.gamma) is float
    assert (cfg.algo.inner_lr, cfg.algo.gamma, cfg.algo.cg_damping) == (1.0, 1.0, 0.001)
    assert cfg.algo.first_order is True
    assert cfg.train == TrainConfig(meta_batch_size=3, iterations=0, device="auto", num_threads=2)


def test_save_config_round_trips(tmp_path):
    cfg = load_config(
        write(tmp_path, MINIMAL),
        ["algo.cg_damping=3.5e-7", "policy.hidden_sizes=[7]", "env.kwargs.goal_range=0.25"],
    )
    out = tmp_path / "resolved.yaml"
    save_config(cfg, out)
    again = load_config(out)
    assert again == cfg
    assert config_to_dict(again) == config_to_dict(cfg)
    assert config_to_dict(cfg)["algo"]["cg_damping"] == 3.5e-7
    assert set(config_to_dict(cfg)) == {"env", "policy", "algo", "train"}


def test_overrides_apply_in_order_and_parse_values_as_yaml(tmp_path):
    cfg = load_config(
        write(tmp_path, MINIMAL + "algo: {inner_lr: 0.5}\n"),
        [
            "algo.inner_lr=0.05",
            "train.seed=7",
            "train.seed=8",  # last one wins
            "policy.hidden_sizes=[16, 16, 16]",
            "algo.first_order=true",
            "train.num_threads=null",
            "env.kwargs.goal_range=[0.1, 0.2]",
            "train.device=cuda:1",
        ],
    )
    assert cfg.algo.inner_lr == 0.05
    assert cfg.train.seed == 8
    assert cfg.policy.hidden_sizes == [16, 16, 16]
    assert cfg.algo.first_order is True
    assert cfg.train.num_threads is None
    assert cfg.env.kwargs == {"goal_range": [0.1, 0.2]}
    assert cfg.train.device == "cuda:1"


def test_config_from_dict_does_not_mutate_its_input():
    data = {"env": {"id": DUMMY_ID, "kwargs": {}}}
    config_from_dict(data, ["env.kwargs.goal_range=1.0", "algo.gamma=0.5"])
    assert data == {"env": {"id": DUMMY_ID, "kwargs": {}}}


BAD_CASES = [
    # (extra YAML, overrides, exact message)
    ("algo: {inner_lrr: 0.1}", [], "config error: unknown key 'algo.inner_lrr'"),
    ("trian: {seed: 1}", [], "config error: unknown key 'trian'"),
    ("", ["algo.inner_lrr=0.1"], "config error: unknown key 'algo.inner_lrr'"),
    ("algo: {inner_lr: 0.1, extra: {deep: 1}}", [], "config error: unknown key 'algo.extra'"),
    (
        "",
        ["algo.inner_lr.x=1"],
        "config error: unknown key 'algo.inner_lr.x': 'algo.inner_lr' is not a section",
    ),
    ("", ["algo"], "config error: override 'algo': expected KEY=VALUE, e.g. algo.inner_lr=0.05"),
    ("", ["train.meta_batch_size=0"], "config error: train.meta_batch_size: must be >= 1, got 0"),
    (
        "",
        ["train.episodes_per_task=0"],
        "config error: train.episodes_per_task: must be >= 1, got 0",
    ),
    ("", ["train.iterations=-1"], "config error: train.iterations: must be >= 0, got -1"),
    ("", ["algo.inner_lr=0"], "config error: algo.inner_lr: must be > 0, got 0.0"),
    ("", ["algo.inner_lr=-0.1"], "config error: algo.inner_lr: must be > 0, got -0.1"),
    ("", ["algo.gamma=0"], "config error: algo.gamma: must be in (0, 1], got 0.0"),
    ("", ["algo.gamma=1.01"], "config error: algo.gamma: must be in (0, 1], got 1.01"),
    ("", ["algo.max_kl=0"], "config error: algo.max_kl: must be > 0, got 0.0"),
    (
        "",
        ["algo.ls_backtrack_ratio=1"],
        "config error: algo.ls_backtrack_ratio: must be in (0, 1), got 1.0",
    ),
    ("", ["algo.inner_lr=.nan"], "config error: algo.inner_lr: must be finite, got nan"),
    (
        "",
        ["policy.activation=swish"],
        "config error: policy.activation: must be one of relu, tanh, sigmoid, elu, gelu, silu, "
        "softplus, leaky_relu, got 'swish'",
    ),
    (
        "",
        ["policy.hidden_sizes=[]"],
        "config error: policy.hidden_sizes: must not be empty, got []",
    ),
    (
        "",
        ["policy.hidden_sizes=[8, 0]"],
        "config error: policy.hidden_sizes[1]: must be >= 1, got 0",
    ),
    (
        "",
        ["algo.name=reptil"],
        "config error: algo.name: must be one of maml_trpo, reptile, promp, got 'reptil'",
    ),
    # Reptile's fields
    (
        "",
        ["algo.name=reptile", "algo.inner_optimizer=rmsprop"],
        "config error: algo.inner_optimizer: must be one of sgd, adam, got 'rmsprop'",
    ),
    (
        "",
        ["algo.name=reptile", "algo.inner_loss=trpo"],
        "config error: algo.inner_loss: must be one of reinforce, ppo, got 'trpo'",
    ),
    (
        "",
        ["algo.name=reptile", "algo.ppo_epochs=0"],
        "config error: algo.ppo_epochs: must be >= 1, got 0",
    ),
    (
        "",
        ["algo.name=reptile", "algo.outer_lr=0"],
        "config error: algo.outer_lr: must be > 0, got 0.0",
    ),
    (
        "",
        ["algo.name=reptile", "algo.outer_lr_final=-0.1"],
        "config error: algo.outer_lr_final: must be >= 0, got -0.1",
    ),
    (
        "",
        ["algo.name=reptile", "algo.outer_anneal_iterations=0"],
        "config error: algo.outer_anneal_iterations: must be >= 1 or null, got 0",
    ),
    (
        "",
        ["algo.name=reptile", "algo.outer_optimizer=lbfgs"],
        "config error: algo.outer_optimizer: must be one of none, sgd, adam, got 'lbfgs'",
    ),
    (
        "",
        ["algo.name=reptile", "algo.sb3_algo=sac"],
        "config error: algo.sb3_algo: must be one of ppo, a2c, null, got 'sac'",
    ),
    (
        "",
        ["algo.name=reptile", "algo.num_inner_steps=0"],
        "config error: algo.num_inner_steps: reptile needs >= 1, got 0",
    ),
    (
        "",
        ["algo.name=reptile", "algo.sb3_algo=ppo"],
        "config error: policy.kind: must be sb3 when algo.sb3_algo is set, got 'mlp'",
    ),
    (
        "",
        ["policy.kind=gru", "train.sampler=process"],
        "config error: policy.kind: gru needs train.sampler vector (the sampler that carries a "
        "recurrent state), got 'gru'",
    ),
    (
        "",
        ["policy.kind=lstm"],
        "config error: policy.kind: must be one of mlp, gru, sb3, got 'lstm'",
    ),
    (
        "",
        ["train.sampler=vectr"],
        "config error: train.sampler: must be one of vector, process, torch, mujoco, mjx, "
        "got 'vectr'",
    ),
    ("", ["train.num_workers=0"], "config error: train.num_workers: must be >= 1 or null, got 0"),
    ("", ["algo.task_chunk=-1"], "config error: algo.task_chunk: must be >= 0, got -1"),
    (
        "",
        ["algo.fisher_subsample=0"],
        "config error: algo.fisher_subsample: must be in (0, 1], got 0.0",
    ),
    (
        "",
        ["train.device=tpu"],
        "config error: train.device: must be one of cpu, cuda, auto, cuda:N, got 'tpu'",
    ),
    (
        "",
        ["env.max_episode_steps=0"],
        "config error: env.max_episode_steps: must be >= 1 or null, got 0",
    ),
    (
        "",
        ["env.max_episode_steps=[3]"],
        "config error: env.max_episode_steps: expected int or null, got [3] (list)",
    ),
    ("", ["train.num_threads=0"], "config error: train.num_threads: must be >= 1 or null, got 0"),
    # wrong types: bools and strings are not numbers, floats are not ints
    (
        "",
        ["train.meta_batch_size=true"],
        "config error: train.meta_batch_size: expected int, got True (bool)",
    ),
    ("", ["algo.gamma=false"], "config error: algo.gamma: expected float, got False (bool)"),
    ("", ["algo.inner_lr='0.1'"], "config error: algo.inner_lr: expected float, got '0.1' (str)"),
    ("", ["train.iterations=2.5"], "config error: train.iterations: expected int, got 2.5 (float)"),
    (
        "",
        ["policy.hidden_sizes=[8, true]"],
        "config error: policy.hidden_sizes[1]: expected int, got True (bool)",
    ),
    ("", ["algo.first_order=1"], "config error: algo.first_order: expected bool, got 1 (int)"),
    ("", ["policy.activation=3"], "config error: policy.activation: expected str, got 3 (int)"),
    (
        "",
        ["train.num_threads=two"],
        "config error: train.num_threads: expected int or null, got 'two' (str)",
    ),
    ("train: 5", [], "config error: train: expected a mapping, got int"),
    ("", ["env.kwargs=[1]"], "config error: env.kwargs: expected dict[str, Any], got [1] (list)"),
    # env id and kwargs, checked against the registry without building the env
    ("", ["env.id=MetaRL/Nope-v0"], "config error: env.id: unknown environment 'MetaRL/Nope-v0'"),
    (
        "",
        ["env.id=MetaRLTest/Dumy-v0"],
        "config error: env.id: unknown environment 'MetaRLTest/Dumy-v0'"
        " (did you mean 'MetaRLTest/Dummy-v0'?)",
    ),
    (
        "",
        ["env.kwargs.goal_rnage=1"],
        f"config error: unknown key 'env.kwargs.goal_rnage': {DUMMY_ID}"
        " takes no argument 'goal_rnage'",
    ),
]


@pytest.mark.parametrize(("extra", "overrides", "message"), BAD_CASES)
def test_bad_config_gives_one_line_error_naming_the_key(tmp_path, extra, overrides, message):
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, MINIMAL + extra + "\n"), overrides)
    assert str(info.value) == message
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "expected a mapping at top level, got NoneType"),
        ("- 1\n- 2\n", "expected a mapping at top level, got list"),
        ("env: {id: [unclosed\n", "invalid YAML: "),
        ("policy: {}\n", "config error: env: required key is missing"),
        ("env: {kwargs: {}}\n", "config error: env.id: required key is missing"),
        # safe loading: a Python tag is a YAML error, never executed
        ("env: !!python/object/apply:os.system ['echo pwned']\n", "invalid YAML: "),
    ],
)
def test_unusable_files_give_one_line_errors(tmp_path, text, message):
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    assert message in str(info.value)
    assert str(info.value).startswith("config error: ")
    assert "\n" not in str(info.value)


def test_missing_file_is_a_one_line_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"^config error: cannot read .*nope\.yaml: No such file"):
        load_config(tmp_path / "nope.yaml")


def test_module_prefixed_env_id_imports_the_module(tmp_path):
    cfg = load_config(write(tmp_path, "env: {id: 'gymnasium:CartPole-v1'}\n"))
    assert cfg.env.id == "gymnasium:CartPole-v1"
    with pytest.raises(ConfigError, match=r"^config error: env.id: cannot import module 'nomod_x'"):
        load_config(write(tmp_path, "env: {id: 'nomod_x:CartPole-v1'}\n"))


def test_run_name_and_default_run_dir():
    cfg = config_from_dict({"env": {"id": DUMMY_ID}}, ["train.seed=3"])
    now = datetime(2024, 5, 6, 7, 8, 9)
    assert run_name(cfg, now) == "Dummy-v0__maml_trpo__3__20240506-070809"
    assert default_run_dir(cfg, now=now) == Path("runs/Dummy-v0__maml_trpo__3__20240506-070809")
    assert default_run_dir(cfg, "out", now) == Path("out/Dummy-v0__maml_trpo__3__20240506-070809")


class BaseWithNames(gymnasium.Env):
    def __init__(self, frame_skip: int = 5, render_mode: str | None = None) -> None:
        raise AssertionError("never built")


class ForwardsKwargs(BaseWithNames):
    def __init__(self, velocity_range: tuple[float, float] = (0.0, 2.0), **kwargs) -> None:
        super().__init__(**kwargs)


class OpenEnded(gymnasium.Env):
    def __init__(self, **kwargs) -> None:
        raise AssertionError("never built")


@pytest.mark.parametrize(
    ("entry_point", "kwargs", "bad_key"),
    [
        (ForwardsKwargs, {"velocity_range": [0, 3], "frame_skip": 2, "render_mode": None}, None),
        (ForwardsKwargs, {"velocity_range": [0, 3], "frame_skp": 2}, "frame_skp"),
        (OpenEnded, {"anything": 1}, None),  # **kwargs to nowhere known: cannot judge, accept
    ],
)
def test_env_kwargs_checked_through_forwarding_constructors(entry_point, kwargs, bad_key):
    gymnasium.register("MetaRLTest/Fwd-v0", entry_point=entry_point)
    try:
        data = {"env": {"id": "MetaRLTest/Fwd-v0", "kwargs": kwargs}}
        if bad_key is None:
            assert config_from_dict(data).env.kwargs == kwargs
        else:
            with pytest.raises(
                ConfigError, match=rf"^config error: unknown key 'env.kwargs.{bad_key}'"
            ):
                config_from_dict(data)
    finally:
        del gymnasium.envs.registry["MetaRLTest/Fwd-v0"]


def test_real_family_kwargs_are_checked_without_building_it():
    pytest.importorskip("meta_rl.envs")
    if "MetaRL/HalfCheetahVel-v0" not in gymnasium.envs.registry:
        pytest.skip("HalfCheetahVel not registered")
    data = {"env": {"id": "MetaRL/HalfCheetahVel-v0"}}
    cfg = config_from_dict(data, ["env.kwargs.velocity_range=[0, 3]", "env.kwargs.frame_skip=5"])
    assert cfg.env.kwargs == {"velocity_range": [0, 3], "frame_skip": 5}
    with pytest.raises(ConfigError, match=r"^config error: unknown key 'env.kwargs.velocty_range'"):
        config_from_dict(data, ["env.kwargs.velocty_range=[0, 3]"])


def test_config_and_cli_load_without_torch():
    """A bad config is reported before torch (seconds to import) is loaded."""
    import subprocess
    import sys

    code = "import sys, meta_rl.cli, meta_rl.config; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
