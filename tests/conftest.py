"""Shared fixtures (kept small): per-session cache roots for generated datasets and figures."""

from __future__ import annotations

import os

import pytest
from hypothesis import settings


@pytest.fixture(scope="session")
def data_root(tmp_path_factory) -> str:
    """A fresh directory used as ``DataConfig.root`` so generated-dataset caches (mnist1d) are
    built once per test session and never read from or written to the user's ~/.cache."""
    return str(tmp_path_factory.mktemp("data-root"))


@pytest.fixture(scope="session", autouse=True)
def figure_cache(tmp_path_factory):
    """Reports drawn by the tests (in-process and by ``lth`` subprocesses, which inherit the
    environment) share a per-session figure cache, never the user's ~/.cache."""
    path = tmp_path_factory.mktemp("figure-cache")
    old = os.environ.get("LTH_FIGURE_CACHE")
    os.environ["LTH_FIGURE_CACHE"] = str(path)
    yield path
    if old is None:
        os.environ.pop("LTH_FIGURE_CACHE", None)
    else:
        os.environ["LTH_FIGURE_CACHE"] = old


@pytest.fixture(scope="session")
def cifar10_placeholders(tmp_path_factory):
    """A CIFAR-10 root of empty files under the expected names, also in $LTH_TEST_CIFAR10_ROOT:
    a campaign using it validates (validation checks the files are there) and its units fail
    when they load the data (torchvision's md5 check). The way to make a unit raise at run time."""
    from trainers.datasets import missing_files

    root = tmp_path_factory.mktemp("cifar10-placeholders")
    folder, files = missing_files("cifar10", str(root))
    folder.mkdir(parents=True)
    for f in files:
        (folder / f).touch()
    os.environ["LTH_TEST_CIFAR10_ROOT"] = str(root)
    yield root
    os.environ.pop("LTH_TEST_CIFAR10_ROOT", None)


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
