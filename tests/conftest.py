"""Suite-wide test ordering."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the MJX tests last: once JAX has started its thread pools, a later ``fork`` (the
    process sampler's workers) could deadlock, and JAX warns about every one."""
    items.sort(key=lambda item: item.path.name == "test_mjx.py")
