"""Narrowing host copies (backends._common.narrow_host) and the join outputs that use them: the
kernel path (from NARROW_KERNEL_MIN rows on) gives exactly what numpy's astype gives."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import gpuframe
from gpuframe.backends._common import NARROW_KERNEL_MIN, narrow_host

N = NARROW_KERNEL_MIN + 1234


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")  # numpy's, on 1e39 and the like
@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32, np.uint8, np.uint16, np.uint32, np.float32, np.float16])
def test_narrow_host_equals_astype(dtype):
    rng = np.random.default_rng(5)
    if np.dtype(dtype).kind == "f":
        src = np.concatenate([rng.normal(0, 1e6, N), [np.nan, np.inf, -np.inf, -0.0, 3.4e38, 1e39, 1e-46]])
    else:
        src = np.concatenate([rng.integers(-2**63, 2**63 - 1, N, dtype=np.int64),
                              np.array([-1, 0, 2**31, -2**31 - 1, 255, 256, -129], np.int64)])
    got = narrow_host(src, dtype)
    want = src.astype(dtype)
    assert got.dtype == want.dtype and got.shape == want.shape
    assert np.array_equal(got.view(np.uint8), want.view(np.uint8))  # bit-exact, NaN and -0.0 included


def test_join_output_of_narrow_columns_past_the_kernel_threshold(monkeypatch):
    import gpuframe.backends._common as common
    from gpuframe.backends.cpu import join as cpu_join

    # the partitioned path: in place (a build side of up to 3 MiB of tables) every key matching
    # makes the output the probe side in its own order, whose columns come back zero-copy
    monkeypatch.setattr(cpu_join, "_INPLACE_BUILD_BYTES", -1)
    monkeypatch.setattr(cpu_join, "_FLAT_BUILD_BYTES", -1)
    monkeypatch.setattr(cpu_join, "_FLAT_CACHE_BYTES", -1)
    seen = []
    real = common.narrow_host
    monkeypatch.setattr(common, "narrow_host", lambda src, dtype: seen.append(np.dtype(dtype)) or real(src, dtype))
    rng = np.random.default_rng(6)
    keys = rng.permutation(N).astype(np.int64)
    left = pa.table({"k": keys, "i8": pa.array(rng.integers(-128, 128, N), pa.int8()),
                     "i32": pa.array(rng.integers(-2**31, 2**31, N), pa.int32()),
                     "u16": pa.array(rng.integers(0, 2**16, N), pa.uint16()),
                     "f32": pa.array(rng.normal(size=N).astype(np.float32)),
                     "d": pa.array(rng.integers(-10**5, 10**5, N).astype(np.int32), pa.date32())})
    right = pa.table({"k": keys[::-1].copy(), "r32": pa.array(rng.integers(-2**31, 2**31, N), pa.int32()),
                      "s": pa.array([f"v{i % 977}" for i in range(N)])})
    out = gpuframe.merge(gpuframe.from_arrow(left), gpuframe.from_arrow(right), on="k", how="outer").to_arrow()
    want = left.to_pandas().merge(right.to_pandas(), on="k", how="outer")
    got = out.to_pandas().sort_values("k").reset_index(drop=True)
    want = want.sort_values("k").reset_index(drop=True)
    assert out.schema.field("i8").type == pa.int8() and out.schema.field("d").type == pa.date32()
    pd.testing.assert_frame_equal(got, want, check_dtype=False)
    # both sides' narrow columns went through narrow_host as raw bits of their width (an outer
    # join: no side is the output in its own order, so no column comes back zero-copy)
    assert seen.count(np.dtype(np.int32)) == 4 and {np.dtype(np.int8), np.dtype(np.int16)} <= set(seen), seen
