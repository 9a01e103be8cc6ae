"""Helpers for the distributed tests: run ranks in threads, compare tables as multisets."""
from __future__ import annotations

import threading
from typing import Any, Callable, Sequence

import pyarrow as pa
import pytest

BACKENDS = ["ucx", "tcp"]


def require(backend: str) -> str:
    """Skip (with the install command) when ``backend`` cannot run here: ucx needs ucxx."""
    if backend == "ucx":
        from gpuframe.comm.ucx import UCX_INSTALL_HINT, ucx_available

        if not ucx_available():
            pytest.skip(f"the ucx communicator needs ucxx: {UCX_INSTALL_HINT}")
    return backend


def mesh_fixture(configs: Sequence[tuple[str, int]]) -> Any:
    """A module-scoped ``mesh`` fixture: connected communicators of each ``(backend, ranks)``
    config in turn (threads of this process), closed at the end of the module."""
    @pytest.fixture(scope="module", params=list(configs), ids=[f"{b}-{n}ranks" for b, n in configs])
    def mesh(request):
        from gpuframe.comm import local_mesh

        backend, size = request.param
        comms = local_mesh(size, require(backend), timeout=60)
        yield comms
        for c in comms:
            c.close()

    return mesh


def run_ranks(fn: Callable[[int], Any], size: int, timeout: float = 120.0) -> list[Any]:
    """``[fn(0), ..., fn(size - 1)]`` run concurrently, one thread per rank; re-raises the first error."""
    out: list[Any] = [None] * size
    errors: list[BaseException] = []

    def target(r: int) -> None:
        try:
            out[r] = fn(r)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=target, args=(r,), daemon=True) for r in range(size)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    if any(t.is_alive() for t in threads):
        raise TimeoutError(f"a rank did not finish within {timeout} s (a hang)")
    if errors:
        raise errors[0]
    return out


def plain(arr: pa.ChunkedArray | pa.Array) -> pa.Array:
    """Dictionary columns decoded, chunks combined (to compare values whatever the encoding)."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks() if arr.num_chunks else pa.array([], type=arr.type)
    if pa.types.is_dictionary(arr.type):
        arr = arr.cast(arr.type.value_type)
    return arr


def row_multiset(tbl: pa.Table) -> list[tuple]:
    """The rows of a table as a sorted list (NaN-safe, None-safe) for order-free comparison."""
    cols = [plain(tbl.column(i)).to_pylist() for i in range(tbl.num_columns)]
    rows = list(zip(*cols)) if cols else []

    def key(row: tuple) -> tuple:
        return tuple((v is None, _nan_safe(v)) for v in row)

    return sorted(rows, key=key)


def _nan_safe(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, float) and v != v:
        return "nan"
    return str(v) if not isinstance(v, (int, float)) else (0, v)


def same_rows(a: pa.Table, b: pa.Table) -> bool:
    ra, rb = row_multiset(a), row_multiset(b)
    if len(ra) != len(rb):
        return False
    return all(_row_eq(x, y) for x, y in zip(ra, rb))


def _row_eq(x: Sequence[Any], y: Sequence[Any]) -> bool:
    for u, v in zip(x, y):
        if isinstance(u, float) and isinstance(v, float) and u != u and v != v:
            continue
        if u != v:
            return False
    return True


def concat(tables: Sequence[pa.Table]) -> pa.Table:
    return pa.concat_tables([t.replace_schema_metadata(None) for t in tables], promote_options="none")
