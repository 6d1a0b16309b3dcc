"""Linear feature baseline against a direct numpy ridge solve."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from meta_rl.agents.baseline import LinearFeatureBaseline, explained_variance


def make_batch(T: int = 12, N: int = 3, E: int = 4, D: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(T + 1, N, E, D, generator=g, dtype=torch.float64) * 4.0  # some > 10
    returns = torch.randn(T, N, E, generator=g, dtype=torch.float64)
    lengths = torch.randint(2, T + 1, (N, E), generator=g)
    mask = (torch.arange(T).view(T, 1, 1) < lengths).to(torch.float64)
    return obs, returns, mask


def numpy_features(obs: np.ndarray) -> np.ndarray:
    """rllab's featurisation of one path of observations [L, D] (t = index / 100)."""
    o = np.clip(obs, -10, 10)
    al = np.arange(len(o)).reshape(-1, 1) / 100.0
    return np.concatenate([o, o**2, al, al**2, al**3, np.ones((len(o), 1))], axis=1)


def numpy_fit_predict(obs, returns, mask, reg):
    """One ridge regression per task over its valid steps, as rllab does it, in numpy."""
    obs, returns, mask = obs.numpy(), returns.numpy(), mask.numpy()
    T, N, E = returns.shape
    values = np.zeros((T + 1, N, E))
    for n in range(N):
        feats = [numpy_features(obs[:, n, e]) for e in range(E)]
        x = np.concatenate([feats[e][:T][mask[:, n, e] > 0] for e in range(E)])
        y = np.concatenate([returns[:, n, e][mask[:, n, e] > 0] for e in range(E)])
        reg_n = reg[n] if isinstance(reg, list) else reg
        coef = np.linalg.lstsq(x.T @ x + reg_n * np.eye(x.shape[1]), x.T @ y, rcond=-1)[0]
        for e in range(E):
            values[:, n, e] = feats[e] @ coef
    return torch.from_numpy(values)


def test_features_layout():
    obs = torch.tensor([[[[1.0, -20.0]]], [[[3.0, 0.5]]]])  # [T+1=2, 1, 1, 2]
    f = LinearFeatureBaseline.features(obs)
    expected = torch.tensor(
        [
            [1.0, -10.0, 1.0, 100.0, 0.0, 0.0, 0.0, 1.0],
            [3.0, 0.5, 9.0, 0.25, 0.01, 1e-4, 1e-6, 1.0],
        ]
    )
    torch.testing.assert_close(f[:, 0, 0], expected)


def test_fit_predict_matches_numpy_ridge_per_task():
    obs, returns, mask = make_batch()
    values = LinearFeatureBaseline(reg_coeff=1e-3).fit_predict(obs, returns, mask)
    assert values.shape == (13, 3, 4)
    torch.testing.assert_close(values, numpy_fit_predict(obs, returns, mask, 1e-3))


def test_fit_predict_float32_inputs_give_float32_values():
    obs, returns, mask = make_batch(seed=1)
    values = LinearFeatureBaseline().fit_predict(obs.float(), returns.float(), mask.float())
    assert values.dtype == torch.float32
    expected = numpy_fit_predict(obs.float().double(), returns.float().double(), mask, 1e-5)
    torch.testing.assert_close(values, expected.float(), rtol=1e-4, atol=1e-4)


def test_exact_linear_returns_are_recovered():
    # returns that ARE a linear function of the features: the fit must reproduce them
    obs, _, mask = make_batch(seed=2)
    obs = obs.clamp(-10, 10)
    w = torch.tensor([0.3, -0.2, 0.05, 0.01, 1.0, -2.0, 0.5, 0.7], dtype=torch.float64)
    target = LinearFeatureBaseline.features(obs) @ w
    values = LinearFeatureBaseline(reg_coeff=1e-12).fit_predict(obs, target[:-1], mask)
    torch.testing.assert_close(values, target, rtol=1e-6, atol=1e-6)


def test_per_task_fits_are_independent():
    obs, returns, mask = make_batch(seed=3)
    baseline = LinearFeatureBaseline()
    before = baseline.fit_predict(obs, returns, mask)
    obs2, returns2 = obs.clone(), returns.clone()
    obs2[:, 1] = obs2[:, 1] * 3 + 1
    returns2[:, 1] = returns2[:, 1] * 5 - 2
    after = baseline.fit_predict(obs2, returns2, mask)
    torch.testing.assert_close(after[:, 0], before[:, 0], rtol=0, atol=0)
    torch.testing.assert_close(after[:, 2], before[:, 2], rtol=0, atol=0)
    assert not torch.allclose(after[:, 1], before[:, 1])


def test_invalid_steps_do_not_influence_the_fit():
    obs, returns, mask = make_batch(seed=4)
    baseline = LinearFeatureBaseline()
    clean = baseline.fit_predict(obs, returns, mask)
    invalid = mask == 0
    dirty_returns = torch.where(invalid, torch.full_like(returns, float("nan")), returns)
    # observation rows after the bootstrap row (row t+1 after a last valid step t) are padding
    padding = torch.zeros(obs.shape[:-1], dtype=torch.bool)
    padding[1:] = invalid
    dirty_obs = obs.masked_fill(padding[..., None], float("inf"))
    dirty = baseline.fit_predict(dirty_obs, dirty_returns, mask)
    # valid rows and bootstrap rows are untouched
    torch.testing.assert_close(dirty[~padding], clean[~padding])
    assert (~padding).sum() > mask.sum()  # the bootstrap rows are part of the comparison


def test_failed_solve_retries_with_ten_times_the_ridge(monkeypatch):
    obs, returns, mask = make_batch(seed=5)
    real_solve_ex = torch.linalg.solve_ex
    calls = []

    def flaky_solve_ex(a, b):
        coef, info = real_solve_ex(a, b)
        calls.append(1)
        if len(calls) <= 2:  # task 1 "fails" twice
            info = info.clone()
            info[1] = 1
        return coef, info

    monkeypatch.setattr(torch.linalg, "solve_ex", flaky_solve_ex)
    values = LinearFeatureBaseline(reg_coeff=1e-2).fit_predict(obs, returns, mask)
    assert len(calls) == 3
    expected = numpy_fit_predict(obs, returns, mask, [1e-2, 1e-0, 1e-2])
    torch.testing.assert_close(values, expected)


def test_non_finite_data_raises_naming_the_task():
    obs, returns, mask = make_batch(seed=6)
    returns[0, 2, 0] = float("nan")
    assert mask[0, 2, 0] == 1
    with pytest.raises(RuntimeError, match=r"tasks \[2\]"):
        LinearFeatureBaseline().fit_predict(obs, returns, mask)


def test_reg_coeff_must_be_positive():
    with pytest.raises(ValueError, match="reg_coeff"):
        LinearFeatureBaseline(reg_coeff=0.0)


def test_explained_variance_values():
    returns = torch.tensor([1.0, 2.0, 3.0, 4.0, 100.0]).view(5, 1, 1)
    mask = torch.tensor([1.0, 1.0, 1.0, 1.0, 0.0]).view(5, 1, 1)
    assert explained_variance(returns, returns, mask) == pytest.approx(1.0)
    assert explained_variance(torch.full_like(returns, 7.0), returns, mask) == pytest.approx(0.0)
    values = torch.tensor([1.0, 2.0, 3.0, 3.0, 0.0]).view(5, 1, 1)
    # residual [0, 0, 0, 1]: var 0.1875; returns var 1.25
    assert explained_variance(values, returns, mask) == pytest.approx(1 - 0.1875 / 1.25)
    assert np.isnan(explained_variance(values, torch.ones_like(returns), mask))
