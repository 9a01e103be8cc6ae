"""Shared fixtures. The whole suite turns CUDA->CPU fallbacks into errors, so a CUDA test can
never pass by silently running on the CPU."""
from __future__ import annotations

import os

os.environ.setdefault("GPUFRAME_RAISE_ON_FALLBACK", "1")

import pytest  # noqa: E402

import gpuframe  # noqa: E402
from gpuframe.core.device import cudasim_enabled, gpu_count  # noqa: E402

from .common.data import DTYPE_IDS, DTYPES  # noqa: E402

gpuframe.config.set(raise_on_fallback=True)


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs a real CUDA GPU (none found)")
    has_gpu = gpu_count() > 0
    for item in items:
        if "gpu" in item.keywords and not has_gpu:
            item.add_marker(skip_gpu)


@pytest.fixture(params=DTYPES, ids=DTYPE_IDS)
def dtype(request):
    """Every pyarrow type gpuframe stores."""
    return request.param


@pytest.fixture(params=[False, True], ids=["nonull", "nulls"])
def with_nulls(request):
    return request.param


@pytest.fixture
def cuda_device():
    """The CUDA device for the simulator and GPU lanes."""
    if not (cudasim_enabled() or gpu_count() > 0):
        pytest.skip("needs NUMBA_ENABLE_CUDASIM=1 or a CUDA GPU")
    return gpuframe.Device("cuda", 0)
