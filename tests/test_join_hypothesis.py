"""Random tables (hypothesis): every ``how`` agrees with the reference join."""
from __future__ import annotations

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpuframe.ops.join import HOWS

from .test_join import check_join

ints = st.one_of(st.none(), st.integers(-3, 3), st.sampled_from([-(2**63), 2**63 - 1]))
floats = st.one_of(st.none(), st.sampled_from([0.0, -0.0, float("nan"), 1.5, -2.0]))
strs = st.one_of(st.none(), st.sampled_from(["", "a", "ab", "ß", "日本語", "x" * 17]))


def tables(key_strategies):
    def build(rows):
        cols = {f"k{i}": [r[i] for r in rows] for i in range(len(key_strategies))}
        return cols
    return st.lists(st.tuples(*key_strategies), max_size=25).map(build)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
@pytest.mark.parametrize("kind", ["int", "float", "string", "int_string"])
def test_random_tables(kind, data):
    strat, types = {
        "int": ([ints], [pa.int64()]),
        "float": ([floats], [pa.float64()]),
        "string": ([strs], [pa.string()]),
        "int_string": ([ints, strs], [pa.int64(), pa.string()]),
    }[kind]
    lcols = data.draw(tables(strat))
    rcols = data.draw(tables(strat))
    how = data.draw(st.sampled_from(HOWS))
    nulls_equal = data.draw(st.booleans())
    names = [f"k{i}" for i in range(len(types))]

    def mk(cols, payload):
        n = len(cols["k0"])
        arrays = {name: pa.array(cols[name], type=t) for name, t in zip(names, types)}
        arrays[payload] = pa.array(range(n), pa.int64())
        return pa.table(arrays)

    check_join(mk(lcols, "a"), mk(rcols, "b"), how, on=names, nulls_equal=nulls_equal)
