"""Typed experiment configuration: dataclasses loaded from YAML, overridable with `--set a.b=v`.

Four sections: `env`, `policy`, `train` (dataclasses here) and `algo`, which is the settings
dataclass of the chosen meta-learner itself (`meta_rl.algorithms.settings`), picked by
`algo.name`. Types, choices (`Literal`) and ranges are declared on the fields and checked by
pydantic in one pass, before any environment is built, so a typo costs one line of error
output instead of a crashed run ten minutes in; this module turns pydantic's errors into that
line. Defaults are the MAML paper's 2D-navigation settings (Finn et al. 2017, section 5.3 and
appendix).
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import importlib.util
import inspect
import re
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import field
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, Field, TypeAdapter, ValidationError, model_validator
from pydantic.dataclasses import dataclass

from meta_rl.agents.choices import Activation
from meta_rl.algorithms.settings import (
    ALGORITHM_SETTINGS,
    STRICT,
    AlgoSettings,
    Bool,
    Float,
    Int,
    MAMLTRPOSettings,
    SettingError,
    Str,
)

ALGORITHMS: tuple[str, ...] = tuple(ALGORITHM_SETTINGS)
"""Meta-learners the trainer knows (``algo.name``)."""

Sampler = Literal["vector", "process", "torch", "mujoco", "mjx", "ray"]
PolicyKind = Literal["mlp", "gru", "sb3"]
DEVICE_NAMES = ("cpu", "cuda", "auto")


class ConfigError(ValueError):
    """A bad configuration; `str(err)` is one line that names the offending key."""

    def __init__(self, message: str) -> None:
        self.detail = " ".join(str(message).split())
        super().__init__("config error: " + self.detail)


def _device_name(name: str) -> str:
    if name in DEVICE_NAMES or re.fullmatch(r"cuda:\d+", name):
        return name
    raise ValueError("must be one of " + ", ".join((*DEVICE_NAMES, "cuda:N")))


@dataclass(config=STRICT)
class EnvConfig:
    id: Str
    """registered Gymnasium id of the task family, e.g. "MetaRL/Navigation2D-v0" """
    kwargs: dict[str, Any] = field(default_factory=dict)
    """constructor kwargs of the family (its task-distribution knobs)"""
    max_episode_steps: Annotated[Int, Field(ge=1)] | None = None
    """horizon override; None keeps the registered time limit"""


@dataclass(config=STRICT)
class PolicyConfig:
    kind: PolicyKind = "mlp"
    """mlp | gru (first hidden layer a GRU) | sb3 (an SB3 ActorCriticPolicy's actor)"""
    hidden_sizes: Annotated[list[Annotated[Int, Field(ge=1)]], Field(min_length=1)] = field(
        default_factory=lambda: [100, 100]
    )
    """widths of the policy MLP's hidden layers"""
    activation: Activation = "relu"
    """hidden-layer nonlinearity (meta_rl.agents.choices.Activation)"""
    init_std: Annotated[Float, Field(gt=0)] = 1.0
    """initial standard deviation of the Gaussian policy"""


@dataclass(config=STRICT)
class TrainConfig:
    meta_batch_size: Annotated[Int, Field(ge=1)] = 20
    """tasks per meta-iteration"""
    episodes_per_task: Annotated[Int, Field(ge=1)] = 20
    """episodes sampled per task, for each of the pre- and post-adaptation batches"""
    iterations: Annotated[Int, Field(ge=0)] = 500
    """meta-iterations to run"""
    seed: Annotated[Int, Field(ge=0)] = 1
    """seed of every random generator of the run"""
    device: Annotated[Str, AfterValidator(_device_name)] = "cpu"
    """torch device for the learner: cpu | cuda | cuda:N | auto"""
    checkpoint_every: Annotated[Int, Field(ge=0)] = 50
    """keep a numbered checkpoint every N iterations (0: only checkpoints/latest.pt)"""
    num_threads: Annotated[Int, Field(ge=1)] | None = 1
    """torch intra-op threads of the learner; None: one per core. 1 by default: threads that
    spin-wait against other processes made iterations up to 10x slower on a busy machine.
    Applied by `meta-rl train` (`meta_rl.perf.configure_learner`); `train()` from Python
    leaves the process alone"""
    sampler: Sampler = "vector"
    """sampler backend: vector (in-process) | process (worker per core) | torch (tensor envs) |
    mujoco (HalfCheetah/Ant families stepped batched, same episodes as vector) | mjx
    (HalfCheetah/Ant families on MuJoCo XLA, the whole loop on train.device; extra meta-rl[mjx]) |
    ray (actors on a Ray cluster or a private local Ray, same episodes as process; extra
    meta-rl[ray])"""
    num_workers: Annotated[Int, Field(ge=1)] | None = None
    """worker processes of the process sampler (None: one per core); mujoco: None steps
    in-process with a thread per core, N shards the batch over N worker processes; ray: actors
    (None: one per core of this machine)"""
    ray_address: Str | None = None
    """ray sampler: None starts a private Ray on this machine (127.0.0.1, num_workers CPUs);
    auto or host:port joins a cluster started with `ray start` (README: Running on a cluster)"""
    ray_env_backend: Literal["gym", "mujoco"] = "gym"
    """ray sampler: how each actor steps its shard: gym (the family's Gymnasium envs) | mujoco
    (the batched MuJoCo backend of train.sampler mujoco, HalfCheetah/Ant families; same
    episodes)"""
    clip_actions: Bool = True
    """clip Box actions to the action space before env.step (as SB3); the episodes keep the
    unclipped sample and its log-probability. false: the raw Gaussian sample reaches the env"""
    eval_every: Annotated[Int, Field(ge=0)] = 0
    """held-out evaluation (as `meta-rl evaluate`) every N iterations, logged as eval/; 0: off"""
    eval_tasks: Annotated[Int, Field(ge=2)] = 10
    """held-out tasks of each evaluation (the same every time; two at least, for the interval)"""
    eval_episodes: Annotated[Int, Field(ge=1)] = 10
    """episodes per task and inner step of each evaluation"""
    eval_steps: Annotated[Int, Field(ge=0)] = 1
    """inner policy-gradient steps of each evaluation (eval/return_step_0 .. _step_N)"""
    eval_patience: Annotated[Int, Field(ge=0)] = 0
    """stop after N evaluations without a new best eval/return_step_<eval_steps>; 0: never"""

    @model_validator(mode="after")
    def _patience_counts_evaluations(self) -> TrainConfig:
        if self.eval_patience and not self.eval_every:
            what = "needs train.eval_every >= 1 (it counts evaluations)"
            raise SettingError("eval_patience", what, self.eval_patience)
        return self

    @model_validator(mode="after")
    def _ray_is_there(self) -> TrainConfig:
        if self.sampler == "ray" and importlib.util.find_spec("ray") is None:
            what = "needs Ray, which is not installed: pip install 'meta-rl[ray]'"
            raise SettingError("sampler", what, self.sampler)
        if self.ray_address is not None and self.sampler != "ray":
            what = "is only used by train.sampler ray"
            raise SettingError("ray_address", what, self.ray_address)
        if self.ray_env_backend != "gym" and self.sampler != "ray":
            what = "is only used by train.sampler ray (train.sampler mujoco batches locally)"
            raise SettingError("ray_env_backend", what, self.ray_env_backend)
        return self


@dataclass(config=STRICT)
class Config:
    env: EnvConfig
    """task family"""
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    """policy network"""
    algo: AlgoSettings = field(default_factory=MAMLTRPOSettings)
    """meta-learner: the settings dataclass that `algo.name` picks (meta_rl.algorithms.settings)"""
    train: TrainConfig = field(default_factory=TrainConfig)
    """run length, batch sizes, seed, device"""

    @model_validator(mode="after")
    def _sections_agree(self) -> Config:
        """Rules across sections, then the env id against Gymnasium's registry."""
        if self.policy.kind == "gru" and self.train.sampler != "vector":
            what = "gru needs train.sampler vector (the sampler that carries a recurrent state)"
            raise SettingError("policy.kind", what, self.policy.kind)
        if getattr(self.algo, "sb3_algo", None) is not None and self.policy.kind != "sb3":
            what = "must be sb3 when algo.sb3_algo is set"
            raise SettingError("policy.kind", what, self.policy.kind)
        _check_env(self.env)
        return self


Baseline = Literal["random", "pretrained", "oracle"]
BASELINES: tuple[str, ...] = typing.get_args(Baseline)
"""What `meta-rl evaluate --baseline` puts next to a run (meta_rl.evaluation says what each is)."""


@dataclass(config=STRICT, frozen=True)
class EvalSettings:
    """What `meta-rl evaluate` asks for; defaults follow the MAML paper's meta-test."""

    tasks: Annotated[Int, Field(ge=2)] = 40
    """held-out tasks (two at least: the confidence interval is over tasks)"""
    steps: Annotated[Int, Field(ge=0)] = 3
    """inner steps K: returns are reported after 0..K steps"""
    episodes: Annotated[Int, Field(ge=1)] = 20
    """episodes per task and step"""
    seed: Annotated[Int, Field(ge=0)] | None = None
    """held-out task seed; None: the run's train.seed (its held-out stream, never training's)"""
    step_size: Annotated[Float, Field(gt=0)] | None = None
    """first inner step size; None: the run's algo.inner_lr"""
    later_factor: Annotated[Float, Field(gt=0)] = 0.5
    """steps 2..K use step_size * later_factor (1/2, as the MAML paper's scripts)"""
    baselines: tuple[Baseline, ...] = ()
    """baselines evaluated on the same tasks and steps"""
    baseline_timesteps: Annotated[Int, Field(ge=1)] | None = None
    """SB3 PPO env steps of the pretrained baseline and the cap of the oracle's (which stops
    earlier once its learning curve is flat); None: the meta-learner's own training env steps"""
    baseline_jobs: Annotated[Int, Field(ge=1)] = 1
    """SB3 baselines trained side by side, one process with one torch thread each"""
    clip_actions: Bool | None = None
    """clip every method's actions to the Box while evaluating; None: the run's
    train.clip_actions. Scores runs trained either way by the torque the actuators apply"""


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
    algo = data.get("algo")
    if isinstance(algo, dict):
        algo.setdefault("name", MAMLTRPOSettings.name)
    try:
        return _CONFIG.validate_python(data)
    except ValidationError as exc:
        raise ConfigError(validation_message(exc)) from None


_CONFIG = TypeAdapter(Config)


def apply_override(data: dict[str, Any], item: str) -> None:
    """Apply one `a.b=value` override in place; the value is parsed as YAML (`[64, 64]`, `true`).

    Unknown keys are left to validation, which names them with their full path; here only a
    path that runs through a plain value (`algo.inner_lr.x`) is refused.
    """
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
    for depth, part in enumerate(parts[:-1]):
        prefix = ".".join(parts[: depth + 1])
        if not _is_section(parts[: depth + 1]):
            raise ConfigError(f"unknown key '{key}': '{prefix}' is not a section")
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"{prefix}: expected a mapping, got {type(child).__name__}")
        node = child
    node[parts[-1]] = value


def _is_section(path: Sequence[str]) -> bool:
    """Whether the schema allows keys below ``path`` (a dataclass, a mapping or an unknown key)."""
    candidates: list[Any] = [Config]
    for part in path:
        below: list[Any] = []
        for tp in candidates:
            for cls in _classes(tp):
                hints = _field_hints(cls)
                if part not in hints:
                    return True  # unknown key: validation reports it with its full path
                below.append(hints[part])
        candidates = below
    return all(_classes(tp) or typing.get_origin(_strip(tp)) is dict for tp in candidates)


def _copy_tree(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _copy_tree(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy_tree(v) for v in value]
    return value


# ---------------------------------------------------------------------------------------------
# one-line messages from pydantic's errors


def validation_message(exc: ValidationError, root: type = Config) -> str:
    """``key: what, got value`` for the first error of validating ``root``, the key dotted."""
    error = exc.errors()[0]
    kind, value, ctx = error["type"], error["input"], error.get("ctx") or {}
    key, tp = _locate(error["loc"], root)
    if kind in ("unexpected_keyword_argument", "extra_forbidden"):
        return f"unknown key '{key}'" + _other_algorithm_hint(error["loc"])
    if kind in ("missing", "missing_argument"):
        return f"{key}: required key is missing"
    if isinstance(ctx.get("error"), ConfigError):  # the env check, run inside validation
        return ctx["error"].detail
    if isinstance(ctx.get("error"), SettingError):
        setting = ctx["error"]
        where = f"{key}." if key else ""
        return f"{where}{setting.key}: {setting.what}, got {setting.value!r}"
    if kind == "union_tag_invalid":
        return f"{key}.name: {_one_of(ALGORITHMS)}, got {ctx['tag']!r}"
    optional = " or null" if _is_optional(tp) else ""
    if kind == "literal_error":
        if not isinstance(value, str):
            return f"{key}: {_type_message(tp, value)}"
        choices = [*typing.get_args(_strip(tp)), *(["null"] if optional else [])]
        return f"{key}: {_one_of(choices)}, got {value!r}"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        return f"{key}: must be {_bounds(tp)}{optional}, got {_as_declared(tp, value)!r}"
    if kind == "finite_number":
        return f"{key}: must be finite, got {value}"
    if kind == "too_short":
        return f"{key}: must not be empty, got {value!r}"
    if kind == "value_error":  # an AfterValidator's ValueError: its message says what is allowed
        return f"{key}: {ctx['error']}, got {value!r}"
    if _classes(tp):
        return f"{key or 'config'}: expected a mapping, got {type(value).__name__}"
    return f"{key}: {_type_message(tp, value)}"


def _other_algorithm_hint(loc: Sequence[str | int]) -> str:
    """For `algo.x` where x belongs to another meta-learner: say whose it is."""
    if len(loc) != 3 or loc[0] != "algo" or loc[1] not in ALGORITHM_SETTINGS:
        return ""
    owners = [name for name, cls in ALGORITHM_SETTINGS.items() if loc[2] in _field_hints(cls)]
    return f" (a {'/'.join(owners)} setting; algo.name is {loc[1]})" if owners else ""


def _locate(loc: Sequence[str | int], root: type) -> tuple[str, Any]:
    """Dotted key of a pydantic error location and the declared type found there.

    The location of an `algo` error names the chosen dataclass (`('algo', 'reptile', 'x')`);
    that tag is not a key of the YAML, so it is dropped.
    """
    key, tp = "", root
    for part in loc:
        if isinstance(part, int):
            key += f"[{part}]"
            tp = typing.get_args(_strip(tp))[0] if typing.get_args(_strip(tp)) else Any
            continue
        classes = _classes(tp)
        if part in ALGORITHM_SETTINGS and classes and len(classes) > 1:
            tp = ALGORITHM_SETTINGS[part]
            continue
        hints = _field_hints(classes[0]) if len(classes) == 1 else {}
        key = f"{key}.{part}" if key else str(part)
        tp = hints.get(part, Any)
    return key, tp


def _field_hints(cls: Any) -> dict[str, Any]:
    return typing.get_type_hints(cls, include_extras=True)


def _strip(tp: Any) -> Any:
    """The type without `Annotated` metadata and without `| None`."""
    while typing.get_origin(tp) is Annotated:
        tp = typing.get_args(tp)[0]
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(inner) == 1:
            return _strip(inner[0])
        return typing.Union[tuple(_strip(a) for a in inner)]  # noqa: UP007
    return tp


def _classes(tp: Any) -> list[type]:
    """The dataclass (or, for `algo`, the dataclasses) a section's type stands for."""
    tp = _strip(tp)
    if typing.get_origin(tp) is typing.Union:
        return [a for a in typing.get_args(tp) if dataclasses.is_dataclass(a)]
    return [tp] if dataclasses.is_dataclass(tp) else []


def _is_optional(tp: Any) -> bool:
    while typing.get_origin(tp) is Annotated:
        tp = typing.get_args(tp)[0]
    return type(None) in typing.get_args(tp)


def _bounds(tp: Any) -> str:
    """`>= 1`, `> 0` or `in (0, 1]` from the field's `Field(gt=..., le=...)` constraints."""
    limits: dict[str, float] = {}
    stack = [tp]
    while stack:
        item = stack.pop()
        if typing.get_origin(item) is Annotated:
            base, *metadata = typing.get_args(item)
            stack.append(base)
            for meta in metadata:
                for fact in getattr(meta, "metadata", [meta]):
                    for name in ("gt", "ge", "lt", "le"):
                        if getattr(fact, name, None) is not None:
                            limits[name] = getattr(fact, name)
        elif typing.get_origin(item) in (typing.Union, types.UnionType):
            stack.extend(typing.get_args(item))
    low = [(f"{limits[n]:g}", n) for n in ("gt", "ge") if n in limits]
    high = [(f"{limits[n]:g}", n) for n in ("lt", "le") if n in limits]
    if low and high:
        (lo, lo_kind), (hi, hi_kind) = low[0], high[0]
        return f"in {'(' if lo_kind == 'gt' else '['}{lo}, {hi}{')' if hi_kind == 'lt' else ']'}"
    signs = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}
    value, kind = (low or high)[0]
    return f"{signs[kind]} {value}"


def _as_declared(tp: Any, value: Any) -> Any:
    """An int given for a float field is reported as the float it became (`got 0.0`)."""
    if _strip(tp) is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def _type_name(tp: Any) -> str:
    base = _strip(tp)
    name = base.__name__ if isinstance(base, type) and typing.get_origin(base) is None else None
    if typing.get_origin(base) is Literal:
        name = "str"
    name = name or str(base).replace("typing.", "")
    return name + (" or null" if _is_optional(tp) else "")


def _type_message(tp: Any, value: Any) -> str:
    return f"expected {_type_name(tp)}, got {value!r} ({type(value).__name__})"


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
