"""gpuframe's benchmark suite (installed as ``gpuframe.benchmarks``; run by ``gpuframe bench``)."""
