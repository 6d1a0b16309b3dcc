"""MAML with a TRPO meta-update (Finn et al. 2017, sec. 5.3), second order by default.

``MAMLTRPO.step`` is the algorithm box: the post-adaptation surrogate and its gradient through
the inner steps (``linearize``), conjugate gradient on the Fisher of the trust region's KL
(``FisherOperator``), then a backtracking line search. How the adapted policies and their
Jacobian are computed is one ``Adaptation`` strategy (``meta_rl.algorithms.adapted``), chosen
in the constructor: autograd for any policy, the closed form
(``meta_rl.algorithms.closed_form``) for the paper's plain Gaussian MLP. ``MAMLTRPOLearner``
puts it in the trainer's sample -> adapt -> sample -> update loop.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.distributions import Distribution, kl_divergence

from meta_rl.adaptation import (
    LVC,
    REINFORCE,
    AdvantageEstimator,
    InnerLoss,
    adapt_steps,
    detached,
    magic_box,
)
from meta_rl.agents.pg import masked_task_mean, normalize_advantages
from meta_rl.algorithms import closed_form
from meta_rl.algorithms.adapted import (
    Adaptation,
    AdaptedPolicies,
    AutogradAdaptation,
    InnerLoop,
)
from meta_rl.algorithms.base import MetaLearner
from meta_rl.algorithms.settings import MAMLTRPOSettings
from meta_rl.algorithms.trpo import (
    AutogradJacobian,
    Vector,
    backtracking_line_search,
    conjugate_gradient,
    double_backward_fvp,
    flat,
    gauss_newton_fvp,
    unflat,
)
from meta_rl.episodes import Episodes, InnerBatch
from meta_rl.functional import (
    Params,
    expand_to_tasks,
    flatten_distribution,
    policy_params,
    task_log_probs,
)
from meta_rl.samplers.base import Sampler
from meta_rl.timing import PhaseTimer

logger = logging.getLogger(__name__)


def importance_weighted_loss(
    log_probs: Tensor, old_log_probs: Tensor, advantages: Tensor, mask: Tensor
) -> Tensor:
    """TRPO's surrogate ``-E[pi/pi_old * A]`` (to minimise), every task weighing the same."""
    return -task_masked_mean(torch.exp(log_probs - old_log_probs) * advantages, mask)


def task_masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean over valid steps of each task, then over tasks (every task weighs the same)."""
    return masked_task_mean(values, mask).mean()


def masked_task_std(values: Tensor, mask: Tensor) -> Tensor:
    """Population std over each task's valid steps ``[N]`` (the scale advantages are divided by
    when normalised)."""
    in_episode = mask > 0
    mean = masked_task_mean(values, mask).view(1, -1, 1)
    return masked_task_mean(torch.where(in_episode, values - mean, 0.0).square(), mask).sqrt()


def dice_sampling_weights(post: Episodes, scale: Tensor) -> Tensor:
    """Per-task weight ``[N]`` of DiCE's pre-adaptation term: the task's mean post-adaptation
    return minus the mean of the other tasks' (a baseline independent of the task's own inner
    batches, so the term stays unbiased), on the surrogate's per-step scale (divided by the mean
    episode length and by ``scale``, the post advantages' normalisation)."""
    returns = post.episode_returns().mean(dim=1)
    others = (returns.sum() - returns) / max(returns.shape[0] - 1, 1)  # 0 for a single task
    length = post.mask.sum(dim=(0, 2)) / post.episodes_per_task
    return (returns - others) / (length.clamp_min(1.0) * scale)


def post_advantages(
    estimator: AdvantageEstimator, post: Episodes, dice: bool
) -> tuple[Tensor, Tensor | None]:
    """The post-adaptation advantages and, for estimator dice, the sampling weights (on the
    scale the advantages' normalisation divides by)."""
    if not dice:
        return estimator(post)[0], None
    raw, _ = dataclasses.replace(estimator, normalize=False)(post)
    if not estimator.normalize:
        return raw, dice_sampling_weights(post, torch.ones_like(raw[0, :, 0]))
    scale = masked_task_std(raw, post.mask) + 1e-8
    return normalize_advantages(raw, post.mask), dice_sampling_weights(post, scale)


ESTIMATOR_LOSSES: dict[str, InnerLoss] = {"maml": REINFORCE, "dice": REINFORCE, "lvc": LVC}
"""The inner loss each ``algo.estimator`` differentiates; dice adds a term to the outer objective
instead (``MAMLTRPO.sampling_gradient``), so its inner step is MAML's, closed form included."""


@dataclass(frozen=True)
class MetaUpdateStats:
    surrogate_before: float
    surrogate_after: float
    kl: float
    line_search_steps: int
    accepted: bool
    cg_residual: float
    grad_norm: float


def choose_adaptation(
    policy: nn.Module, settings: MAMLTRPOSettings, loss: InnerLoss = REINFORCE
) -> Adaptation:
    """The closed form where it applies (a plain Gaussian MLP, the Gauss-Newton Fisher, an inner
    loss linear in the log-probs), else autograd. Both give the same numbers."""
    closed = settings.analytic and settings.fvp == "gauss_newton" and closed_form.supports(policy)
    if closed and not loss.linear_in_log_probs:
        logger.warning(  # one line on the console (Python's last-resort handler)
            f"{type(loss).__name__} is not linear in the log-probs: MAML-TRPO differentiates "
            "the inner steps by autograd, not by the closed form"
        )
        closed = False
    loop = InnerLoop(policy, settings.inner_lr, settings.first_order, loss)
    if closed:
        return closed_form.ClosedFormAdaptation(loop)
    return AutogradAdaptation(loop, forward=closed_form.task_forward)


@dataclass(frozen=True)
class Linearization:
    """The meta-objective around the current parameters, everything the TRPO step needs."""

    loss: Tensor  # surrogate of the adapted policies (to minimise), detached
    grad: Vector  # its gradient w.r.t. the initial parameters, through the inner steps
    fisher: FisherOperator  # v -> (F + damping I) v, the trust region's metric
    old_distribution: Distribution  # adapted policies on the post-adaptation observations
    old_log_probs: Tensor  # of the post-adaptation actions under them
    sampling_grad: Vector | None = None  # DiCE's pre-adaptation term of ``grad`` (estimator dice)


class FisherOperator:
    """``v -> (F + damping I) v``, F the Hessian w.r.t. the initial parameters of the mean KL
    between the adapted policies before and after the update, at "before".

    The KL is a mean over tasks, so F is a sum of per-chunk terms, each weighted by its chunk's
    share of the tasks; damping is added once, to the sum. A term is ``J^T M J`` (Gauss-Newton:
    ``M`` the KL's Hessian in distribution space, exact at the old point where the KL gradient
    vanishes) or the double-backward product of the KL (reference form, autograd only). ``J``
    comes from the ``Adaptation``, so the closed form is behind this object too.

    Exact Fisher: ``MAMLTRPO.linearize`` hands over each gradient chunk's adapted policies
    (``add``), one Jacobian serving both. Subsampled Fisher (``fisher_subsample < 1``):
    ``add_subsampled`` builds Jacobians of its own on every ``stride``-th time step.
    """

    def __init__(self, adaptation: Adaptation, fvp: str, damping: float) -> None:
        self.adaptation = adaptation
        self.fvp = fvp
        self.damping = damping
        self.terms: list[Callable[[Vector], Vector]] = []

    def add(self, adapted: AdaptedPolicies, mask: Tensor, share: float = 1.0) -> None:
        """The term of one chunk of tasks: ``share * F_chunk``, expanded at ``adapted``."""
        if self.fvp == "double_backward":
            jacobian = adapted.jacobian
            assert isinstance(jacobian, AutogradJacobian)  # choose_adaptation ensures this
            dist = adapted.rebuild(jacobian.outputs)
            kl = task_masked_mean(kl_divergence(_detached(dist), dist), mask)
            self.terms.append(double_backward_fvp(share * kl, jacobian.params))
            return
        # task_masked_mean as per-step weights: the KL Hessian in distribution space
        weights = mask / mask.sum(dim=(0, 2), keepdim=True).clamp_min(1.0) / mask.shape[1]
        self.terms.append(
            gauss_newton_fvp(adapted.jacobian, adapted.leaves, adapted.rebuild, share * weights)
        )

    def add_subsampled(
        self,
        theta: Params,
        inner: list[InnerBatch],
        post: Episodes,
        old_adapted: Params,
        stride: int,
        task_chunk: int,
    ) -> None:
        """All terms of a Fisher on every ``stride``-th time step of every episode.

        Most of a Fisher product's cost is differentiating through the inner step(s): the
        Hessians of the inner losses, on all inner steps. Subsampling only the post-adaptation
        KL would leave that untouched, so the subsampled Fisher takes the Jacobian of an
        adaptation on every ``stride``-th inner time step while keeping the value, and so the
        point where the KL is expanded, of the full adaptation (``old_adapted``):
        ``F ~ J_sub^T M(theta') J_sub``. Steps from every episode rather than a few whole
        episodes: the inner Hessian weighs each episode by its advantages, and measured on
        Navigation2D (3 seeds) a fifth of the episodes learned visibly slower than exact while
        a fifth of the steps did not. The gradient still uses every step. A chunk holds as
        many steps as a gradient chunk, hence more tasks: fewer, larger ops.
        """
        chunk = task_chunk * stride or post.num_tasks
        for part, share, inner_c, post_c in task_chunks(inner, post, chunk):
            heads = [
                InnerBatch(every_kth_step(b.episodes, stride), b.advantages[::stride])
                for b in inner_c
            ]
            post_c = every_kth_step(post_c, stride)
            old_c = {k: v[part] for k, v in old_adapted.items()}
            adapted = self.adaptation.linearize(theta, heads, post_c.observations[:-1], final=old_c)
            self.add(adapted, post_c.mask, share)

    def __call__(self, v: Vector) -> Vector:
        out = self.terms[0](v)
        for term in self.terms[1:]:
            out = out + term(v)
        return out + self.damping * v


class MAMLTRPO:
    """Meta-learner: inner REINFORCE steps per task, TRPO step on the post-adaptation surrogate.

    The outer objective is the importance-weighted surrogate of the adapted policies on fresh
    (post-adaptation) episodes; its gradient flows back through the inner steps to the shared
    initial parameters. The trust region is the mean KL between the adapted policies before
    and after the update, also through the adaptation. ``adaptation`` (chosen here, once) gives
    the adapted policies and their Jacobian; ``timer`` receives the step's phase timings.
    """

    def __init__(
        self,
        policy: nn.Module,
        settings: MAMLTRPOSettings,
        timer: PhaseTimer | None = None,
        inner_loss: InnerLoss | None = None,
    ) -> None:
        self.policy = policy
        self.settings = settings
        self.inner_loss = inner_loss or ESTIMATOR_LOSSES[settings.estimator]
        self.adaptation = choose_adaptation(policy, settings, self.inner_loss)
        self.timer = timer or PhaseTimer()

    def step(
        self,
        inner: list[InnerBatch],
        post: Episodes,
        advantages: Tensor,
        sampling_weights: Tensor | None = None,
    ) -> MetaUpdateStats:
        """One TRPO meta-update of the policy's parameters in place; ``sampling_weights``
        (estimator dice) adds DiCE's pre-adaptation term (``sampling_gradient``)."""
        s, timer = self.settings, self.timer
        theta = policy_params(self.policy)
        names, leaves = list(theta), list(theta.values())
        with timer.phase("meta_gradient"):  # surrogate and gradient through the inner steps
            lin = self.linearize(theta, inner, post, advantages, sampling_weights)
        with timer.phase("cg"):  # natural-gradient direction F^-1 g, scaled to the trust region
            direction, residual = conjugate_gradient(lin.fisher, lin.grad, s.cg_iters)
            shs = 0.5 * (direction @ (lin.grad - residual))  # = 0.5 x^T F x, saves one product
            full_step = -torch.sqrt(s.max_kl / shs.clamp_min(1e-12)) * direction

        start = flat([p.detach() for p in leaves])

        def evaluate(candidate: Tensor) -> tuple[float, float]:
            params = dict(zip(names, unflat(candidate, leaves), strict=True))
            loss, kl = self.surrogate_and_kl(params, inner, post, advantages, lin)
            if lin.sampling_grad is not None:  # the magic-box term, to first order
                loss += float(lin.sampling_grad @ (candidate - start))
            return loss, kl

        with timer.phase("line_search"):
            loss_before = lin.loss.item()
            new_theta, result = backtracking_line_search(
                evaluate,
                start,
                full_step,
                loss_before,
                s.max_kl,
                s.ls_max_steps,
                s.ls_backtrack_ratio,
            )
            with torch.no_grad():
                for p, value in zip(leaves, unflat(new_theta, leaves), strict=True):
                    p.copy_(value)
        return MetaUpdateStats(
            surrogate_before=loss_before,
            surrogate_after=result.loss if result.accepted else loss_before,
            kl=result.kl if result.accepted else 0.0,
            line_search_steps=result.steps,
            accepted=result.accepted,
            cg_residual=float(residual.norm()),
            grad_norm=float(lin.grad.norm()),
        )

    def linearize(
        self,
        theta: Params,
        inner: list[InnerBatch],
        post: Episodes,
        advantages: Tensor,
        sampling_weights: Tensor | None = None,
    ) -> Linearization:
        """Surrogate, gradient, Fisher operator, old adapted policies and their log-probs
        (and, with ``sampling_weights``, DiCE's pre-adaptation term, part of the gradient).

        Tasks go in chunks of ``task_chunk``: each chunk's adapted policies and their Jacobian
        serve both its share of the gradient and its Fisher term, and a few tasks'
        temporaries stay in cache. Sums over chunks are the full-batch quantities, since the
        surrogate and the KL are means over tasks. The old adapted policies' distribution is
        kept, so a line-search candidate costs one policy evaluation, not three.
        """
        s = self.settings
        obs = post.observations[:-1]
        stride = round(1 / s.fisher_subsample)
        fisher = FisherOperator(self.adaptation, s.fvp, s.cg_damping)
        losses, grad, olds, old_dists, old_lps = [], 0.0, [], [], []
        sampling = None
        for part, share, inner_c, post_c in task_chunks(
            inner, post, s.task_chunk or post.num_tasks
        ):
            if sampling_weights is not None:
                term = self.sampling_gradient(theta, inner_c, share * sampling_weights[part])
                sampling = term if sampling is None else sampling + term
            adapted = self.adaptation.linearize(theta, inner_c, obs[:, part])
            # one policy evaluation serves the surrogate, the old policy and the Fisher
            leaves = [leaf.detach().requires_grad_(True) for leaf in adapted.leaves]
            log_probs = adapted.rebuild(leaves).log_prob(post_c.actions)
            old_lp = log_probs.detach()
            loss_c = share * importance_weighted_loss(
                log_probs, old_lp, advantages[:, part], post_c.mask
            )
            grad = grad + adapted.jacobian.vjp(torch.autograd.grad(loss_c, leaves))
            losses.append(loss_c.detach())
            if stride == 1:
                fisher.add(adapted, post_c.mask, share)
            olds.append(adapted.params)
            old_dists.append(adapted.rebuild([leaf.detach() for leaf in adapted.leaves]))
            old_lps.append(old_lp)
        if stride > 1:  # the subsampled Fisher expands around the full adaptation
            old_adapted = {k: torch.cat([o[k] for o in olds]) for k in olds[0]}
            fisher.add_subsampled(theta, inner, post, old_adapted, stride, s.task_chunk)
        return Linearization(
            torch.stack(losses).sum(),
            grad if sampling is None else grad + sampling,
            fisher,
            _cat_distributions(old_dists, dim=1),
            torch.cat(old_lps, dim=1),
            sampling,
        )

    def sampling_gradient(self, theta: Params, inner: list[InnerBatch], weights: Tensor) -> Vector:
        """Gradient of DiCE's pre-adaptation term ``-mean_i w_i box(log p(D_i | theta))``.

        ``D_i`` is every inner batch of task ``i``; batch ``k`` was sampled with the parameters
        after ``k`` inner steps, so its log-probs are differentiated through those steps (the
        same ``Adaptation``, closed form included). The term's value is a constant (the box is
        1), its gradient ``-mean_i w_i grad log p(D_i)``: with the post-adaptation returns as
        ``w`` the score-function part of the meta-gradient that MAML leaves out.
        """
        log_p: Tensor | float = 0.0
        terms = []
        for k, batch in enumerate(inner):
            episodes = batch.episodes
            adapted = self.adaptation.linearize(theta, inner[:k], episodes.observations[:-1])
            leaves = [leaf.detach().requires_grad_(True) for leaf in adapted.leaves]
            log_probs = adapted.rebuild(leaves).log_prob(episodes.actions)
            log_p = log_p + torch.where(episodes.mask > 0, log_probs, 0.0).sum(dim=(0, 2))
            terms.append((adapted.jacobian, leaves))
        loss = -(weights * magic_box(log_p)).mean()  # a chunk's share of the task mean
        grads = torch.autograd.grad(loss, [leaf for _, ls in terms for leaf in ls])
        out, offset = 0.0, 0
        for jacobian, leaves in terms:
            out = out + jacobian.vjp(grads[offset : offset + len(leaves)])
            offset += len(leaves)
        return out

    def surrogate_and_kl(
        self,
        theta: Params,
        inner: list[InnerBatch],
        post: Episodes,
        advantages: Tensor,
        lin: Linearization,
    ) -> tuple[float, float]:
        """Surrogate and mean KL from ``lin``'s old policies at a line-search candidate
        ``theta``: one evaluation of the adapted policies, no graph."""
        dist = self.adapted_distribution(theta, inner, post)
        with torch.no_grad():
            log_probs = dist.log_prob(post.actions)
            loss = importance_weighted_loss(log_probs, lin.old_log_probs, advantages, post.mask)
            kl = task_masked_mean(kl_divergence(lin.old_distribution, dist), post.mask)
        return loss.item(), kl.item()

    def adapted_distribution(
        self, theta: Params, inner: list[InnerBatch], post: Episodes
    ) -> Distribution:
        """The adapted policies on the post-adaptation observations, without any graph. In
        chunks of ``task_chunk`` tasks like the linearisation, so temporaries stay in cache."""
        chunks = task_chunks(inner, post, self.settings.task_chunk or post.num_tasks)
        dists = [
            self.adaptation.distribution(theta, inner_c, post_c.observations[:-1])
            for _, _, inner_c, post_c in chunks
        ]
        return dists[0] if len(dists) == 1 else _cat_distributions(dists, dim=1)

    def inner_step(self, params: Params, batch: InnerBatch) -> Params:
        """Per-task parameters after one inner step, values only (sampling needs no graph)."""
        return self.adaptation.inner_step(params, batch)

    def adapted_params(
        self,
        theta: Params,
        inner: list[InnerBatch],
        create_graph: bool,
        num_tasks: int | None = None,
    ) -> Params:
        """Per-task adapted parameters by autograd; ``num_tasks`` is needed only without inner
        steps."""
        return adapt_steps(
            self.policy,
            expand_to_tasks(theta, num_tasks or inner[0].episodes.num_tasks),
            inner,
            self.settings.inner_lr,
            first_order=self.settings.first_order,
            create_graph=create_graph,
            loss=self.inner_loss,
        )

    def surrogate(
        self, adapted: Params, post: Episodes, advantages: Tensor, old_log_probs: Tensor
    ) -> Tensor:
        """Importance-weighted policy-gradient loss of the adapted policies (to minimise)."""
        log_probs = task_log_probs(
            self.policy, adapted, post.observations[:-1], post.actions, task_dim=1
        )
        return importance_weighted_loss(log_probs, old_log_probs, advantages, post.mask)

    def meta_loss(
        self,
        theta: Params,
        inner: list[InnerBatch],
        post: Episodes,
        advantages: Tensor,
        old_log_probs: Tensor,
    ) -> Tensor:
        """Surrogate as a differentiable function of the initial parameters ``theta``."""
        adapted = self.adapted_params(theta, inner, create_graph=True, num_tasks=post.num_tasks)
        return self.surrogate(adapted, post, advantages, old_log_probs)


def _tasks(episodes: Episodes, part: slice) -> Episodes:
    """The episodes of a contiguous range of tasks (views, no copies)."""
    return episodes.apply(lambda tensor: tensor[:, part])


def task_chunks(
    inner: list[InnerBatch], post: Episodes, chunk: int
) -> Iterator[tuple[slice, float, list[InnerBatch], Episodes]]:
    """Consecutive ranges of ``chunk`` tasks: the range, its share of all tasks, its data."""
    num_tasks = post.num_tasks
    for start in range(0, num_tasks, chunk):
        part = slice(start, min(start + chunk, num_tasks))
        inner_c = [InnerBatch(_tasks(b.episodes, part), b.advantages[:, part]) for b in inner]
        yield part, (part.stop - part.start) / num_tasks, inner_c, _tasks(post, part)


def _detached(dist: Distribution) -> Distribution:
    """The same distribution cut from the graph (the "old" policy of a KL)."""
    leaves, rebuild = flatten_distribution(dist)
    return rebuild([leaf.detach() for leaf in leaves])


def _cat_distributions(dists: list[Distribution], dim: int) -> Distribution:
    """One distribution from same-type ones, their parameters concatenated along ``dim``."""
    parts = [flatten_distribution(d) for d in dists]
    rebuild = parts[0][1]
    return rebuild(
        [torch.cat(leaves, dim=dim) for leaves in zip(*(p[0] for p in parts), strict=True)]
    )


def every_kth_step(episodes: Episodes, k: int) -> Episodes:
    """Time steps ``0, k, 2k, ...`` of every episode; the final observation row is kept."""
    obs = episodes.observations
    steps = episodes.apply(lambda tensor: tensor[::k])
    return dataclasses.replace(steps, observations=torch.cat([obs[:-1][::k], obs[-1:]]))


@dataclass(frozen=True)
class MAMLRollouts:
    """One meta-iteration's data: the batch of every inner step, then post-adaptation episodes."""

    inner: list[InnerBatch]
    post: Episodes
    explained_variance: float  # of the baseline on the inner batches

    @property
    def step_episodes(self) -> list[Episodes]:
        return [b.episodes for b in self.inner] + [self.post]

    @property
    def returns(self) -> list[float]:
        return [episodes.mean_return() for episodes in self.step_episodes]

    @property
    def env_steps(self) -> int:
        return sum(b.episodes.num_steps for b in self.inner) + self.post.num_steps


class AdaptingLearner(MetaLearner[MAMLRollouts]):
    """The sample -> inner step -> sample collection that MAML-TRPO and ProMP share.

    With ``num_inner_steps > 1`` fresh episodes are sampled after every inner step, as in the
    paper. A subclass sets ``adaptation`` (whose ``inner_step`` adapts for sampling) and
    writes ``update``. Phases timed: ``sampling``, ``advantages``, ``adaptation``.
    """

    adaptation: Adaptation
    num_inner_steps: int

    def collect(self, tasks: Sequence[dict[str, Any]]) -> MAMLRollouts:
        timer = self.timer
        theta = {k: v.detach() for k, v in policy_params(self.policy).items()}
        params = detached(expand_to_tasks(theta, len(tasks)))
        inner: list[InnerBatch] = []
        explained = 0.0
        for _ in range(self.num_inner_steps):
            with timer.phase("sampling"):
                episodes = self.sampler.sample(self.policy, params, tasks)
            with timer.phase("advantages"):
                advantages, ev = self.advantages(episodes)
            inner.append(InnerBatch(episodes, advantages))
            explained += ev / self.num_inner_steps
            with timer.phase("adaptation"):
                params = detached(self.adaptation.inner_step(params, inner[-1]))
        with timer.phase("sampling"):
            post = self.sampler.sample(self.policy, params, tasks)
        return MAMLRollouts(inner, post, explained)


class MAMLTRPOLearner(AdaptingLearner):
    """MAML-TRPO in the trainer: sample, adapt, sample again, then the TRPO meta-update, which
    differentiates through every inner step; then ``MAMLTRPO.step``'s phases."""

    def __init__(
        self,
        policy: nn.Module,
        sampler: Sampler,
        advantages: AdvantageEstimator,
        settings: MAMLTRPOSettings,
    ) -> None:
        super().__init__(policy, sampler, advantages)
        self.trpo = MAMLTRPO(policy, settings, self.timer)
        self.adaptation = self.trpo.adaptation
        self.num_inner_steps = settings.num_inner_steps
        self.dice = settings.estimator == "dice"

    def update(self, rollouts: MAMLRollouts) -> dict[str, float]:
        with self.timer.phase("advantages"):
            advantages, weights = post_advantages(self.advantages, rollouts.post, self.dice)
        stats = self.trpo.step(rollouts.inner, rollouts.post, advantages, weights)
        return {
            "meta/surrogate_before": stats.surrogate_before,
            "meta/surrogate_after": stats.surrogate_after,
            "meta/grad_norm": stats.grad_norm,
            "trpo/kl": stats.kl,
            "trpo/line_search_steps": stats.line_search_steps,
            "trpo/accepted": float(stats.accepted),
            "trpo/cg_residual": stats.cg_residual,
            "baseline/explained_variance": rollouts.explained_variance,
        }
