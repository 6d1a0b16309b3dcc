"""Non-finite checks and deferred signals, the pieces behind the trainer's fault handling."""

from __future__ import annotations

import os
import signal

import pytest
import torch
from torch import nn

from meta_rl import signals
from meta_rl.episodes import Episodes
from meta_rl.finite import NonFiniteError, check_episodes, check_metrics, check_parameters


def episodes(num_tasks: int = 3) -> Episodes:
    gen = torch.Generator().manual_seed(0)
    t, e = 4, 2
    return Episodes(
        observations=torch.randn(t + 1, num_tasks, e, 2, generator=gen),
        actions=torch.randn(t, num_tasks, e, 2, generator=gen),
        rewards=torch.randn(t, num_tasks, e, generator=gen),
        mask=torch.ones(t, num_tasks, e),
        terminated=torch.zeros(t, num_tasks, e, dtype=torch.bool),
        truncated=torch.zeros(t, num_tasks, e, dtype=torch.bool),
        log_probs=torch.zeros(t, num_tasks, e),
    )


TASKS = [{"goal": 0.1}, {"goal": 0.2}, {"goal": 0.3}]


def test_finite_episodes_pass_unchanged():
    batch = episodes()
    assert check_episodes(batch, TASKS) is batch


@pytest.mark.parametrize(
    ("field", "index", "value", "message"),
    [
        ("rewards", (2, 1, 0), float("nan"), r"^non-finite reward in task 1 \{'goal': 0.2\}$"),
        ("observations", (4, 2, 1, 0), float("inf"), r"^non-finite observation in task 2 "),
    ],
)
def test_the_first_non_finite_value_names_its_quantity_and_task(field, index, value, message):
    batch = episodes()
    getattr(batch, field)[index] = value
    with pytest.raises(NonFiniteError, match=message) as info:
        check_episodes(batch, TASKS)
    assert str(info.value.at(7)).startswith(f"iteration 7: non-finite {info.value.quantity}")


def test_metrics_must_be_finite_except_those_nan_by_definition():
    check_metrics({"meta/surrogate_after": -1.0, "baseline/explained_variance": float("nan")})
    with pytest.raises(NonFiniteError, match=r"^non-finite trpo/kl = inf$"):
        check_metrics({"meta/surrogate_after": -1.0, "trpo/kl": float("inf")})


def test_proposed_parameters_must_be_finite():
    net = nn.Linear(2, 2)
    check_parameters(net)
    with torch.no_grad():
        net.bias[1] = float("nan")
    with pytest.raises(NonFiniteError, match=r"^non-finite policy parameters \(bias\)$"):
        check_parameters(net)


def test_signals_inside_deferred_arrive_after_the_block():
    done = []
    with pytest.raises(KeyboardInterrupt), signals.deferred():
        os.kill(os.getpid(), signal.SIGINT)
        done.append("finished the write")  # not cut short
    assert done == ["finished the write"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
