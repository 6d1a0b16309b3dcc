"""``python -m benchmarks mjx``: env steps/s of ``train.sampler: mjx`` at many parallel envs;
``mjx-parity``: how far one MJX env step lands from C MuJoCo's, from the same states (stock
``mjx.step`` and ``meta_rl.samplers.mjx.step_as_c``, whose docstring says what differs).

A whole sampling phase (``TorchSampler.sample`` over ``MJXHalfCheetah``: policy, action draws,
MJX physics, rewards, episode tensors) on ``--device``, after one warm-up phase that pays the
compilation, against the CPU path measured in the same run: the in-process batched MuJoCo
sampler (``train.sampler: mujoco``, a thread per core), on ``--cpu-envs`` sub-envs at most
(its rate per env does not grow with the batch). HalfCheetahVel, port network, horizon
``--horizon``; the episodes of a phase are split into tasks of ``--episodes`` each.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from benchmarks.common import NETS, jsonable, load, table, write

ENV_ID = "MetaRL/HalfCheetahVel-v0"


def phase_rate(sampler: Any, repeats: int) -> tuple[float, float]:
    """(env steps/s of the best of ``repeats`` phases, seconds of the warm-up phase)."""
    import torch

    from meta_rl.agents.policies import make_policy
    from meta_rl.functional import expand_to_tasks, policy_params

    hidden, act = NETS["port"]
    policy = make_policy(sampler.observation_space, sampler.action_space, hidden, act)
    policy = policy.to(sampler.device)
    params = expand_to_tasks(
        {k: v.detach() for k, v in policy_params(policy).items()}, sampler.num_tasks
    )
    tasks = sampler.sample_tasks()

    def one() -> float:
        t = time.perf_counter()
        episodes = sampler.sample(policy, params, tasks)
        float(episodes.rewards.sum())  # waits for the device
        return time.perf_counter() - t

    warm_up = one()
    best = min(one() for _ in range(repeats))
    steps = int(sampler.batch_size * sampler.horizon)
    del torch
    return steps / best, warm_up


def cmd_mjx(args: argparse.Namespace) -> None:
    from meta_rl.samplers import MuJoCoSampler
    from meta_rl.samplers.mjx import MJXHalfCheetah
    from meta_rl.samplers.torch_native import TorchSampler

    kwargs = {"seed": 1, "max_episode_steps": args.horizon}
    cpu_envs = min(args.cpu_envs, max(args.envs))
    cpu = MuJoCoSampler(ENV_ID, max(1, cpu_envs // args.episodes), args.episodes, **kwargs)
    cpu_rate, _ = phase_rate(cpu, args.repeats)
    cpu.close()
    rows = []
    for envs in args.envs:
        tasks = max(1, envs // args.episodes)
        sampler = TorchSampler(
            ENV_ID, tasks, args.episodes, batched=MJXHalfCheetah, device=args.device, **kwargs
        )
        rate, warm_up = phase_rate(sampler, args.repeats)
        sampler.close()
        rows.append(
            {
                "envs": tasks * args.episodes,
                "device": args.device,
                "mjx steps/s": rate,
                "warm-up s": warm_up,
                f"cpu mujoco steps/s ({cpu_envs} envs)": cpu_rate,
                "ratio": rate / cpu_rate,
                "load": load(),
            }
        )
        print(table(rows[-1:], list(rows[-1])), flush=True)
    print(
        f"\nsampling phase, HalfCheetahVel, port network, horizon {args.horizon}, best of "
        f"{args.repeats} after a warm-up (compilation)"
    )
    print(table(rows, list(rows[0])))
    write(args.out, f"mjx_steps_{args.device}", {"rows": rows, "args": jsonable(args)})


PARITY_FAMILIES = {"cheetah": "MetaRL/HalfCheetahVel-v0", "ant": "MetaRL/AntVel-v0"}


PHYSICS = {"mjx": "stock mjx.step", "as-c": "meta_rl.samplers.mjx.step_as_c"}


def physics_parity(env_id: str, steps: int, seed: int, physics: str = "as-c") -> dict[str, float]:
    """Max |error| of one MJX env step (``frame_skip`` physics steps, then
    ``mj_rnePostConstraint``) from each state of a C MuJoCo trajectory with uniform random
    actions, in qpos, qvel and ``cfrc_ext`` (what the Ant observes), and C's contact counts.
    ``physics``: ``mjx`` (stock ``mjx.step``) or ``as-c`` (``step_as_c``, what the sampler
    steps the Ant with)."""
    import gymnasium as gym
    import jax
    import mujoco
    import numpy as np
    from mujoco import mjx

    import meta_rl.envs  # noqa: F401
    from meta_rl.samplers.mjx import step_as_c

    env = gym.make(env_id)
    env.reset(seed=seed)
    base = env.unwrapped
    model, data, frame_skip = base.model, base.data, base.frame_skip
    mx = mjx.put_model(model)
    step = {"mjx": mjx.step, "as-c": step_as_c}[physics]

    @jax.jit
    def one_env_step(d: Any, action: Any) -> Any:
        d = d.replace(ctrl=action)
        for _ in range(frame_skip):
            d = step(mx, d)
        return mjx.rne_postconstraint(mx, d)

    rng = np.random.default_rng(seed)
    worst = {"qpos": 0.0, "qvel": 0.0, "cfrc_ext": 0.0}
    steps_with_contact = 0
    largest_force = 0.0
    for _ in range(steps):
        action = rng.uniform(-1, 1, size=model.nu)
        dx = one_env_step(mjx.put_data(model, data), action)  # float32 unless x64
        data.ctrl[:] = action
        mujoco.mj_step(model, data, nstep=frame_skip)
        mujoco.mj_rnePostConstraint(model, data)
        steps_with_contact += data.ncon > 0
        largest_force = max(largest_force, float(np.abs(data.cfrc_ext).max()))
        for key in worst:
            error = float(np.abs(np.asarray(getattr(dx, key)) - getattr(data, key)).max())
            worst[key] = max(worst[key], error)
    env.close()
    return {**worst, "max |cfrc_ext|": largest_force, "steps with contacts": steps_with_contact}


def cmd_parity(args: argparse.Namespace) -> None:
    import jax

    jax.config.update("jax_enable_x64", args.x64)
    precision = "float64" if args.x64 else "float32"
    rows = []
    for family in args.families:
        for physics in args.physics:
            errors = physics_parity(PARITY_FAMILIES[family], args.steps, args.seed, physics)
            rows.append(
                {"family": family, "physics": physics, "mjx precision": precision, **errors}
            )
    shown = [{k: f"{v:.1e}" if isinstance(v, float) else v for k, v in r.items()} for r in rows]
    print(f"max error of one MJX env step from {args.steps} states of a C MuJoCo trajectory")
    print(table(shown, list(shown[0])))
    print("physics: " + "; ".join(f"{k} = {v}" for k, v in PHYSICS.items()))
    write(args.out, f"mjx_parity_{precision}", {"rows": rows, "args": jsonable(args)})


def register(sub: Any) -> None:
    p = sub.add_parser("mjx-parity", help="one MJX env step against C MuJoCo, same states")
    p.add_argument("--families", nargs="+", default=list(PARITY_FAMILIES), choices=PARITY_FAMILIES)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--x64", action="store_true", help="MJX in float64 (jax_enable_x64)")
    p.add_argument("--physics", nargs="+", default=list(PHYSICS), choices=PHYSICS)
    p.set_defaults(fn=cmd_parity)

    p = sub.add_parser("mjx", help="env steps/s: MJX sampler on a device vs batched MuJoCo on CPU")
    p.add_argument("--envs", type=int, nargs="+", default=[100], help="parallel envs")
    p.add_argument("--episodes", type=int, default=20, help="episodes per task")
    p.add_argument("--horizon", type=int, default=100)
    p.add_argument("--device", default="cpu", help="torch device (cuda: JAX on the same GPU)")
    p.add_argument("--cpu-envs", type=int, default=800, help="sub-envs of the CPU baseline")
    p.add_argument("--repeats", type=int, default=2)
    p.set_defaults(fn=cmd_mjx)
