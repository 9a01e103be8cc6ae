"""``gpuframe demo``: the whole mission in one command.

1. Generate a realistic raw data set as Parquet in a temporary folder: click events
   (``event_id, user_id, item_id, ts, dwell_s, clicked``), users (``user_id, age, country``) and
   items (``item_id, category, price``).
2. Start a local Dask cluster (UCX through ``distributed-ucxx``; TCP, with a visible note, when
   ucxx is not installed).
3. Join events with users and items with :func:`gpuframe.dask.merge` (hash partition -> all-to-all
   exchange -> local hash join on every worker).
4. Build features: numeric columns normalised, categorical columns as integer codes.
5. Hand the features to PyTorch through DLPack without a copy (``Table.to_torch``; the tensors'
   ``data_ptr`` is checked against the table's buffers).
6. Train a small model for a few steps and print the loss falling.
7. The same pipeline with pandas for comparison, and with gpuframe in this one process
   (``gpuframe.read_parquet``, ``gpuframe.merge``, the features, ``to_torch``: what the kernels
   do without the cluster's overheads), :data:`COMPARE_ROUNDS` rounds each, alternating, every
   round's results kept alive; the features of all three pipelines are compared value by value.
8. Print the time of each stage (the one-process pipelines' median rounds).

The temporary folder and the cluster are removed on the way out, also on an error or Ctrl-C.
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Optional

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .core.device import CPU, Device, as_device, gpu_count, require_cuda

DEFAULT_ROWS = 2_000_000
COUNTRIES = ["US", "IN", "BR", "DE", "GB", "FR", "JP", "ID", "MX", "NG", "TR", "IT", "ES", "KR", "CA", "PL",
             "VN", "AR", "EG", "AU"]
CATEGORIES = ["books", "music", "movies", "games", "electronics", "computers", "phones", "home", "garden",
              "kitchen", "toys", "baby", "beauty", "health", "grocery", "pets", "sports", "outdoors", "tools",
              "auto", "fashion", "shoes", "jewelry", "watches", "luggage", "office", "crafts", "software",
              "appliances", "furniture"]
# Feature columns handed to PyTorch (numeric ones are normalised float32, codes int64).
NUMERIC_FEATURES = ["log_dwell", "age", "log_price", "hour"]
CODE_FEATURES = ["country_code", "category_code"]
LABEL = "clicked"
# Joined columns the features are built from (event_id identifies a row for the pandas check).
FEATURE_INPUTS = ["event_id", "ts", "dwell_s", "age", "price", "country_code", "category_code", LABEL]
# The Dask pipeline's one stage from Parquet to the joined table on the client (a lazy graph).
READ_JOIN_COLLECT = "read + join + collect to client (one Dask graph)"
WARM_UP = "warm up (imports, JIT, connect)"
SLOW_WARM_UP_S = 30.0   # past this the demo says how to compile the kernels ahead (2-12 s once compiled)


# ---------------------------------------------------------------------------------------- data
@dataclass(frozen=True)
class DataSet:
    """Where the generated Parquet files are, and how big they are."""

    root: str
    events: str      # folder of events-*.parquet (one file per partition)
    users: str       # users.parquet
    items: str       # items.parquet
    rows: int        # events
    n_users: int
    n_items: int
    nbytes: int      # on disk


def _zipf_weights(n: int, s: float, rng: np.random.Generator) -> np.ndarray:
    w = 1.0 / np.arange(1, n + 1) ** s
    rng.shuffle(w)
    return w / w.sum()


def generate(root: str, rows: int = DEFAULT_ROWS, *, partitions: int = 8, seed: int = 7) -> DataSet:
    """Write events, users and items Parquet files under ``root`` and return their paths.

    Users' activity and items' popularity are Zipf-like; dwell times and prices are log-normal;
    the click label follows a logistic model of dwell time, price, age, hour, country and
    category (so a model has something to learn). Every event refers to an existing user and
    item, so inner joins keep every event.
    """
    if not isinstance(rows, int) or rows < 100:
        raise ValueError(f"rows must be an int >= 100, got {rows!r}")
    if not isinstance(partitions, int) or partitions < 1:
        raise ValueError(f"partitions must be a positive int, got {partitions!r}")
    rng = np.random.default_rng(seed)
    n_users = max(rows // 20, 10)
    n_items = max(rows // 40, 10)

    # ids are sparse 64-bit numbers, as real ids are (not 0..n-1: a join must hash them)
    user_ids = rng.choice(np.iinfo(np.int32).max, size=n_users, replace=False).astype(np.int64) * 7919 + 13
    item_ids = rng.choice(np.iinfo(np.int32).max, size=n_items, replace=False).astype(np.int64) * 104729 + 1
    age = np.clip(rng.normal(36, 12, n_users), 16, 85).astype(np.int16)
    country_p = _zipf_weights(len(COUNTRIES), 1.1, rng)
    country_idx = rng.choice(len(COUNTRIES), size=n_users, p=country_p)
    category_idx = rng.integers(0, len(CATEGORIES), n_items)
    price = np.round(np.exp(rng.normal(3.0, 1.0, n_items)) * (1 + category_idx % 5), 2)

    users = pa.table({"user_id": user_ids, "age": age,
                      "country": pa.array(np.array(COUNTRIES, dtype=object)[country_idx], pa.string())})
    items = pa.table({"item_id": item_ids,
                      "category": pa.array(np.array(CATEGORIES, dtype=object)[category_idx], pa.string()),
                      "price": price})

    ev_user = rng.choice(n_users, size=rows, p=_zipf_weights(n_users, 0.9, rng))
    ev_item = rng.choice(n_items, size=rows, p=_zipf_weights(n_items, 1.05, rng))
    t0 = np.datetime64("2026-03-02T00:00:00", "ms").astype(np.int64)
    ts = t0 + np.sort(rng.integers(0, 7 * 86_400_000, rows))
    dwell = rng.lognormal(2.2, 0.9, rows).astype(np.float32)
    hour = (ts // 3_600_000) % 24
    country_eff = rng.normal(0, 0.4, len(COUNTRIES))
    category_eff = rng.normal(0, 0.6, len(CATEGORIES))
    logit = (-0.6 + 0.9 * (np.log(dwell) - 2.2) - 0.5 * (np.log(price[ev_item]) - 3.5)
             + 0.02 * (36 - age[ev_user]) + 0.3 * np.cos((hour - 20) / 24 * 2 * np.pi)
             + country_eff[country_idx[ev_user]] + category_eff[category_idx[ev_item]])
    clicked = rng.random(rows) < 1 / (1 + np.exp(-logit))
    events = pa.table({
        "event_id": np.arange(rows, dtype=np.int64),
        "user_id": user_ids[ev_user], "item_id": item_ids[ev_item],
        "ts": pa.array(ts, pa.timestamp("ms")), "dwell_s": dwell, "clicked": clicked,
    })

    ev_dir = os.path.join(root, "events")
    os.makedirs(ev_dir, exist_ok=True)
    step = -(-rows // partitions)
    for i in range(partitions):
        pq.write_table(events.slice(i * step, step), os.path.join(ev_dir, f"events-{i:03d}.parquet"))
    users_path = os.path.join(root, "users.parquet")
    items_path = os.path.join(root, "items.parquet")
    pq.write_table(users, users_path)
    pq.write_table(items, items_path)
    nbytes = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(root) for f in fs)
    return DataSet(root, ev_dir, users_path, items_path, rows, n_users, n_items, nbytes)


# ---------------------------------------------------------------------------------------- features
def encode_codes(values: Any, vocabulary: list[str]) -> np.ndarray:
    """Integer code of each string in ``values`` (position in ``vocabulary``); unknown -> error."""
    arr = np.asarray(values, dtype=object)
    lookup = {v: i for i, v in enumerate(vocabulary)}
    try:
        return np.fromiter((lookup[v] for v in arr), dtype=np.int64, count=len(arr))
    except KeyError as e:
        raise ValueError(f"value {e.args[0]!r} is not in the vocabulary {vocabulary}") from None


def dimension_codes(users: pa.Table, items: pa.Table) -> tuple[pa.Table, pa.Table]:
    """Users and items with ``country``/``category`` replaced by integer codes.

    Categorical codes are made on the small dimension tables, before the join, so the join moves
    8-byte codes instead of strings and the code of a value is the same in every partition.
    """
    u = users.append_column("country_code", pa.array(encode_codes(users.column("country").to_pylist(), COUNTRIES)))
    i = items.append_column("category_code", pa.array(encode_codes(items.column("category").to_pylist(), CATEGORIES)))
    return u.drop_columns(["country"]), i.drop_columns(["category"])


def _normalise(x: Any, xp: Any) -> Any:
    x = x.astype(xp.float64)
    mu = x.mean()
    sd = x.std()
    return ((x - mu) / (sd if sd > 0 else 1.0)).astype(xp.float32)


def build_features(cols: dict[str, Any], xp: Any = np) -> dict[str, Any]:
    """Feature arrays from the joined columns (numpy or CuPy arrays, module ``xp``).

    ``cols`` needs ``dwell_s, age, price, ts`` (int64 milliseconds), ``country_code``,
    ``category_code`` and ``clicked`` (0/1). Numeric features are standardised float32; the
    codes are int64 (what ``torch.nn.Embedding`` takes); the label is float32.
    """
    ts = cols["ts"]
    return {
        "log_dwell": _normalise(xp.log1p(cols["dwell_s"].astype(xp.float64)), xp),
        "age": _normalise(cols["age"], xp),
        "log_price": _normalise(xp.log(cols["price"]), xp),
        "hour": _normalise((ts // 3_600_000) % 24, xp),
        "country_code": cols["country_code"].astype(xp.int64),
        "category_code": cols["category_code"].astype(xp.int64),
        LABEL: cols[LABEL].astype(xp.float32),
    }


# ---------------------------------------------------------------------------------------- model
def train(tensors: dict[str, Any], steps: int, *, batch: int = 8192, seed: int = 0,
          log: Callable[[str], None] = print) -> list[float]:
    """Train a small MLP (numeric features + embeddings of the codes) for ``steps`` Adam steps.

    Returns the loss on a fixed evaluation batch before training and every 10 steps after.
    """
    import torch

    torch.manual_seed(seed)
    dev = tensors[LABEL].device
    n = int(tensors[LABEL].shape[0])

    class Model(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.country = torch.nn.Embedding(len(COUNTRIES), 4)
            self.category = torch.nn.Embedding(len(CATEGORIES), 4)
            self.mlp = torch.nn.Sequential(torch.nn.Linear(len(NUMERIC_FEATURES) + 8, 32), torch.nn.ReLU(),
                                           torch.nn.Linear(32, 1))

        def forward(self, num: Any, country: Any, category: Any) -> Any:
            return self.mlp(torch.cat([num, self.country(country), self.category(category)], 1)).squeeze(1)

    def batch_of(idx: Any) -> tuple[Any, ...]:
        num = torch.stack([tensors[k][idx] for k in NUMERIC_FEATURES], 1)
        return num, tensors["country_code"][idx], tensors["category_code"][idx], tensors[LABEL][idx]

    model = Model().to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    gen = torch.Generator(device="cpu").manual_seed(seed)
    eval_idx = torch.randint(0, n, (min(n, 16384),), generator=gen).to(dev)
    ev = batch_of(eval_idx)

    def eval_loss() -> float:
        with torch.no_grad():
            return float(loss_fn(model(*ev[:3]), ev[3]))

    losses = [eval_loss()]
    log(f"step {0:4d}  loss {losses[0]:.4f}")
    for step in range(1, steps + 1):
        idx = torch.randint(0, n, (min(batch, n),), generator=gen).to(dev)
        num, country, category, y = batch_of(idx)
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(num, country, category), y)
        loss.backward()
        opt.step()
        if step % 10 == 0 or step == steps:
            losses.append(eval_loss())
            log(f"step {step:4d}  loss {losses[-1]:.4f}")
    return losses


# ---------------------------------------------------------------------------------------- timing
@dataclass
class Timings:
    """Seconds per stage, in order; ``spinner(text)`` (e.g. ``Console.status``) shows the running one."""

    stages: dict[str, float] = field(default_factory=dict)
    spinner: Optional[Callable[[str], Any]] = None

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        live = self.spinner(f"{name}...") if self.spinner is not None else contextlib.nullcontext()
        t0 = time.perf_counter()
        try:
            with live:
                yield
        finally:
            self.stages[name] = self.stages.get(name, 0.0) + time.perf_counter() - t0

    def total(self, names: Optional[list[str]] = None) -> float:
        return sum(v for k, v in self.stages.items() if names is None or k in names)


# ---------------------------------------------------------------------------------------- cluster
def _ucxx_available() -> tuple[bool, str]:
    try:
        import distributed_ucxx  # noqa: F401
        import ucxx  # noqa: F401
    except Exception as e:  # noqa: BLE001 - any failure to load UCX means: no UCX here
        return False, f"{type(e).__name__}: {e}"
    return True, ""


def _ignore_sigint() -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


@contextlib.contextmanager
def local_cluster(workers: int, protocol: str, note: Callable[[str], None],
                  dask_comm: Optional[str] = None) -> Iterator[tuple[Any, str]]:
    """A LocalCluster with ``workers`` single-threaded worker processes and a Client.

    ``protocol`` is ``"ucxx"`` or ``"tcp"``: the transport of gpuframe's communicators (the
    merge's data) and, unless ``dask_comm`` says another, of Dask's own messages; ``"ucxx"``
    falls back to TCP, with a ``note``, when the ucxx packages cannot be imported. Yields
    ``(client, protocol actually used)``; the client and the cluster are closed on the way out,
    also on errors and Ctrl-C.
    """
    from distributed import Client, LocalCluster

    if protocol not in ("ucxx", "tcp"):
        raise ValueError(f"protocol must be 'ucxx' or 'tcp', got {protocol!r}")
    if protocol == "ucxx":
        # before UCX loads: distributed-ucxx sets variables this UCX build does not know, and
        # every process would print a warning about them
        os.environ.setdefault("UCX_WARN_UNUSED_ENV_VARS", "n")
        ok, why = _ucxx_available()
        if not ok:
            note(f"ucxx is not installed ({why}); falling back to TCP. "
                 "Install it with: pip install 'gpuframe[ucx]'")
            protocol = "tcp"
    cluster = client = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # e.g. "Port 8787 is already in use"
            cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                   protocol=dask_comm or protocol, dashboard_address=None,
                                   silence_logs=logging.CRITICAL)
        client = Client(cluster)
        client.wait_for_workers(workers, timeout=60)
        # Ctrl-C in a terminal reaches the whole process group: the workers would die mid-task,
        # each printing its own traceback. They ignore it instead; this process catches it and
        # closes the cluster, which stops them cleanly.
        client.run(_ignore_sigint)
        yield client, protocol
    finally:
        if client is not None:
            with contextlib.suppress(Exception):
                client.close(timeout=10)
        if cluster is not None:
            with contextlib.suppress(Exception):
                cluster.close(timeout=10)


# ---------------------------------------------------------------------------------------- pipelines
def _require_dask_merge() -> Callable[..., Any]:
    try:
        from gpuframe.dask import merge
    except ImportError as e:
        raise RuntimeError(f"gpuframe.dask.merge is not available ({e}); the demo needs the distributed join "
                           "and does not fall back to another engine") from None
    return merge


def _table_from_arrays(arrays: dict[str, Any], device: Device) -> Any:
    """A gpuframe Table over device arrays, without copying them."""
    from .core.buffer import Buffer
    from .core.column import Column
    from .core.table import Table

    cols = {}
    for name, arr in arrays.items():
        cols[name] = Column(pa.from_numpy_dtype(np.dtype(arr.dtype)), int(arr.shape[0]), Buffer(arr, device))
    return Table(cols)


def _xp(device: Device) -> Any:
    if device.is_cuda:
        import cupy

        return cupy
    return np


def _read_dask(data: DataSet, use_cudf: bool) -> tuple[Any, Any, Any]:
    """events, users, items as Dask DataFrames (cuDF partitions when ``use_cudf``), codes made."""
    import dask
    import dask.dataframe as dd

    users, items = dimension_codes(pq.read_table(data.users), pq.read_table(data.items))
    with dask.config.set({"dataframe.backend": "cudf" if use_cudf else "pandas"}):
        events = dd.read_parquet(data.events)
    if use_cudf:
        import cudf

        users_df, items_df = cudf.DataFrame.from_arrow(users), cudf.DataFrame.from_arrow(items)
    else:
        users_df, items_df = users.to_pandas(), items.to_pandas()
    return events, dd.from_pandas(users_df, npartitions=1), dd.from_pandas(items_df, npartitions=1)


def _join(events: Any, users: Any, items: Any, backend: str, stats: Optional[list[dict]] = None) -> Any:
    """events x users x items with gpuframe.dask.merge (inner joins on user_id, then item_id)."""
    merge = _require_dask_merge()
    s1: dict = {}
    s2: dict = {}
    joined = merge(events, users, on="user_id", how="inner", backend=backend, stats=s1)
    joined = merge(joined, items, on="item_id", how="inner", backend=backend, stats=s2)
    if stats is not None:
        stats += [s1, s2]
    return joined


def _warm_up(data: DataSet, client: Any, use_cudf: bool, backend: str) -> None:
    """The join pipeline once, untimed: workers import their libraries, the kernels compile (or
    load from numba's cache), the communicators connect and the result is collected once (the
    first collect of a session paid 0.6-1.1 s more than the next ones: Dask's serialisation and
    graph code warming up), outside the timings.

    It runs on the whole data set: the join and the partition pick their kernels by size and
    type (a tiny join probes in place, a large one radix-partitions), and a small sample left
    some of them to compile inside the timed run.
    """
    from gpuframe.dask import to_table

    events, users, items = _read_dask(data, use_cudf)
    to_table(_join(events, users, items, backend)[FEATURE_INPUTS])


def _gpuframe_pipeline(data: DataSet, client: Any, device: Device, protocol: str, use_cudf: bool, t: Timings,
                       say: Callable[[str], None]) -> Any:
    """Read -> distributed join -> collect -> features on ``device``, :data:`COMPARE_ROUNDS`
    times after the warm-up, every round's results kept alive (as the one-process rounds keep
    theirs); ``t`` gets the median round's stages. Returns the last round's features Table."""
    from gpuframe.dask import to_table, wait_stats

    backend = "ucx" if protocol == "ucxx" else "tcp"
    with t.stage(WARM_UP):
        _warm_up(data, client, use_cudf, backend)
    rounds: list[Timings] = []
    kept: list[Any] = []
    for r in range(COMPARE_ROUNDS):
        tr = Timings(spinner=t.spinner)
        stats: list[dict] = []
        with tr.stage(READ_JOIN_COLLECT):
            # one lazy graph: reading the events, both joins and the collect, computed once (the
            # broadcast joins and the column selection fused into the read's task per
            # partition); only the columns the features need travel to the client (not the
            # two join keys)
            events, users, items = _read_dask(data, use_cudf)
            joined = _join(events, users, items, backend, stats)
            table = to_table(joined[FEATURE_INPUTS]).to(device)
        if table.num_rows != data.rows:
            raise AssertionError(f"the inner joins should keep all {data.rows:,} events, got {table.num_rows:,} rows")
        with tr.stage("features"):
            ftable = _features_table(table, device)
        kept.append((table, ftable))
        rounds.append(tr)
        if r:
            continue
        say(f"read {data.rows:,} events in {events.npartitions} partitions, {data.n_users:,} users, "
            f"{data.n_items:,} items")
        for name, st, small in zip(("events x users", "   x items"), stats, ("users", "items")):
            wait_stats(st)
            if "broadcast" in st:
                say(f"{name}: broadcast join: {small} (one partition) sent to the workers, each events partition "
                    "joined with it where it lies, nothing shuffled")
                continue
            say(f"{name}: hash partition {st.get('partition_s', 0):.2f} s, all-to-all over {backend} "
                f"{st.get('exchange_s', 0):.2f} s ({st.get('bytes_sent', 0) / 2**20:.1f} MiB sent), "
                f"local join {st.get('merge_s', 0):.2f} s, DataFrame<->Table {st.get('convert_s', 0):.2f} s "
                "(slowest worker)")
        say(f"joined: {table.num_rows:,} rows x {table.num_columns} columns on {table.device}")
    t.stages.update(_median_round(rounds).stages)
    say(f"{COMPARE_ROUNDS} rounds from Parquet to features took {', '.join(f'{r.total(ETL_STAGES):.2f}' for r in rounds)} s "
        "(the table below shows the median one)")
    return ftable


def _pandas_pipeline(data: DataSet, t: Timings) -> tuple[Any, dict]:
    """The same pipeline in pandas: read, two merges, the same features, torch.from_numpy(df.to_numpy())."""
    import pandas as pd
    import torch

    with t.stage("read Parquet"):
        events = pd.read_parquet(data.events)
        users, items = dimension_codes(pq.read_table(data.users), pq.read_table(data.items))
        users, items = users.to_pandas(), items.to_pandas()
    with t.stage("join"):
        df = events.merge(users, on="user_id", how="inner").merge(items, on="item_id", how="inner")
    with t.stage("features"):
        cols = {c: df[c].to_numpy() for c in ("dwell_s", "age", "price", "country_code", "category_code", LABEL)}
        cols["ts"] = df["ts"].to_numpy().astype("datetime64[ms]").view(np.int64)
        feats = build_features(cols)
        fdf = pd.DataFrame(feats)
    with t.stage("hand-off to PyTorch"), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch: "the given NumPy array is not writable"
        x = torch.from_numpy(fdf[NUMERIC_FEATURES].to_numpy())
        codes = torch.from_numpy(fdf[CODE_FEATURES].to_numpy())
        y = torch.from_numpy(fdf[LABEL].to_numpy())
    return df["event_id"].to_numpy(), {"x": x, "codes": codes, "y": y, **feats}


def _features_table(table: Any, device: Device) -> Any:
    """The feature columns (and ``event_id``) of the joined ``table``, as a Table on ``device``."""
    xp = _xp(device)
    cols = {name: table[name].values() for name in FEATURE_INPUTS if name not in ("event_id", LABEL)}
    cols[LABEL] = table[LABEL].bool_bytes()
    feats = build_features(cols, xp)
    feats["event_id"] = xp.ascontiguousarray(table["event_id"].values())
    return _table_from_arrays(feats, device)


def _single_process_pipeline(data: DataSet, device: Device, t: Timings) -> tuple[Any, dict]:
    """Read -> gpuframe.merge -> features -> tensors in this process (no Dask). Returns the
    features Table and its tensors (checked: zero-copy, every event kept)."""
    import gpuframe

    with t.stage("read Parquet"):
        events = gpuframe.read_parquet(data.events, device=device)
        users, items = dimension_codes(pq.read_table(data.users), pq.read_table(data.items))
        users, items = gpuframe.from_arrow(users, device), gpuframe.from_arrow(items, device)
    with t.stage("join"):
        joined = gpuframe.merge(gpuframe.merge(events, users, on="user_id"), items, on="item_id")
    with t.stage("features"):
        ftable = _features_table(joined, device)
    with t.stage("hand-off to PyTorch"):
        tensors = ftable.to_torch()
    _check_zero_copy(ftable, tensors)
    if ftable.num_rows != data.rows:
        raise AssertionError(f"the inner joins should keep all {data.rows:,} events, got {ftable.num_rows:,} rows")
    return ftable, tensors


# rounds of each timed pipeline (the Dask one, then pandas and gpuframe in one process
# alternating; each one's median round reported): one round each measured 0.37-0.44 s for
# gpuframe and 0.39-0.78 s for pandas in separate runs of the same demo, the first one touching
# fresh memory, and the Dask pipeline 0.9-1.4 s
COMPARE_ROUNDS = 3


def _median_round(rounds: list[Timings]) -> Timings:
    """The round whose read -> tensors total is the median (its stages as they were)."""
    return sorted(rounds, key=lambda r: r.total(ETL_STAGES))[len(rounds) // 2]


def _one_process_rounds(data: DataSet, device: Device, spinner: Optional[Callable[[str], Any]],
                        rounds: int = COMPARE_ROUNDS) -> tuple[Timings, Timings, Any, tuple[Any, dict]]:
    """The pandas pipeline and gpuframe's one-process pipeline, ``rounds`` times each,
    alternating, after one untimed gpuframe run (numba loads its kernels from the cache, or
    compiles them: the "warm up" stage). Every round's results stay alive until the end, as a
    program keeps its results (no round reuses the memory of an earlier one's). Returns
    ``(pandas' median round, gpuframe's median round with its warm-up, gpuframe's features,
    pandas' (event ids, features))``."""
    ts_all: list[Timings] = []
    tp_all: list[Timings] = []
    kept: list[Any] = []
    warm = Timings(spinner=(lambda text: spinner(f"gpuframe, one process: {text}")) if spinner else None)
    with warm.stage("warm up (imports, JIT)"):
        kept.append(_single_process_pipeline(data, device, Timings()))   # stages untimed
    for r in range(rounds):
        tp = Timings(spinner=(lambda text: spinner(f"pandas, round {r + 1}/{rounds}: {text}")) if spinner else None)
        kept.append(_pandas_pipeline(data, tp))
        tp_all.append(tp)
        ts = Timings(spinner=(lambda text: spinner(f"gpuframe, one process, round {r + 1}/{rounds}: {text}"))
                     if spinner else None)
        kept.append(_single_process_pipeline(data, device, ts))
        ts_all.append(ts)
    ts = Timings(stages={**warm.stages, **_median_round(ts_all).stages})
    return _median_round(tp_all), ts, kept[-1][0], kept[-2]


def _compare(gf_table: Any, pd_event_ids: np.ndarray, pd_feats: dict) -> None:
    """gpuframe's features equal pandas' (rows matched by event_id; float tolerance for the means)."""
    from gpuframe.core.memory import to_host

    gf_ids = to_host(gf_table["event_id"].values())
    go = np.argsort(gf_ids, kind="stable")
    po = np.argsort(pd_event_ids, kind="stable")
    if not np.array_equal(gf_ids[go], pd_event_ids[po]):
        raise AssertionError("gpuframe's joined events differ from pandas' (event ids)")
    for name in NUMERIC_FEATURES + CODE_FEATURES + [LABEL]:
        a = to_host(gf_table[name].values())[go]
        b = np.asarray(pd_feats[name])[po]
        if not np.allclose(a, b, rtol=1e-4, atol=1e-4):
            bad = int(np.sum(~np.isclose(a, b, rtol=1e-4, atol=1e-4)))
            raise AssertionError(f"feature {name!r} differs between gpuframe and pandas in {bad} rows")


def run_demo(rows: Optional[int] = None, workers: int = 2, device: Optional[str] = None, protocol: str = "ucxx",
             steps: int = 60, keep: bool = False, tmp_root: Optional[str] = None, console: Any = None) -> dict:
    """Run the demo, printing each stage to ``console`` (a rich Console on stdout by default).

    Parameters
    ----------
    rows : int, optional
        Click events to generate (default :data:`DEFAULT_ROWS`); users are ``rows // 20``, items
        ``rows // 40``.
    workers : int
        Dask worker processes (one thread each).
    device : "cpu" or "cuda", optional
        Where the features and the model live (default: cuda when a GPU is present). The
        distributed join runs on the GPU when cuDF is installed (cuDF partitions); without cuDF
        it runs on the CPU workers, and the demo says so.
    protocol : "ucxx" or "tcp"
        Dask's comms and gpuframe's all-to-all; ucxx falls back to TCP, with a note, when the
        ucxx packages are missing.
    steps : int
        Training steps.
    keep : bool
        Keep the generated Parquet folder instead of deleting it.
    tmp_root : str, optional
        Folder in which the temporary data folder is made (default: the system's temp folder).

    Returns
    -------
    dict
        ``rows, device, protocol, timings, pandas_timings, losses, zero_copy, data_dir``.

    Raises
    ------
    RuntimeError
        ``gpuframe.dask.merge`` is missing (the demo does not fall back to another engine), or a
        CUDA device was asked for without a usable GPU.
    """
    from rich.console import Console
    from rich.table import Table as RichTable

    con = console or Console(highlight=False)
    rows = DEFAULT_ROWS if rows is None else rows
    if isinstance(rows, bool) or not isinstance(rows, int) or rows < 1000:
        raise ValueError(f"rows must be an int >= 1000, got {rows!r}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive int, got {workers!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    dev = as_device(device) if device is not None else (Device("cuda", 0) if gpu_count() > 0 else CPU)
    require_cuda(dev)
    if dev.is_cuda and gpu_count() == 0:
        raise RuntimeError("the demo on --device cuda needs a real GPU (the CUDA simulator is far too slow for it)")
    _require_dask_merge()
    try:
        import torch
    except ImportError:
        raise RuntimeError("the demo trains a PyTorch model: pip install 'gpuframe[torch]'") from None
    if dev.is_cuda and not torch.cuda.is_available():
        raise RuntimeError("--device cuda needs a CUDA build of PyTorch (torch.cuda.is_available() is False)")
    torch.set_num_threads(max(1, min(os.cpu_count() or 1, 8)))

    def say(msg: str) -> None:
        con.print(f"  {msg}", soft_wrap=True, markup=False)

    def note(msg: str) -> None:
        con.print(f"  [bold yellow]note:[/] {msg}", soft_wrap=True)

    def head(msg: str) -> None:
        con.print(f"[bold cyan]>[/] [bold]{msg}[/]")

    use_cudf = False
    if dev.is_cuda:
        try:
            import cudf  # noqa: F401
            import dask_cudf  # noqa: F401  (the "cudf" backend of dask.dataframe)

            use_cudf = True
        except ImportError as e:
            note(f"{e.name or 'cuDF'} is not installed, so the Dask partitions are pandas and the distributed "
                 f"join runs on the CPU workers; the joined table then moves to {dev} for the features and "
                 "the model (pip install 'gpuframe[cudf]' dask-cudf to join on the GPU)")

    spinner = con.status if con.is_terminal else None
    t = Timings(spinner=spinner)
    summary: dict[str, Any] = {"rows": rows, "device": str(dev), "data_dir": None}
    root = tempfile.mkdtemp(prefix="gpuframe-demo-", dir=tmp_root)
    con.print(f"[bold]gpuframe demo[/]: {rows:,} click events, {workers} Dask workers, device {dev}")
    try:
        head("1. generate raw data (Parquet)")
        with t.stage("generate data"):
            data = generate(root, rows, partitions=max(2 * workers, 4))
        say(f"{data.rows:,} events + {data.n_users:,} users + {data.n_items:,} items, "
            f"{data.nbytes / 2**20:.1f} MiB of Parquet in {root}")

        head(f"2. start a local Dask cluster ({workers} workers, {protocol})")
        with contextlib.ExitStack() as stack:
            with t.stage("start cluster"):
                # Dask's own messages (tasks, results) over TCP on the CPU: an idle
                # distributed-ucxx process keeps about 65% of a core busy progressing UCX here,
                # which two workers and the client take from the kernels; the merge's data goes
                # over gpuframe's communicators (UCX with "ucxx") either way
                client, used = stack.enter_context(local_cluster(
                    workers, protocol, note=note, dask_comm="tcp" if dev.kind == "cpu" else None))
            summary["protocol"] = used
            say(f"{len(client.nthreads())} workers, scheduler at {client.scheduler.address}")

            head("3. join events x users x items with gpuframe.dask.merge, build features")
            ftable = _gpuframe_pipeline(data, client, dev, used, use_cudf, t, say)
            if t.stages.get(WARM_UP, 0.0) > SLOW_WARM_UP_S and not dev.is_cuda:
                note(f"the warm-up took {t.stages[WARM_UP]:.0f} s: numba compiled the kernels at their first use "
                     "(its cache was empty). `gpuframe compile --jobs join-inner,partition` once after "
                     "installing compiles them ahead, two processes sharing the work (ci/demo.sh does)")
        say(f"features: {', '.join(NUMERIC_FEATURES)} (standardised float32), {', '.join(CODE_FEATURES)} "
            "(integer codes), label clicked")

        head("4. hand the features to PyTorch through DLPack (no copy)")
        with t.stage("hand-off to PyTorch"):
            tensors = ftable.to_torch()
        summary["zero_copy"] = _check_zero_copy(ftable, tensors)
        nbytes = sum(x.numel() * x.element_size() for x in tensors.values())
        say(f"{len(tensors)} tensors on {tensors[LABEL].device} share the table's memory: data_ptr() equals the "
            f"column buffers' address ({nbytes / 2**20:.1f} MiB, 0 bytes copied)")

        head(f"5. train a small MLP for {steps} steps")
        with t.stage(f"train ({steps} steps)"):
            losses = train(tensors, steps, log=say)
        summary["losses"] = losses
        if not losses[-1] < losses[0]:
            note(f"the loss did not fall ({losses[0]:.4f} -> {losses[-1]:.4f})")

        head(f"6. the same pipeline in pandas, and with gpuframe in this one process (no Dask): {COMPARE_ROUNDS} "
             "rounds each, alternating")
        tp, ts, single, (pd_ids, pd_feats) = _one_process_rounds(data, dev, spinner)
        _compare(ftable, pd_ids, pd_feats)
        say("gpuframe's features equal pandas' (rows matched by event_id)")
        _compare(single, pd_ids, pd_feats)
        say("gpuframe's features (one process) equal pandas' too; its tensors share its memory as well")
        say(f"each pipeline's median round of {COMPARE_ROUNDS} below")

        con.print(_timing_table(t, tp, f"gpuframe ({dev}, {workers} workers, {used})", RichTable, ts))
        pd_etl = tp.total(ETL_STAGES)
        for what, timings in ((f"gpuframe.dask ({workers} workers)", t), ("gpuframe, one process", ts)):
            gf_etl = timings.total(ETL_STAGES)
            ratio = pd_etl / gf_etl if gf_etl > 0 else math.inf
            con.print(f"read -> join -> features -> tensors: {what} {gf_etl:.2f} s, pandas {pd_etl:.2f} s "
                      + (f"({what} takes {1 / ratio:.2f}x pandas' time)" if ratio < 1 else
                         f"({ratio:.2f}x faster than pandas)"), soft_wrap=True)
        summary["timings"] = dict(t.stages)
        summary["pandas_timings"] = dict(tp.stages)
        summary["single_process_timings"] = dict(ts.stages)
    finally:
        if keep:
            summary["data_dir"] = root
            con.print(f"kept the data in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    return summary


ETL_STAGES = ["read Parquet", "join", READ_JOIN_COLLECT, "features", "hand-off to PyTorch"]


def _check_zero_copy(ftable: Any, tensors: dict[str, Any]) -> bool:
    """Every tensor's ``data_ptr`` is its column's buffer address; raise if one was copied."""
    from .core.memory import data_ptr

    for name, tensor in tensors.items():
        ptr = data_ptr(ftable[name].values())
        if tensor.data_ptr() != ptr:
            raise AssertionError(f"column {name!r} was copied on the way to PyTorch "
                                 f"(tensor at 0x{tensor.data_ptr():x}, column at 0x{ptr:x})")
    return True


def _timing_table(t: Timings, tp: Timings, title: str, table_cls: Any, ts: Optional[Timings] = None) -> Any:
    """Seconds per stage: the Dask pipeline, pandas and (``ts``) gpuframe in one process."""
    ts = ts or Timings()
    rt = table_cls(title="time per stage (seconds)", title_justify="left")
    rt.add_column("stage")
    rt.add_column(title, justify="right")
    rt.add_column("gpuframe, one process", justify="right")
    rt.add_column("pandas", justify="right")

    def cell(timings: Timings, name: str) -> str:
        return f"{timings.stages[name]:.2f}" if name in timings.stages else ""

    for name, secs in t.stages.items():
        one = cell(ts, "warm up (imports, JIT)") if name.startswith("warm up") else cell(ts, name)
        rt.add_row(name, f"{secs:.2f}", one, cell(tp, name))
        if name == READ_JOIN_COLLECT:      # in one process: the read, then the joins in its own memory
            for part in ("read Parquet", "join"):
                rt.add_row(f"  (in one process: {part})", "", cell(ts, part), cell(tp, part))
    rt.add_row("[bold]read -> tensors[/]", f"[bold]{t.total(ETL_STAGES):.2f}[/]",
               f"[bold]{ts.total(ETL_STAGES):.2f}[/]" if ts.stages else "", f"[bold]{tp.total(ETL_STAGES):.2f}[/]")
    return rt
