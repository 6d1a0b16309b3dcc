"""Meta-World ML1 / ML10 / ML45 as task families, with the benchmark's own train/test splits.

Needs the ``metaworld`` extra (``pip install 'meta-rl[metaworld]'``). A task is a small JSON
dict naming a task of a Meta-World benchmark object: ``{"benchmark": "ML10", "env_name":
"reach-v3", "split": "train", "index": 17, "seed": 0}`` is ``metaworld.ML10(seed=0)
.train_tasks[17]``. Meta-World's pickled task data never leaves the process: the index is
resolved against the benchmark object, built once per process and cached (``benchmark``).
The splits come from those objects, not from Meta-World's Gymnasium registration (whose
``ML1-train`` uses the test tasks at 3.1.1). ``sample_tasks`` draws from the train split,
``sample_held_out_tasks`` (what ``meta-rl evaluate`` uses) from the test split, both balanced
over the split's env classes.

ML10 / ML45 mix env classes in one meta-batch. A family env holds one Meta-World env of the
class its current task needs; the instances live in a per-process pool (``_POOL``), so every
MuJoCo model is built once and re-tasked afterwards, and an env whose task changes class hands
its instance back for another env to take. Observations are Meta-World's (39 dims, goal
hidden: the last 3 are zeros with low == high == 0); ``info["success"]`` is passed through.
"""

from __future__ import annotations

import functools
import string
from collections import defaultdict
from typing import Any

import metaworld
import numpy as np
from gymnasium import spaces
from gymnasium.utils import EzPickle
from metaworld import env_dict

from meta_rl.envs.base import Task, TaskEnv
from meta_rl.envs.metaworld_ids import ENV_NAMES

BENCHMARKS = ("ML1", "ML10", "ML45")
SPLITS = ("train", "test")
GOALS_PER_CLASS = 50  # metaworld._N_GOALS: tasks per env class in every split
_NAME_CHARS = string.ascii_letters + string.digits + "-"

# Benchmark name -> the per-split class tables whose order is the order of its task lists.
_ARGS_KWARGS = {"ML10": env_dict.ML10_ARGS_KWARGS, "ML45": env_dict.ML45_ARGS_KWARGS}


def split_classes(bench: str, env_name: str | None) -> dict[str, list[str]]:
    """Env class names of each split, in the order of the benchmark's task lists (a task's
    class is ``classes[index // GOALS_PER_CLASS]``); known without building the benchmark."""
    if bench == "ML1":
        return {split: [str(env_name)] for split in SPLITS}
    return {split: list(_ARGS_KWARGS[bench][split]) for split in SPLITS}


@functools.cache
def benchmark(bench: str, env_name: str | None, seed: int) -> metaworld.Benchmark:
    """The Meta-World benchmark object, built once per process (ML45 takes tens of seconds)."""
    if bench == "ML1":
        return metaworld.ML1(env_name, seed=seed)
    return {"ML10": metaworld.ML10, "ML45": metaworld.ML45}[bench](seed=seed)


def metaworld_task(task: Task) -> metaworld.Task:
    """The Meta-World task a JSON task names (resolved in this process, never stored)."""
    bench = benchmark(
        task["benchmark"], _ml1_name(task["benchmark"], task["env_name"]), task["seed"]
    )
    return getattr(bench, f"{task['split']}_tasks")[task["index"]]


def _ml1_name(bench: str, env_name: str) -> str | None:
    return env_name if bench == "ML1" else None


# Free Meta-World env instances by class name: built once per process, then re-tasked.
_POOL: defaultdict[str, list[Any]] = defaultdict(list)


def _acquire(env_name: str) -> Any:
    free = _POOL[env_name]
    return free.pop() if free else env_dict.ALL_V3_ENVIRONMENTS[env_name]()


@functools.cache
def _observation_space() -> spaces.Box:
    """Meta-World's goal-hidden observation box, the same for every v3 env (a test checks)."""
    sim = _acquire(ENV_NAMES[0])
    space = sim.observation_space
    _POOL[ENV_NAMES[0]].append(sim)
    return space


class MetaWorldFamily(TaskEnv):
    """One Meta-World benchmark (ML1 of one env, ML10, ML45) as a task family.

    Construction is cheap: the benchmark object is built when a task is first bound (at
    ``reset``), and the Meta-World env of the task's class is taken from the process pool then.
    """

    metadata = {"render_modes": []}  # noqa: RUF012  (gymnasium's convention)

    def __init__(self, benchmark: str = "ML1", env_name: str | None = "reach-v3", seed: int = 0):
        if benchmark not in BENCHMARKS:
            raise ValueError(f"benchmark: {benchmark!r} is not one of {', '.join(BENCHMARKS)}")
        if benchmark == "ML1" and env_name not in ENV_NAMES:
            raise ValueError(f"env_name: {env_name!r} is not a Meta-World v3 env")
        if benchmark != "ML1" and env_name is not None:
            raise ValueError(f"env_name: {benchmark} mixes its own env classes; pass none")
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**31:
            raise ValueError(f"seed: {seed!r} is not an integer in [0, 2**31)")
        self.benchmark, self.env_name, self.benchmark_seed = benchmark, env_name, seed
        self.classes = split_classes(benchmark, env_name)
        longest = max(len(names) for names in self.classes.values()) * GOALS_PER_CLASS
        text = functools.partial(spaces.Text, min_length=1, charset=_NAME_CHARS)
        self.task_space = spaces.Dict(
            {
                "benchmark": text(max_length=8),
                "env_name": text(max_length=64),
                "split": text(max_length=8),
                "index": spaces.Discrete(longest),
                "seed": spaces.Discrete(2**31),
            }
        )
        self.observation_space = _observation_space()
        self.action_space = spaces.Box(-1.0, 1.0, (4,), np.float32)
        if benchmark == "ML1":
            what = f"{env_name}: {GOALS_PER_CLASS} train / {GOALS_PER_CLASS} test goals"
        else:
            train, test = (len(self.classes[split]) for split in SPLITS)
            what = f"{train} train / {test} test classes x {GOALS_PER_CLASS} goals"
        self.task_description = f"Meta-World {benchmark} {what} (seed {seed})"
        self._sim: Any = None
        self._sim_name: str | None = None
        self.task = self._task_at("train", 0)
        EzPickle.__init__(self, benchmark, env_name, seed)

    def _task_at(self, split: str, index: int) -> Task:
        return {
            "benchmark": self.benchmark,
            "env_name": self.classes[split][index // GOALS_PER_CLASS],
            "split": split,
            "index": int(index),
            "seed": self.benchmark_seed,
        }

    def _draw(self, split: str, n: int, rng: np.random.Generator) -> list[Task]:
        """``n`` tasks of a split, balanced over its env classes, as garage's
        ``MetaWorldTaskSampler`` draws ML10 / ML45 meta-batches: every class gets ``n // k``
        goals and ``n % k`` classes drawn at random one more, so a meta-batch of 10 on ML10
        holds each skill once instead of a uniform draw's repeats and gaps. Goals of a class
        are drawn without repeats while it has enough; tasks come grouped by class."""
        classes = len(self.classes[split])
        counts = np.full(classes, n // classes)
        if n % classes:
            counts[rng.choice(classes, size=n % classes, replace=False)] += 1
        return [
            self._task_at(split, position * GOALS_PER_CLASS + int(goal))
            for position, count in enumerate(counts)
            for goal in rng.choice(GOALS_PER_CLASS, size=count, replace=count > GOALS_PER_CLASS)
        ]

    def sample_tasks(self, n: int, rng: np.random.Generator) -> list[Task]:
        return self._draw("train", n, rng)

    def sample_held_out_tasks(self, n: int, rng: np.random.Generator) -> list[Task]:
        return self._draw("test", n, rng)

    @property
    def oracle_features_dim(self) -> int:
        if self.benchmark != "ML1":
            raise ValueError(
                f"{self.benchmark} has no oracle: its held-out env classes are never trained on, "
                "so no view of the task tells a policy what they need (ML1 only)"
            )
        return 3

    def oracle_features(self) -> np.ndarray:
        """The goal position that Meta-World hides from the observation: what an oracle
        baseline sees of the task (``agents.pretrained.TaskObservationWrapper``)."""
        if self._sim is None:
            raise RuntimeError("MetaWorldFamily: call reset() before oracle_features()")
        return np.asarray(self._sim._target_pos, dtype=np.float32)  # set by Meta-World's reset

    def _apply_task(self, task: dict[str, Any]) -> None:
        for key, own in (("benchmark", self.benchmark), ("seed", self.benchmark_seed)):
            if task[key] != own:
                raise ValueError(f"task[{key!r}] = {task[key]!r}, but this family is {own!r}")
        split, index = task["split"], task["index"]
        if split not in SPLITS:
            raise ValueError(f"task['split'] = {split!r} is not one of {', '.join(SPLITS)}")
        size = len(self.classes[split]) * GOALS_PER_CLASS
        if index >= size:
            raise ValueError(
                f"task['index'] = {index} is outside the {split} split (0..{size - 1})"
            )
        expected = self.classes[split][index // GOALS_PER_CLASS]
        if task["env_name"] != expected:
            raise ValueError(
                f"task['env_name'] = {task['env_name']!r}, but {split} task {index} is {expected!r}"
            )

    def _bind(self) -> Any:
        """The Meta-World env of the current task's class, set to the current task."""
        task = self._task
        assert task is not None
        name = task["env_name"]
        if self._sim_name != name:
            self._release()
            self._sim, self._sim_name = _acquire(name), name
        self._sim.set_task(metaworld_task(task))
        return self._sim

    def _release(self) -> None:
        if self._sim is not None:
            _POOL[str(self._sim_name)].append(self._sim)
        self._sim, self._sim_name = None, None

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Re-tasks (``options={"task": t}``), then resets Meta-World's env, which is
        deterministic given the task (its goal and object positions are the task's)."""
        super().reset(seed=seed, options=options)
        return self._bind().reset()

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self._sim is None:
            raise RuntimeError("MetaWorldFamily: call reset() before step()")
        obs, reward, terminated, truncated, info = self._sim.step(action)
        return obs, float(reward), terminated, truncated, info

    def close(self) -> None:
        self._release()
        super().close()
