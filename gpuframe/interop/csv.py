"""CSV files, read and written by ``pyarrow.csv``."""
from __future__ import annotations

import os
from typing import Any, Union

from ..core.device import CPU, DeviceLike
from ..core.table import Table
from .arrow_import import from_arrow

__all__ = ["read_csv", "write_csv"]

PathLike = Union[str, "os.PathLike[str]"]


def read_csv(path: PathLike, device: DeviceLike = None, *, validate: bool = True, **kwargs: Any) -> Table:
    """Read a CSV file into a :class:`Table` with ``pyarrow.csv.read_csv``.

    Parameters
    ----------
    path : str or os.PathLike
        The file (compressed files are read by their extension, as pyarrow does).
    device : "cpu", "cuda", "cuda:N" or Device, optional
        Where the result lives (default: the CPU); a CUDA table is a copy of the host table.
    validate : bool, default True
        Check the contents of every column (as :func:`gpuframe.from_arrow`).
    **kwargs
        ``read_options``, ``parse_options`` and ``convert_options`` of ``pyarrow.csv.read_csv``.
        Without ``convert_options`` an empty unquoted string field is a null (what
        :meth:`Table.to_csv` writes for one), a quoted ``""`` the empty string.

    Raises
    ------
    FileNotFoundError
        No such file.
    TypeError
        ``path`` is not a path, or an unknown keyword argument.
    """
    import pyarrow.csv as pcsv

    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    allowed = {"read_options", "parse_options", "convert_options"}
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
        raise TypeError(f"read_csv got unknown keyword arguments {unknown}; it takes {sorted(allowed)}")
    if not os.path.exists(path):
        raise FileNotFoundError(f"read_csv: no such file: {os.fspath(path)!r}")
    kwargs.setdefault("convert_options", pcsv.ConvertOptions(strings_can_be_null=True, quoted_strings_can_be_null=False))
    return from_arrow(pcsv.read_csv(path, **kwargs), device=device, validate=validate)


def write_csv(table: Table, path: PathLike, **kwargs: Any) -> None:
    """Write ``table`` as CSV with ``pyarrow.csv.write_csv`` (``write_options`` passed on); a CUDA
    table is copied to the host first."""
    import pyarrow.csv as pcsv

    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    unknown = sorted(set(kwargs) - {"write_options"})
    if unknown:
        raise TypeError(f"to_csv got unknown keyword arguments {unknown}; it takes ['write_options']")
    pcsv.write_csv(table.to(CPU).to_arrow(), path, **kwargs)
