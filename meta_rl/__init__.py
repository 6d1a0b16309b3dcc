"""meta-rl: meta-reinforcement learning (MAML-TRPO, Reptile) on Gymnasium task families.

Kept import-light on purpose: `import meta_rl` must not pull in torch or the MuJoCo envs, so
the CLI answers `--help` and config errors instantly. Import submodules directly.
"""

__version__ = "0.1.0"
