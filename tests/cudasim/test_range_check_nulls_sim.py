"""Under the simulator: the CUDA backend's range check of a uint64 key joined with a signed one
(``kernels.keys.range_clear_row``, ``range_valid_row``) looks only at non-null rows, as the CPU
backend's does: with ``nulls_equal=True`` null rows holding a value >= 2**63 (uint64 side) or a
negative one (int64 side) match the other side's nulls. CUDA == CPU == the expected pairs."""
from __future__ import annotations

import pytest

import gpuframe
from gpuframe.core import memory

from ..test_range_check_nulls import expected_pairs, pairs_of, range_tables


@pytest.mark.parametrize("extra_key", [False, True], ids=["one-key", "two-keys"])
@pytest.mark.parametrize("nulls_equal", [True, False])
@pytest.mark.parametrize("how", ["inner", "outer"])
def test_null_rows_are_not_range_checked_on_the_device(how, nulls_equal, extra_key, cuda_device):
    left, right = range_tables(extra_key)
    on = (["k", "j"], ["k2", "j2"]) if extra_key else ("k", "k2")
    answers = []
    for dev in ("cpu", cuda_device):
        L, R = gpuframe.from_arrow(left).to(dev), gpuframe.from_arrow(right).to(dev)
        li, ri = gpuframe.join_indices(L, R, left_on=on[0], right_on=on[1], how=how, nulls_equal=nulls_equal)
        sl, sr = gpuframe.join_indices(R, L, left_on=on[1], right_on=on[0], how=how, nulls_equal=nulls_equal)
        answers.append((pairs_of(memory.to_host(li), memory.to_host(ri)),
                        pairs_of(memory.to_host(sr), memory.to_host(sl))))
    assert answers[0] == answers[1] == (expected_pairs(how, nulls_equal),) * 2
