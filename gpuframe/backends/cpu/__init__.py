"""CPU backend: numba ``njit`` drivers over host numpy arrays, one module per operation family
(``hashing``, ``partition``, ``gather``, ``join``). Nothing is registered on import: the registry
(:data:`gpuframe.backends.registry.LAZY`) names each implementation and imports its module when
the operation first runs."""
