"""Typed experiment configuration: dataclasses loaded from YAML, overridable with `--set a.b=v`.

Every value is checked here, before any environment is built, so a typo costs one line of error
output instead of a crashed run ten minutes in. Defaults are the MAML paper's 2D-navigation
settings (Finn et al. 2017, section 5.3 and appendix).
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import inspect
import math
import re
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import dacite
import yaml

ALGORITHMS = ("maml_trpo", "reptile")
"""Meta-learners the trainer knows."""
ACTIVATIONS = ("relu", "tanh", "sigmoid", "elu")
DEVICES = ("cpu", "cuda", "auto")
SAMPLERS = ("vector", "process", "torch")
POLICY_KINDS = ("mlp", "gru", "sb3")
INNER_OPTIMIZERS = ("sgd", "adam")
INNER_LOSSES = ("reinforce", "ppo")
OUTER_OPTIMIZERS = ("none", "sgd", "adam")
SB3_ALGOS = ("ppo", "a2c")


class ConfigError(ValueError):
    """A bad configuration; `str(err)` is one line that names the offending key."""

    def __init__(self, message: str) -> None:
        super().__init__("config error: " + " ".join(str(message).split()))


@dataclass
class EnvConfig:
    id: str
    """registered Gymnasium id of the task family, e.g. "MetaRL/Navigation2D-v0" """
    kwargs: dict[str, Any] = field(default_factory=dict)
    """constructor kwargs of the family (its task-distribution knobs)"""
    max_episode_steps: int | None = None
    """horizon override; None keeps the registered time limit"""


@dataclass
class PolicyConfig:
    kind: str = "mlp"
    """mlp | gru (first hidden layer a GRU) | sb3 (an SB3 ActorCriticPolicy's actor)"""
    hidden_sizes: list[int] = field(default_factory=lambda: [100, 100])
    """widths of the policy MLP's hidden layers"""
    activation: str = "relu"
    """hidden-layer nonlinearity: relu | tanh | sigmoid | elu"""
    init_std: float = 1.0
    """initial standard deviation of the Gaussian policy"""


@dataclass
class AlgoConfig:
    name: str = "maml_trpo"
    """meta-learner (see ALGORITHMS)"""
    inner_lr: float = 0.1
    """step size of the inner (adaptation) policy-gradient steps"""
    num_inner_steps: int = 1
    """inner gradient steps per task; 0 turns MAML into plain multi-task training"""
    first_order: bool = False
    """drop second-order terms of the meta-gradient (FOMAML)"""
    gamma: float = 0.99
    """discount factor"""
    gae_lambda: float = 1.0
    """GAE lambda; 1.0 gives Monte-Carlo returns minus the baseline"""
    normalize_advantages: bool = True
    """standardise advantages per task before each loss"""
    max_kl: float = 0.01
    """TRPO trust-region size (mean KL between old and new adapted policies)"""
    cg_iters: int = 10
    """conjugate-gradient iterations for the TRPO step direction"""
    cg_damping: float = 1e-5
    """damping added to the Fisher-vector product"""
    ls_max_steps: int = 15
    """maximum backtracking line-search steps"""
    ls_backtrack_ratio: float = 0.8
    """step shrink factor per line-search step"""
    task_chunk: int = 10
    """tasks per meta-gradient / Fisher-product graph (0: all at once); same math, faster"""
    fisher_subsample: float = 1.0
    """Fisher products on every round(1/x)-th step, inner and post-adaptation (1.0: exact)"""
    analytic: bool = True
    """closed-form meta-gradient and Fisher derivatives when the policy is a plain Gaussian MLP
    (same numbers as autograd, faster); false: autograd for every policy"""
    inner_optimizer: str = "sgd"
    """reptile: optimiser of the inner updates (a fresh one per task and iteration): sgd | adam"""
    inner_loss: str = "reinforce"
    """reptile: inner objective: reinforce (one step per batch) | ppo (ppo_epochs per batch)"""
    ppo_epochs: int = 4
    """reptile with inner_loss ppo: full-batch PPO epochs on each freshly sampled batch"""
    ppo_clip: float = 0.2
    """reptile with inner_loss ppo: clipping range of the probability ratio"""
    outer_lr: float = 1.0
    """reptile: eps, the meta step size theta += eps * mean(theta' - theta), at iteration 0"""
    outer_lr_final: float = 0.0
    """reptile: eps reached linearly after outer_anneal_iterations (= outer_lr: constant eps)"""
    outer_anneal_iterations: int | None = None
    """reptile: length of the linear eps schedule; null: train.iterations"""
    outer_optimizer: str = "none"
    """reptile: none (interpolate) | sgd | adam (theta - mean(theta') as its gradient, lr eps)"""
    sb3_algo: str | None = None
    """reptile: run each task's inner loop as this SB3 algorithm (ppo | a2c); policy.kind sb3"""
    sb3_steps: int = 2048
    """reptile with sb3_algo: environment steps of each task's SB3 learn()"""
    sb3_kwargs: dict[str, Any] = field(default_factory=dict)
    """reptile with sb3_algo: extra SB3 constructor kwargs (n_steps, batch_size, n_epochs, ...)"""


@dataclass
class TrainConfig:
    meta_batch_size: int = 20
    """tasks per meta-iteration"""
    episodes_per_task: int = 20
    """episodes sampled per task, for each of the pre- and post-adaptation batches"""
    iterations: int = 500
    """meta-iterations to run"""
    seed: int = 1
    """seed of every random generator of the run"""
    device: str = "cpu"
    """torch device for the learner: cpu | cuda | cuda:N | auto"""
    checkpoint_every: int = 50
    """keep a numbered checkpoint every N iterations (0: only checkpoints/latest.pt)"""
    num_threads: int | None = None
    """torch intra-op threads of the learner; None: one per core"""
    sampler: str = "vector"
    """sampler backend: vector (in-process) | process (worker per core) | torch (tensor envs)"""
    num_workers: int | None = None
    """worker processes of the process sampler; None: one per core"""


@dataclass
class Config:
    env: EnvConfig
    """task family"""
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    """policy network"""
    algo: AlgoConfig = field(default_factory=AlgoConfig)
    """meta-learning algorithm"""
    train: TrainConfig = field(default_factory=TrainConfig)
    """run length, batch sizes, seed, device"""


# ---------------------------------------------------------------------------------------------
# YAML


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads `1e-5` as a float (YAML 1.2); PyYAML alone makes it a string."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def _yaml_load(text: str) -> Any:
    # Same safety as yaml.safe_load: _Loader only adds a float resolver to SafeLoader.
    return yaml.load(text, Loader=_Loader)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


# ---------------------------------------------------------------------------------------------
# loading


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> Config:
    """Read a YAML file, apply `a.b=value` overrides, type-check and validate it."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        data = _yaml_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {_one_line(exc)}") from None
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: expected a mapping at top level, got {type(data).__name__}")
    return config_from_dict(data, overrides)


def config_from_dict(data: Mapping[str, Any], overrides: Sequence[str] = ()) -> Config:
    """Build a validated Config from plain data (as YAML gives it) plus `a.b=value` overrides."""
    data = _copy_tree(data)
    for item in overrides:
        apply_override(data, item)
    _check_tree(Config, data, "")
    try:
        cfg = dacite.from_dict(
            Config,
            data,
            config=dacite.Config(strict=True, check_types=True, type_hooks={float: _int_to_float}),
        )
    except dacite.WrongTypeError as exc:
        raise ConfigError(f"{exc.field_path}: {_type_message(exc.field_type, exc.value)}") from None
    except dacite.MissingValueError as exc:
        raise ConfigError(f"{exc.field_path}: required key is missing") from None
    except dacite.DaciteError as exc:  # _check_tree should have caught it; keep it one line
        raise ConfigError(_one_line(exc)) from None
    validate_config(cfg)
    return cfg


def apply_override(data: dict[str, Any], item: str) -> None:
    """Apply one `a.b=value` override in place; the value is parsed as YAML (`[64, 64]`, `true`)."""
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"override '{item}': expected KEY=VALUE, e.g. algo.inner_lr=0.05")
    try:
        value = _yaml_load(raw)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{key}: cannot parse override value {raw!r}: {_one_line(exc)}") from None
    parts = key.split(".")
    node: dict[str, Any] = data
    cls: Any = Config
    for depth, part in enumerate(parts):
        prefix = ".".join(parts[: depth + 1])
        last = depth == len(parts) - 1
        if cls is not None:  # inside the typed schema: the path must exist there
            hints = _field_types(cls)
            if part not in hints:
                raise ConfigError(f"unknown key '{prefix}'")
            sub = hints[part]
            cls = sub if dataclasses.is_dataclass(sub) else None
            if not last and cls is None and not _is_mapping_type(sub):
                raise ConfigError(f"unknown key '{key}': '{prefix}' is not a section")
        if last:
            node[part] = value
            return
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"{prefix}: expected a mapping, got {type(child).__name__}")
        node = child


def _copy_tree(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _copy_tree(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy_tree(v) for v in value]
    return value


def _int_to_float(value: Any) -> Any:
    """YAML writes `gamma: 1` for 1.0; accept ints (not bools) where a float is declared."""
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def _field_types(cls: Any) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _is_mapping_type(tp: Any) -> bool:
    return typing.get_origin(tp) in (dict, Mapping)


def _type_name(tp: Any) -> str:
    if isinstance(tp, type) and typing.get_origin(tp) is None:
        return "mapping" if dataclasses.is_dataclass(tp) else tp.__name__
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in args:
        return " or ".join(_type_name(a) for a in args if a is not type(None)) + " or null"
    return str(tp).replace("typing.", "")


def _type_message(tp: Any, value: Any) -> str:
    return f"expected {_type_name(tp)}, got {value!r} ({type(value).__name__})"


def _check_tree(cls: Any, data: Any, prefix: str) -> None:
    """What dacite does not: unknown keys with their full path, bools posing as numbers, inf/nan.

    dacite accepts `True` for an int field (bool subclasses int) and names no path for unknown
    nested keys, so those are caught here with the path; dacite then checks the remaining types.
    """
    if not isinstance(data, Mapping):
        where = prefix.rstrip(".") or "config"
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    hints = _field_types(cls)
    for key in data:
        if key not in hints:
            raise ConfigError(f"unknown key '{prefix}{key}'")
    for key, value in data.items():
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            _check_tree(tp, value, f"{prefix}{key}.")
        else:
            _check_value(tp, value, f"{prefix}{key}")


def _check_value(tp: Any, value: Any, path: str, shown: str | None = None) -> None:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp in (int, float):
        wrong = isinstance(value, bool) or not isinstance(value, (int, float))
        if wrong or (tp is int and not isinstance(value, int)):
            expected = shown or tp.__name__
            raise ConfigError(
                f"{path}: expected {expected}, got {value!r} ({type(value).__name__})"
            )
        if not math.isfinite(value):
            raise ConfigError(f"{path}: must be finite, got {value}")
    elif origin is list and args and isinstance(value, list):
        for i, item in enumerate(value):
            _check_value(args[0], item, f"{path}[{i}]")
    elif origin in (typing.Union, types.UnionType) and value is not None:
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            _check_value(inner[0], value, path, f"{_type_name(inner[0])} or null")


# ---------------------------------------------------------------------------------------------
# validation


def _check(ok: bool, key: str, what: str, value: Any) -> None:
    """One validation rule: a one-line ``ConfigError`` naming the key when ``ok`` is false."""
    if not ok:
        raise ConfigError(f"{key}: {what}, got {value!r}")


def validate_config(cfg: Config) -> None:
    """Reject impossible values and unknown names; never builds an environment."""
    env, pol, algo, tr = cfg.env, cfg.policy, cfg.algo, cfg.train

    _check(
        env.max_episode_steps is None or env.max_episode_steps >= 1,
        "env.max_episode_steps",
        "must be >= 1 or null",
        env.max_episode_steps,
    )
    _check(len(pol.hidden_sizes) >= 1, "policy.hidden_sizes", "must not be empty", pol.hidden_sizes)
    for i, width in enumerate(pol.hidden_sizes):
        _check(width >= 1, f"policy.hidden_sizes[{i}]", "must be >= 1", width)
    _check(pol.activation in ACTIVATIONS, "policy.activation", _one_of(ACTIVATIONS), pol.activation)
    _check(pol.init_std > 0, "policy.init_std", "must be > 0", pol.init_std)
    _check(pol.kind in POLICY_KINDS, "policy.kind", _one_of(POLICY_KINDS), pol.kind)
    _check(
        pol.kind != "gru" or tr.sampler == "vector",
        "policy.kind",
        "gru needs train.sampler vector (the sampler that carries a recurrent state)",
        pol.kind,
    )

    _check(algo.name in ALGORITHMS, "algo.name", _one_of(ALGORITHMS), algo.name)
    _check(algo.inner_lr > 0, "algo.inner_lr", "must be > 0", algo.inner_lr)
    _check(algo.num_inner_steps >= 0, "algo.num_inner_steps", "must be >= 0", algo.num_inner_steps)
    _check(0 < algo.gamma <= 1, "algo.gamma", "must be in (0, 1]", algo.gamma)
    _check(0 <= algo.gae_lambda <= 1, "algo.gae_lambda", "must be in [0, 1]", algo.gae_lambda)
    _check(algo.max_kl > 0, "algo.max_kl", "must be > 0", algo.max_kl)
    _check(algo.cg_iters >= 1, "algo.cg_iters", "must be >= 1", algo.cg_iters)
    _check(algo.cg_damping >= 0, "algo.cg_damping", "must be >= 0", algo.cg_damping)
    _check(algo.ls_max_steps >= 1, "algo.ls_max_steps", "must be >= 1", algo.ls_max_steps)
    _check(
        0 < algo.ls_backtrack_ratio < 1,
        "algo.ls_backtrack_ratio",
        "must be in (0, 1)",
        algo.ls_backtrack_ratio,
    )
    _check(algo.task_chunk >= 0, "algo.task_chunk", "must be >= 0", algo.task_chunk)
    _check(
        0 < algo.fisher_subsample <= 1,
        "algo.fisher_subsample",
        "must be in (0, 1]",
        algo.fisher_subsample,
    )
    _check_reptile(algo, pol)

    _check(tr.meta_batch_size >= 1, "train.meta_batch_size", "must be >= 1", tr.meta_batch_size)
    _check(
        tr.episodes_per_task >= 1, "train.episodes_per_task", "must be >= 1", tr.episodes_per_task
    )
    _check(tr.iterations >= 0, "train.iterations", "must be >= 0", tr.iterations)
    _check(tr.seed >= 0, "train.seed", "must be >= 0", tr.seed)
    _check(
        tr.device in DEVICES or re.fullmatch(r"cuda:\d+", tr.device) is not None,
        "train.device",
        _one_of((*DEVICES, "cuda:N")),
        tr.device,
    )
    _check(tr.checkpoint_every >= 0, "train.checkpoint_every", "must be >= 0", tr.checkpoint_every)
    _check(
        tr.num_threads is None or tr.num_threads >= 1,
        "train.num_threads",
        "must be >= 1 or null",
        tr.num_threads,
    )
    _check(tr.sampler in SAMPLERS, "train.sampler", _one_of(SAMPLERS), tr.sampler)
    _check(
        tr.num_workers is None or tr.num_workers >= 1,
        "train.num_workers",
        "must be >= 1 or null",
        tr.num_workers,
    )

    _check_env(env)


def _check_reptile(algo: AlgoConfig, pol: PolicyConfig) -> None:
    opts = (INNER_OPTIMIZERS, INNER_LOSSES, OUTER_OPTIMIZERS)
    _check(
        algo.inner_optimizer in opts[0],
        "algo.inner_optimizer",
        _one_of(opts[0]),
        algo.inner_optimizer,
    )
    _check(algo.inner_loss in opts[1], "algo.inner_loss", _one_of(opts[1]), algo.inner_loss)
    _check(algo.ppo_epochs >= 1, "algo.ppo_epochs", "must be >= 1", algo.ppo_epochs)
    _check(algo.ppo_clip > 0, "algo.ppo_clip", "must be > 0", algo.ppo_clip)
    _check(algo.outer_lr > 0, "algo.outer_lr", "must be > 0", algo.outer_lr)
    _check(algo.outer_lr_final >= 0, "algo.outer_lr_final", "must be >= 0", algo.outer_lr_final)
    _check(
        algo.outer_anneal_iterations is None or algo.outer_anneal_iterations >= 1,
        "algo.outer_anneal_iterations",
        "must be >= 1 or null",
        algo.outer_anneal_iterations,
    )
    _check(
        algo.outer_optimizer in opts[2],
        "algo.outer_optimizer",
        _one_of(opts[2]),
        algo.outer_optimizer,
    )
    _check(
        algo.sb3_algo is None or algo.sb3_algo in SB3_ALGOS,
        "algo.sb3_algo",
        _one_of((*SB3_ALGOS, "null")),
        algo.sb3_algo,
    )
    _check(algo.sb3_steps >= 0, "algo.sb3_steps", "must be >= 0", algo.sb3_steps)
    if algo.name != "reptile":
        return
    _check(
        algo.num_inner_steps >= 1,
        "algo.num_inner_steps",
        "reptile needs >= 1",
        algo.num_inner_steps,
    )
    _check(
        algo.sb3_algo is None or pol.kind == "sb3",
        "policy.kind",
        "must be sb3 when algo.sb3_algo is set",
        pol.kind,
    )


def _one_of(names: Sequence[str]) -> str:
    return "must be one of " + ", ".join(names)


def _check_env(env: EnvConfig) -> None:
    """Look the id up in Gymnasium's registry (after `import envs`) and check kwargs names."""
    import gymnasium

    try:
        importlib.import_module("meta_rl.envs")
    except ModuleNotFoundError as exc:
        if exc.name != "meta_rl.envs":
            raise
    module, _, env_id = env.id.rpartition(":")
    if module:  # gymnasium.make("module:Id") imports `module` first; mirror that
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ConfigError(
                f"env.id: cannot import module '{module}': {_one_line(exc)}"
            ) from None
    registry = gymnasium.envs.registry
    spec = registry.get(env_id)
    if spec is None:
        close = difflib.get_close_matches(env_id, list(registry), n=1, cutoff=0.85)
        prefix = f"{module}:" if module else ""  # the suggestion must work as written
        hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
        raise ConfigError(f"env.id: unknown environment '{env.id}'{hint}")
    _check_env_kwargs(env, spec)


def _check_env_kwargs(env: EnvConfig, spec: Any) -> None:
    """Reject kwargs the family's constructor cannot take (loads the class, builds nothing).

    A class `__init__` with `**kwargs` is assumed to forward them up its MRO (as the MuJoCo
    families do into Gymnasium's v5 envs), so the names of the base `__init__`s count too; if
    the chain never ends in an `__init__` without `**kwargs`, nothing is rejected.
    """
    if not env.kwargs:
        return
    creator = spec.entry_point
    if isinstance(creator, str):
        from gymnasium.envs.registration import load_env_creator

        creator = load_env_creator(creator)
    inits = (
        [c.__dict__["__init__"] for c in creator.__mro__ if "__init__" in c.__dict__]
        if isinstance(creator, type)
        else [creator]
    )
    names: set[str] = set()
    for init in inits:
        try:
            params = inspect.signature(init).parameters.values()
        except (TypeError, ValueError):  # C-level __init__: nothing to check against
            return
        names |= {p.name for p in params if p.kind is not inspect.Parameter.POSITIONAL_ONLY}
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
            break
    else:
        return
    for key in env.kwargs:
        if key not in names:
            raise ConfigError(f"unknown key 'env.kwargs.{key}': {env.id} takes no argument '{key}'")


# ---------------------------------------------------------------------------------------------
# saving and naming


def config_to_dict(cfg: Config) -> dict[str, Any]:
    """Plain nested dict (YAML/JSON-ready) of every resolved value."""
    return dataclasses.asdict(cfg)


def save_config(cfg: Config, path: str | Path) -> None:
    """Write the resolved config as YAML that `load_config` reads back to an equal Config."""
    text = yaml.safe_dump(config_to_dict(cfg), sort_keys=False, default_flow_style=None)
    Path(path).write_text(text, encoding="utf-8")


def run_name(cfg: Config, now: datetime | None = None) -> str:
    """CleanRL-style `<env-name>__<algo>__<seed>__<YYYYmmdd-HHMMSS>`."""
    env_name = cfg.env.id.rpartition(":")[2].rpartition("/")[2]
    stamp = (now or datetime.now()).strftime("%Y%m%d-%H%M%S")
    return f"{env_name}__{cfg.algo.name}__{cfg.train.seed}__{stamp}"


def default_run_dir(cfg: Config, root: str | Path = "runs", now: datetime | None = None) -> Path:
    """`runs/<run_name>`: where `meta-rl train` writes when no --run-dir is given."""
    return Path(root) / run_name(cfg, now)
