"""Exception and warning types raised across gpuframe's layers.

A leaf module: it imports nothing from gpuframe, so the data model, the operations, the backends
and the front ends can all raise these without importing each other. They are re-exported where
they were first defined (``gpuframe.FallbackError``, ``gpuframe.backends.registry.FallbackError``,
``gpuframe.core.device.NoGPUError``, ``gpuframe.core.validate.InvalidColumnError``). The
communication layer has its own types in ``gpuframe.comm.errors``.
"""
from __future__ import annotations

__all__ = ["FallbackError", "InvalidColumnError", "NoGPUError", "PerformanceWarning"]


class PerformanceWarning(UserWarning):
    """An operation ran on a slower path than the inputs asked for (a CUDA->CPU fallback)."""


class FallbackError(RuntimeError):
    """A fallback happened while ``raise_on_fallback`` was set."""


class NoGPUError(RuntimeError):
    """Raised when a CUDA device is requested but no GPU (and no simulator) is present."""


class InvalidColumnError(ValueError):
    """A column's layout or contents would make a kernel read outside its buffers.

    Attributes
    ----------
    column : str
        The column's name (``"<column>"`` when the caller gave none).
    problem : str
        What is wrong, with the expected and the actual value.
    """

    def __init__(self, column: str, problem: str) -> None:
        self.column = column
        self.problem = problem
        super().__init__(f"column {column!r}: {problem}")
