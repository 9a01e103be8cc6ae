"""The join kernels take their arrays bundled per side (named tuples built by one keyword-only
constructor each): a field in the wrong place is an error at the constructor."""
from __future__ import annotations

import numpy as np
import pytest

from gpuframe.kernels import join as KJ
from gpuframe.kernels import join_cpu as KC


def _e(*shape, dt=np.int64):
    return np.zeros(shape or (0,), dt)


def _cpu_build(**over):
    kw = dict(keys=_e(dt=np.uint64), valid=_e(dt=np.uint8), starts=_e(3), nparts=1, pbits=0, kmode=0,
              verify=False, w=_e(0, 0, dt=np.uint64), st=_e(0, 0), en=_e(0, 0), ch=_e(dt=np.uint8),
              tables=_e(dt=np.int32), toffs=_e(2), nxt=_e(dt=np.int32), unique=True, orig=_e(), cols=_e())
    kw.update(over)
    return KC.build_side(**kw)


def test_cpu_build_side_fields_by_name():
    b = _cpu_build(nparts=4, pbits=2)
    assert isinstance(b, KC.BuildSide)
    assert b.pmask == np.uint64(3) and b.pshift == np.uint64(2) and b.nparts == 4


@pytest.mark.parametrize("field, value", [("keys", _e()), ("w", _e(0, 0)), ("tables", _e()), ("st", _e())])
def test_cpu_build_side_rejects_a_misplaced_array(field, value):
    with pytest.raises(TypeError, match=f"BuildSide.{field}: expected"):
        _cpu_build(**{field: value})


def test_cpu_records_are_keyword_only():
    with pytest.raises(TypeError):
        KC.tally(_e(), _e(dt=np.uint8), _e(), _e(0, 0), _e(0, 0), _e(), _e(0, 0), _e(), _e(0, 0))


def test_cuda_records_reject_a_misplaced_array():
    kw = dict(keys=_e(dt=np.uint64), valid=_e(dt=np.uint8), w=_e(0, 0, dt=np.uint64), st=_e(0, 0), en=_e(0, 0),
              ch=_e(dt=np.uint8))
    assert isinstance(KJ.probe_arrays(**kw), KJ.ProbeArrays)
    with pytest.raises(TypeError, match="ProbeArrays.st: expected a 2-D int64 array, got uint64 2-D"):
        KJ.probe_arrays(**dict(kw, st=kw["w"]))


def test_slot_table_record_checks_its_arrays_and_size():
    kw = dict(slots=_e(32, dt=np.uint64), tmask=15, keys=_e(dt=np.uint64), valid=_e(dt=np.uint8), kmode=0,
              verify=False, w=_e(0, 0, dt=np.uint64), st=_e(0, 0), en=_e(0, 0), ch=_e(dt=np.uint8))
    tab = KJ.slot_table_arrays(**kw)
    assert isinstance(tab, KJ.SlotTable) and tab.tmask == np.uint64(15)
    with pytest.raises(TypeError, match="SlotTable.slots: expected a 1-D uint64 array, got int64 1-D"):
        KJ.slot_table_arrays(**dict(kw, slots=_e(32)))
    with pytest.raises(ValueError, match=r"SlotTable: expected 2 \* \(tmask \+ 1\) slot words .* got tmask=15 and "
                                         r"\(16,\) words"):
        KJ.slot_table_arrays(**dict(kw, slots=_e(16, dt=np.uint64)))
    with pytest.raises(ValueError, match="tmask=11"):
        KJ.slot_table_arrays(**dict(kw, tmask=11, slots=_e(24, dt=np.uint64)))
