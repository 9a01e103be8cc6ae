"""Make the gpuframe checkout importable without pip: ``ci/gpu_check.sh``'s fallback when
``pip install -e .`` cannot run (no setuptools, an externally managed Python, no network).

``python ci/gpuframe_path.py ROOT [--fallback-dir DIR]`` installs an import hook that maps the
packages of ``[tool.setuptools] package-dir`` in ROOT/pyproject.toml (``gpuframe``,
``gpuframe.kernels`` -> ``cuda_kernels/``, ``gpuframe.benchmarks`` -> ``benchmarks/``,
``gpuframe.comm`` -> ``comm/``) onto the checkout, as an editable install does:

* a ``gpuframe-checkout.pth`` file in the first writable site-packages folder (the user's, then
  the interpreter's): every later ``python`` finds gpuframe; it prints ``pth FILE``;
* otherwise a ``sitecustomize.py`` in DIR (default ROOT/gpu-results/.pypath) that does the same
  when DIR is on ``PYTHONPATH``; it prints ``pythonpath DIR`` and the caller exports it.

The caller checks the result by importing gpuframe in a new process.
"""
from __future__ import annotations

import argparse
import importlib.abc
import importlib.util
import os
import re
import site
import sys
from pathlib import Path
from typing import Optional, Sequence


def package_dirs(root: str) -> dict[str, str]:
    """``{package: absolute folder}`` from ``[tool.setuptools] package-dir`` of ROOT/pyproject.toml."""
    text = (Path(root) / "pyproject.toml").read_text()
    try:
        import tomllib

        mapping = tomllib.loads(text)["tool"]["setuptools"]["package-dir"]
    except ImportError:  # Python 3.10: the one inline table is simple enough to read
        m = re.search(r"^package-dir\s*=\s*\{(.*?)\}\s*$", text, re.M)
        if not m:
            raise ValueError("pyproject.toml has no [tool.setuptools] package-dir") from None
        mapping = dict(re.findall(r'"([\w.]+)"\s*=\s*"([\w./-]+)"', m.group(1)))
    return {pkg: str((Path(root) / folder).resolve()) for pkg, folder in mapping.items()}


class CheckoutFinder(importlib.abc.MetaPathFinder):
    """Finds the mapped packages in the checkout (their subpackages then follow ``__path__``)."""

    def __init__(self, mapping: dict[str, str]) -> None:
        self.mapping = mapping

    def find_spec(self, fullname, path=None, target=None):  # type: ignore[override]
        folder = self.mapping.get(fullname)
        if folder is None:
            return None
        init = os.path.join(folder, "__init__.py")
        if not os.path.exists(init):
            return None
        return importlib.util.spec_from_file_location(fullname, init, submodule_search_locations=[folder])


def install(root: str) -> None:
    """Put a :class:`CheckoutFinder` for ``root`` first on ``sys.meta_path`` (once)."""
    if any(isinstance(f, CheckoutFinder) or type(f).__name__ == "CheckoutFinder" for f in sys.meta_path):
        return
    sys.meta_path.insert(0, CheckoutFinder(package_dirs(root)))


def hook_code(root: str) -> str:
    """One line of Python that loads this file from the checkout and installs the finder."""
    here = str(Path(__file__).resolve())
    return (f"import importlib.util as _u; _s = _u.spec_from_file_location('_gpuframe_checkout', {here!r}); "
            f"_m = _u.module_from_spec(_s); _s.loader.exec_module(_m); _m.install({str(Path(root).resolve())!r})")


def _writable_site_dirs() -> list[str]:
    dirs = []
    if site.ENABLE_USER_SITE:
        dirs.append(site.getusersitepackages())
    dirs += list(site.getsitepackages())
    return dirs


def write_pth(root: str, dirs: Optional[Sequence[str]] = None) -> Optional[str]:
    """Write the hook as a ``.pth`` file into the first writable folder of ``dirs`` (site-packages
    by default); the path written, or None."""
    for d in (dirs if dirs is not None else _writable_site_dirs()):
        try:
            os.makedirs(d, exist_ok=True)
            path = os.path.join(d, "gpuframe-checkout.pth")
            with open(path, "w") as f:
                f.write(hook_code(root) + "\n")
            return path
        except OSError:
            continue
    return None


def write_sitecustomize(root: str, folder: str) -> str:
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "sitecustomize.py")
    with open(path, "w") as f:
        f.write("# written by ci/gpuframe_path.py: gpuframe from the checkout, without pip\n" + hook_code(root) + "\n")
    return folder


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("root")
    p.add_argument("--fallback-dir", default=None)
    p.add_argument("--no-pth", action="store_true", help="skip the .pth file (write the sitecustomize only)")
    args = p.parse_args(argv)
    package_dirs(args.root)  # fails loudly on a checkout without the mapping
    if not args.no_pth:
        path = write_pth(args.root)
        if path:
            print(f"pth {path}")
            return 0
    folder = write_sitecustomize(args.root, args.fallback_dir or os.path.join(args.root, "gpu-results", ".pypath"))
    print(f"pythonpath {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
