"""Shared pytest fixtures: the `device` fixture and where shared data lives."""
from __future__ import annotations

import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def cuda_available() -> bool:
    try:
        from thyrofast import _core
    except ImportError:
        return False
    return bool(_core.build_info()["cuda"]) and _core.cuda_device_count() > 0


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
def device(request):
    """Run a test on the CPU core and, where a GPU and a CUDA build exist, on CUDA."""
    if request.param == "cuda" and not cuda_available():
        pytest.skip("no CUDA device or thyrofast built without CUDA")
    return request.param


@pytest.fixture(scope="session")
def shared_dir() -> pathlib.Path:
    return SHARED


@pytest.fixture(scope="session")
def bundle_dir(tmp_path_factory):
    """A small trained bundle (tests/_bundle_fixture.py), built once per session."""
    import _bundle_fixture

    return _bundle_fixture.get_bundle(tmp_path_factory)
