"""Arrow interop: pyarrow objects and the Arrow PyCapsule protocol (C data, C stream and C device
interface), in both directions.

This is the public module; the work is done in

- :mod:`gpuframe.interop.arrow_import`: Arrow -> gpuframe (:func:`from_arrow`, and the import of
  CPU and CUDA ``ArrowDeviceArray`` capsules);
- :mod:`gpuframe.interop.arrow_export`: gpuframe -> Arrow (``Column``/``Table``
  ``__arrow_c_schema__``, ``__arrow_c_array__``, ``__arrow_c_stream__``,
  ``__arrow_c_device_array__``, without copying where the memory allows);
- :mod:`gpuframe.interop.arrow_c_abi`: the C structs (``ArrowSchema``, ``ArrowArray``,
  ``ArrowDeviceArray``, ``ArrowArrayStream``) and the capsules that carry them;
- :mod:`gpuframe.interop.arrow_cudasim`: what the CUDA simulator needs instead of device memory.
"""
from __future__ import annotations

from .arrow_export import (column_c_array, column_c_device_array, column_c_schema, column_c_stream,
                           format_string, table_c_array, table_c_device_array, table_c_stream, to_arrow)
from .arrow_import import from_arrow, import_device_capsules, import_device_columns

__all__ = [
    "column_c_array", "column_c_device_array", "column_c_schema", "column_c_stream",
    "format_string", "from_arrow", "table_c_array", "table_c_device_array", "table_c_stream",
    "to_arrow",
]
