"""Meta-learners and their pieces.

- ``base``: the ``MetaLearner`` interface and its ``IterationReport``.
- ``maml_trpo``: MAML with a TRPO meta-update (Finn et al. 2017) and its ``FisherOperator``.
- ``adapted``: the adapted policies and their Jacobian, MAML-TRPO's ``Adaptation`` seam, and
  its autograd implementation (any policy).
- ``trpo``: conjugate gradient, line search and Fisher-vector products.
- ``closed_form``: hand-written derivatives of the plain Gaussian MLP policy (the closed-form
  ``Adaptation``, and the batched per-task forward the samplers are handed).
- ``reptile``: Reptile (Nichol et al. 2018).

Import the submodules directly; this package imports nothing so that each stays cheap.
"""
