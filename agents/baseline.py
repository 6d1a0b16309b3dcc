"""The linear feature baseline of the MAML paper (rllab's ``LinearFeatureBaseline``).

A value estimate per step from a ridge regression on hand-made features, fitted afresh on each
batch and separately for each task (the tasks' returns differ, that is the point of meta-RL).
All tasks are solved at once as a batch of small normal equations.
"""

from __future__ import annotations

import torch
from torch import Tensor


class LinearFeatureBaseline:
    """Per-task ridge regression of returns on ``[obs, obs**2, t, t**2, t**3, 1]``.

    As in rllab: observations are clipped to [-10, 10] (so ``obs**2`` cannot blow up the normal
    equations), ``t`` is the 0-based time index / 100, the ridge ``reg_coeff * I`` covers every
    feature including the constant, and a failed or non-finite solve is retried with 10x the
    regularisation, up to ``max_tries`` times (per task here). The normal equations are built and
    solved in ``solve_dtype`` (float64 by default: features up to t**3 and obs**2 make them
    ill-conditioned in float32; pass ``torch.float32`` on devices without float64, e.g. MPS).
    """

    def __init__(
        self,
        reg_coeff: float = 1e-5,
        max_tries: int = 5,
        solve_dtype: torch.dtype = torch.float64,
    ) -> None:
        if reg_coeff <= 0:
            raise ValueError(f"reg_coeff must be > 0 (it is grown 10x on failure), got {reg_coeff}")
        self.reg_coeff = reg_coeff
        self.max_tries = max_tries
        self.solve_dtype = solve_dtype

    @staticmethod
    def features(observations: Tensor) -> Tensor:
        """``[T+1, N, E, D] -> [T+1, N, E, 2D+4]``; row t uses time feature t/100."""
        obs = observations.clamp(-10.0, 10.0)
        t = torch.arange(obs.shape[0], dtype=obs.dtype, device=obs.device) / 100.0
        t = t.view(-1, 1, 1, 1).expand(*obs.shape[:-1], 1)
        return torch.cat([obs, obs**2, t, t**2, t**3, torch.ones_like(t)], dim=-1)

    @torch.no_grad()
    def fit_predict(self, observations: Tensor, returns: Tensor, mask: Tensor) -> Tensor:
        """Fit one regression per task on its steps; predict values for all T+1 rows.

        observations ``[T+1, N, E, D]``, returns and mask ``[T, N, E]`` -> values ``[T+1, N, E]``
        (in ``returns.dtype``). The last row values the final next-observations, which GAE uses to
        bootstrap truncated episodes. Steps after an episode's end may hold anything (even NaN):
        they are excluded with ``where``, not multiplied by zero.
        """
        T, N, E = returns.shape
        feats = self.features(observations.to(self.solve_dtype))
        in_episode = mask[..., None] > 0
        x = torch.where(in_episode, feats[:T], 0.0).permute(1, 0, 2, 3).reshape(N, T * E, -1)
        y = torch.where(in_episode, returns.to(self.solve_dtype)[..., None], 0.0)
        y = y.permute(1, 0, 2, 3).reshape(N, T * E, 1)
        gram, rhs = x.mT @ x, x.mT @ y
        eye = torch.eye(gram.shape[-1], dtype=gram.dtype, device=gram.device)
        reg = torch.full((N, 1, 1), self.reg_coeff, dtype=gram.dtype, device=gram.device)
        for _ in range(self.max_tries):
            coef, info = torch.linalg.solve_ex(gram + reg * eye, rhs)
            bad = (info != 0) | ~torch.isfinite(coef).all(dim=(-2, -1))
            if not bad.any():
                break
            reg = torch.where(bad.view(N, 1, 1), reg * 10.0, reg)
        else:
            tasks = bad.nonzero().flatten().tolist()
            raise RuntimeError(
                f"baseline solve failed for tasks {tasks} after {self.max_tries} tries "
                f"(reg_coeff up to {reg.max().item():g}); are returns or observations non-finite?"
            )
        return torch.einsum("tnef,nf->tne", feats, coef[..., 0]).to(returns.dtype)


def explained_variance(values: Tensor, returns: Tensor, mask: Tensor) -> float:
    """``1 - Var[returns - values] / Var[returns]`` over episode steps; NaN if returns are constant.

    1 is a perfect baseline, 0 no better than a constant, negative worse. ``values`` has the
    shape of ``returns`` (drop the bootstrap row of ``fit_predict``'s output first).
    """
    in_episode = mask > 0
    r, v = returns[in_episode].double(), values[in_episode].double()
    var_r = r.var(unbiased=False)
    if var_r == 0:
        return float("nan")
    return float(1.0 - (r - v).var(unbiased=False) / var_r)
