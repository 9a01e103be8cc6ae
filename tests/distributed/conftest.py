"""Fixtures shared by the distributed tests."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session", autouse=True)
def _ucx_context_made_by_gpuframe():
    """The pytest process holds one UCX context for the in-process communicators *and* for the
    Dask client and scheduler of the ucx clusters: create it the gpuframe way (thread progress)
    first, whichever test file runs first, so both kinds of event loop can share it."""
    try:
        from gpuframe.comm import local_mesh
        from gpuframe.comm.ucx import ucx_available
    except ImportError:  # pragma: no cover
        yield
        return
    if ucx_available():
        for comm in local_mesh(1, "ucx"):
            comm.close()
    yield
