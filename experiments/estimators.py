"""The meta-gradient estimators compared: MAML-TRPO with ``algo.estimator`` maml, dice and lvc,
and ProMP, on Navigation2D and HalfCheetahDir at small budgets (stated in the table).

Two measurements per family:

- learning: each method trained with ``meta-rl train``'s code path for 3 seeds at the same
  budget; the post-adaptation return of every iteration (``progress.csv``), averaged over seeds.
- meta-gradient variance: at the initial parameters of seed 1, ``--repeats`` independent
  meta-batches, and on each the gradient every estimator gives (the same episodes for all:
  MAML's collection; ProMP's is the gradient of its first outer step). Reported as the
  trace of the covariance over the squared norm of the mean (relative variance) and the trace.

Writes ``experiments/results/estimators.{md,csv,png}``. Returns do not depend on the machine's
load; the wall times in the table do (the load average is printed beside them).

    python experiments/estimators.py                      # both families
    python experiments/estimators.py --families navigation2d --seeds 1
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
from dataclasses import dataclass, fields, replace
from pathlib import Path

import numpy as np
import torch
import yaml

from meta_rl.algorithms.maml_trpo import MAMLTRPO, MAMLTRPOLearner, post_advantages
from meta_rl.algorithms.promp import ProMP
from meta_rl.algorithms.settings import PROMPSettings
from meta_rl.config import Config, config_from_dict
from meta_rl.functional import policy_params
from meta_rl.perf import configure_learner
from meta_rl.tables import format_table
from meta_rl.trainer import MetaTrainer, train

ROOT = Path(__file__).parent
METHODS = ("maml", "dice", "lvc", "promp")


@dataclass(frozen=True)
class Family:
    config: str
    overrides: tuple[str, ...]
    budget: str  # in words, for the table


FAMILIES = {
    "navigation2d": Family(
        "maml_navigation2d_quick.yaml",
        ("train.iterations=30",),
        "10 tasks x 10 episodes x 100 steps, 30 iterations (0.6 M env steps), 100x100 ReLU",
    ),
    "halfcheetah_dir": Family(
        "maml_halfcheetah_dir.yaml",
        (
            "train.meta_batch_size=5",
            "train.episodes_per_task=5",
            "train.iterations=15",
            "train.sampler=mujoco",
        ),
        "5 tasks x 5 episodes x 200 steps, 15 iterations (0.3 M env steps), 100x100 ReLU",
    ),
}


def method_config(family: Family, method: str, seed: int) -> Config:
    overrides = [*family.overrides, f"train.seed={seed}", "train.num_threads=1"]
    data = yaml.safe_load((ROOT / "configs" / family.config).read_text())
    if method == "promp":  # the MAML config's shared settings (inner step, advantages)
        shared = {f.name for f in fields(PROMPSettings)}
        data["algo"] = {k: v for k, v in data["algo"].items() if k in shared} | {"name": "promp"}
    else:
        overrides.append(f"algo.estimator={method}")
    return config_from_dict(data, overrides)


def learning_curves(
    family: Family, method: str, seeds: list[int], out: Path
) -> tuple[np.ndarray, float]:
    """Post-adaptation return per iteration ``[seeds, iterations]`` and the mean training
    wall time of a run (from its progress.csv; reruns reuse finished runs)."""
    curves, walls = [], []
    for seed in seeds:
        run_dir = out / "runs" / f"{method}_{seed}"
        config = method_config(family, method, seed)
        if not (run_dir / "progress.csv").is_file():
            train(config, run_dir=run_dir, overwrite=run_dir.exists())
        with (run_dir / "progress.csv").open(newline="") as f:
            progress = list(csv.DictReader(f))
        curves.append([float(row["return_post_adapt"]) for row in progress])
        walls.append(float(progress[-1]["time_s"]))
    return np.array(curves), float(np.mean(walls))


def gradient_variance(family: Family, repeats: int) -> dict[str, tuple[float, float]]:
    """Per method: (relative variance, trace of the covariance) of the meta-gradient."""
    config = method_config(family, "maml", 1)
    trainer = MetaTrainer(config, torch.device("cpu"))
    learner = trainer.meta_learner
    assert isinstance(learner, MAMLTRPOLearner)
    policy, algo = trainer.policy, config.algo
    estimators = {m: MAMLTRPO(policy, replace(algo, estimator=m)) for m in ("maml", "dice", "lvc")}
    promp = ProMP(policy, PROMPSettings(inner_lr=algo.inner_lr, gamma=algo.gamma))
    theta = policy_params(policy)
    grads: dict[str, list[torch.Tensor]] = {m: [] for m in METHODS}
    try:
        for _ in range(repeats):
            rollouts = learner.collect(trainer.sampler.sample_tasks())
            inner, post = rollouts.inner, rollouts.post
            advantages, _ = learner.advantages(post)
            for method, trpo in estimators.items():
                adv, weights = post_advantages(learner.advantages, post, method == "dice")
                grads[method].append(trpo.linearize(theta, inner, post, adv, weights).grad)
            old = promp.objective(theta, inner, post, advantages)
            loss = promp.objective(theta, inner, post, advantages, old).loss
            g = torch.autograd.grad(loss, list(theta.values()))
            grads["promp"].append(torch.cat([t.reshape(-1) for t in g]))
    finally:
        trainer.close()
    out = {}
    for method, rows in grads.items():
        stacked = torch.stack(rows).double()
        trace = stacked.var(0).sum().item()
        out[method] = (trace / stacked.mean(0).square().sum().item(), trace)
    return out


def plot(curves: dict[str, dict[str, np.ndarray]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves), figsize=(5.5 * len(curves), 4), squeeze=False)
    for ax, (family, by_method) in zip(axes[0], curves.items(), strict=True):
        for method, runs in by_method.items():
            mean, std = runs.mean(0), runs.std(0)
            x = np.arange(len(mean))
            ax.plot(x, mean, label=method)
            ax.fill_between(x, mean - std, mean + std, alpha=0.2)
        ax.set_title(f"{family} ({runs.shape[0]} seeds, mean +- std)")
        ax.set_xlabel("meta-iteration")
        ax.set_ylabel("post-adaptation return")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", nargs="+", default=list(FAMILIES), choices=FAMILIES)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--repeats", type=int, default=10, help="meta-batches for the variance")
    parser.add_argument("--out", type=Path, default=ROOT / "results")
    parser.add_argument("--work", type=Path, default=Path("runs/estimators"))
    args = parser.parse_args()
    configure_learner(1)
    header = [
        "family",
        "method",
        "budget",
        "post_adapt_last5_mean",
        "post_adapt_last5_std_over_seeds",
        "post_adapt_first",
        "grad_relative_variance",
        "grad_variance_trace",
        "train_wall_s_per_run",
        "load_avg_at_end",
    ]
    rows, curves = [], {}
    for name in args.families:
        family = FAMILIES[name]
        variance = gradient_variance(family, args.repeats)
        curves[name] = {}
        for method in args.methods:
            runs, wall = learning_curves(family, method, args.seeds, args.work / name)
            curves[name][method] = runs
            last = runs[:, -5:].mean(1)
            rel, trace = variance[method]
            rows.append(
                [
                    name,
                    method,
                    f"{family.budget}, {len(args.seeds)} seeds",
                    f"{last.mean():.1f}",
                    f"{last.std():.1f}",
                    f"{runs[:, 0].mean():.1f}",
                    f"{rel:.3g}",
                    f"{trace:.3g}",
                    f"{wall:.0f}",
                    f"{os.getloadavg()[0]:.1f}",
                ]
            )
            print(" | ".join(rows[-1]), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    with (args.out / "estimators.csv").open("w", newline="") as f:
        csv.writer(f).writerows([header, *rows])
    machine = f"{platform.machine()}, {os.cpu_count()} cores, shared with other jobs"
    text = [
        "# Meta-gradient estimators: maml, dice, lvc (MAML-TRPO) and ProMP",
        "",
        f"Written by `python experiments/estimators.py` on {machine}; torch {torch.__version__}.",
        "Post-adaptation return: mean over the last 5 iterations, then mean (and std) over "
        f"seeds {args.seeds}. Gradient variance: {args.repeats} meta-batches at seed 1's "
        "initial parameters, the same episodes for every estimator; relative variance = "
        "trace(Cov) / |mean|^2. Wall times depend on the load (1-minute average beside them).",
        "",
        format_table(header, rows, markdown=True),
        "",
        "![post-adaptation return per iteration](estimators.png)",
        "",
    ]
    (args.out / "estimators.md").write_text("\n".join(text))
    plot(curves, args.out / "estimators.png")


if __name__ == "__main__":
    main()
