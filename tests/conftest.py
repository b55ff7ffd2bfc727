"""Shared fixtures (kept small): a per-session cache root for generated datasets."""

from __future__ import annotations

import os

import pytest
from hypothesis import settings


@pytest.fixture(scope="session")
def data_root(tmp_path_factory) -> str:
    """A fresh directory used as ``DataConfig.root`` so generated-dataset caches (mnist1d) are
    built once per test session and never read from or written to the user's ~/.cache."""
    return str(tmp_path_factory.mktemp("data-root"))


# CI runs property tests on a fixed set of examples (reproducible pass/fail); locally they
# explore new random examples on every run.
if os.environ.get("CI"):
    settings.register_profile("ci", derandomize=True, deadline=None)
    settings.load_profile("ci")


@pytest.fixture(scope="module")
def local_ray():
    """A real local Ray cluster, started once per test module (2 CPUs, as this machine has);
    yields its GCS address for tests that run ``lth run --address`` in a subprocess."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()
