"""pandas oracles for distributed merges, and the skewed / null / duplicate key data they run on."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa


def key_frame(n: int, seed: int, value: str, *, card: int = 40, nulls: float = 0.1, skew: float = 0.3,
              key_dtype: str = "Int64") -> pd.DataFrame:
    """``n`` rows: a key with duplicates, ``nulls`` null keys and ``skew`` of the rows on key 7."""
    rng = np.random.default_rng(seed)
    keys = rng.integers(0, card, n)
    keys[rng.random(n) < skew] = 7
    k = pd.array(keys, dtype=key_dtype)
    if nulls:
        k[rng.random(n) < nulls] = pd.NA
    return pd.DataFrame({"k": k, value: rng.integers(-1000, 1000, n), f"s{value}": [f"{value}{i % 13}" for i in range(n)]})


def merge_oracle(left: pd.DataFrame, right: pd.DataFrame, on: str, how: str, nulls_equal: bool) -> pd.DataFrame:
    """``pandas.merge`` with gpuframe's null semantics.

    pandas matches null keys with each other; gpuframe does only with ``nulls_equal=True``. So
    without it, null-key rows are kept out of the pandas merge and added back unmatched where
    ``how`` keeps them.
    """
    if how in ("semi", "anti"):
        rk = right[on].dropna() if not nulls_equal else right[on]
        hit = left[on].isin(rk) if nulls_equal else (left[on].isin(rk) & left[on].notna())
        if nulls_equal and right[on].isna().any():
            hit = hit | left[on].isna()
        return left[hit if how == "semi" else ~hit]
    if nulls_equal:
        return left.merge(right, on=on, how=how)
    lnull, rnull = left[left[on].isna()], right[right[on].isna()]
    out = left[left[on].notna()].merge(right[right[on].notna()], on=on, how=how)
    extra = []
    if how in ("left", "outer") and len(lnull):
        extra.append(lnull)
    if how in ("right", "outer") and len(rnull):
        extra.append(rnull)
    frames = [out] + [e.reindex(columns=out.columns) for e in extra]
    return pd.concat(frames, ignore_index=True) if extra else out


def to_arrow(df: pd.DataFrame) -> pa.Table:
    return pa.Table.from_pandas(df.reset_index(drop=True), preserve_index=False)
