"""benchmarks/dask_merge.py's skewed cases (``--skew zipf|hot``): the keys they draw, and one
small run of the hot case checked end to end (its answer against the plain shuffle's, the
balance figures written to the JSON)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks import dask_merge
from benchmarks.shuffle import HOT_SHARE, skewed_keys

pytestmark = [pytest.mark.distributed, pytest.mark.timeout(300)]


def test_skewed_keys_stay_in_range_and_are_skewed():
    rng = np.random.default_rng(0)
    n, key_range = 200_000, 50_000
    for skew in ("none", "zipf", "hot"):
        k = skewed_keys(rng, n, key_range, skew)
        assert k.dtype == np.int64 and k.min() >= 0 and k.max() < key_range
    top = lambda k: np.bincount(k).max() / len(k)  # noqa: E731
    assert top(skewed_keys(rng, n, key_range, "none")) < 0.001
    assert 0.2 < top(skewed_keys(rng, n, key_range, "zipf")) < 0.3          # Zipf(1.3): 1 / zeta(1.3) = 25%
    assert abs(top(skewed_keys(rng, n, key_range, "hot")) - HOT_SHARE) < 0.01
    with pytest.raises(ValueError, match="skew must be one of"):
        skewed_keys(rng, 10, 10, "bogus")


def test_hot_case_runs_and_reports_the_balance(tmp_path):
    out = tmp_path / "hot.json"
    dask_merge.main(["--rows", "40k", "--workers", "2", "--runs", "1", "--warmup", "0", "--skew", "hot",
                     "--peers", "none", "--out", str(out)])
    (rec,) = json.loads(out.read_text())["records"]
    assert rec["case"] == "int64x2_hot" and rec["params"]["left_keys"] == "hot"
    ours, plain = rec["results"]
    assert (ours["variant"], plain["variant"]) == ("dask.merge", "no-heavy-keys")
    assert ours["heavy_keys"] == 1 and plain["heavy_keys"] == 0
    # the hot key's 30% on one of two workers: 0.3 + 0.7 / 2 = 65% of the output, 1.3x fair
    assert plain["max_output_vs_fair"] > 1.2
    assert ours["max_output_vs_fair"] < 1.15 and rec["target_output_vs_fair_met"]
