"""The one return type of every kernel factory (``cuda_kernels()`` in each kernel module)."""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any


class KernelSet(Mapping):
    """A frozen, named set of compiled kernels: ``ks.build`` and ``ks["build"]`` are the same
    kernel, iteration gives the names (a read-only mapping)."""

    __slots__ = ("_kernels",)

    def __init__(self, **kernels: Any) -> None:
        object.__setattr__(self, "_kernels", dict(kernels))

    def __getattr__(self, name: str) -> Any:
        try:
            return self._kernels[name]
        except KeyError:
            raise AttributeError(f"no kernel named {name!r}; kernels: {sorted(self._kernels)}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("a KernelSet is read-only")

    def __getitem__(self, name: str) -> Any:
        return self._kernels[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._kernels)

    def __len__(self) -> int:
        return len(self._kernels)

    def __repr__(self) -> str:
        return f"KernelSet({', '.join(self._kernels)})"
