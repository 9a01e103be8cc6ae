"""cuDF interop through the Arrow C device interface (cuDF is optional and never required).

Both directions hand over device memory without a round trip through the host: cuDF's
``pylibcudf.Table`` exports an ``ArrowDeviceArray`` that :func:`gpuframe.from_arrow` wraps in
place, and ``pylibcudf.Table.from_arrow`` reads gpuframe's ``__arrow_c_device_array__``.
"""
from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

from ..errors import PerformanceWarning
from ..core.device import DeviceLike
from ..core.table import Table

if TYPE_CHECKING:  # pragma: no cover
    import cudf

__all__ = ["CUDF_INSTALL", "from_cudf", "to_cudf"]

CUDF_INSTALL = "pip install 'gpuframe[cudf]'"


def _cudf() -> tuple[Any, Any]:
    try:
        import cudf
        import pylibcudf
    except ImportError as exc:
        raise ImportError(f"cuDF interop needs cuDF on a CUDA machine; install it with: {CUDF_INSTALL}") from exc
    except Exception as exc:  # cuDF raises other errors when no GPU/driver is usable
        raise ImportError(f"cuDF is installed but could not be imported ({type(exc).__name__}: {exc}); "
                          f"it needs a CUDA GPU. Install it with: {CUDF_INSTALL}") from exc
    return cudf, pylibcudf


def from_cudf(df: "cudf.DataFrame", device: DeviceLike = None) -> Table:
    """A :class:`Table` sharing a cuDF DataFrame's device memory (the index is dropped).

    Parameters
    ----------
    df : cudf.DataFrame
    device : "cpu", "cuda", "cuda:N" or Device, optional
        Where the result lives (default: the DataFrame's GPU, without a copy).

    Raises
    ------
    ImportError
        When cuDF is not installed (with the install command).
    TypeError
        When ``df`` is not a cuDF DataFrame, or has a column type gpuframe does not store.
    """
    cudf, _ = _cudf()

    if not isinstance(df, cudf.DataFrame):
        raise TypeError(f"from_cudf expects a cudf.DataFrame, got {type(df).__name__}")
    names = [str(n) for n in df.columns]
    if hasattr(df, "to_pylibcudf"):
        from .arrow_import import import_device_columns

        plc_table, _meta = df.to_pylibcudf()
        # pylibcudf names no columns in its export: the names come from the DataFrame
        columns, num_rows = import_device_columns(*plc_table.__arrow_c_device_array__())
        tbl = Table([(n, c) for n, (_, c) in zip(names, columns)], num_rows)
    else:  # older cuDF: no device export, go through host Arrow
        warnings.warn("this cuDF version has no to_pylibcudf(): from_cudf copies through the host",
                      PerformanceWarning, stacklevel=2)
        from .arrow_import import from_arrow

        tbl = from_arrow(df.to_arrow(preserve_index=False), device or "cuda")
    return tbl if device is None else tbl.to(device)


def to_cudf(table: Table) -> "cudf.DataFrame":
    """A cuDF DataFrame built from ``table`` through the Arrow C device interface (``Table.to_cudf``).

    Raises
    ------
    ImportError
        When cuDF is not installed (with the install command).
    """
    cudf, plc = _cudf()
    plc_table = plc.Table.from_arrow(table)
    return cudf.DataFrame.from_pylibcudf(plc_table, metadata={"columns": table.column_names})
