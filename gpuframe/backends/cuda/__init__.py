"""CUDA backend: launchers for the ``numba.cuda`` kernels in ``gpuframe.kernels``, one module per
operation family (``hashing``, ``partition``, ``gather``, ``join``). On a real GPU memory comes
from CuPy; under ``NUMBA_ENABLE_CUDASIM=1`` the same launchers run on numba's simulator. Nothing
is registered on import (see :data:`gpuframe.backends.registry.LAZY`), and nothing here is
imported unless CUDA inputs reach an operation."""
