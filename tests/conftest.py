"""Shared fixtures (kept small): a per-session cache root for generated datasets."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def data_root(tmp_path_factory) -> str:
    """A fresh directory used as ``DataConfig.root`` so generated-dataset caches (mnist1d) are
    built once per test session and never read from or written to the user's ~/.cache."""
    return str(tmp_path_factory.mktemp("data-root"))
