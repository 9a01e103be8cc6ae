"""Run every benchmark module with one configuration and collect the records in one results file.

``gpuframe bench all --rows smoke --runs 1 --out smoke.json`` (or ``python -m gpuframe.benchmarks.all``).
A module that is not present is *skipped* with a note in the JSON (``"skipped"``); a module that
fails (an import error inside it, a wrong answer, a crash) is recorded under ``"errors"``, the
others still run, and the command exits with status 1.
"""
from __future__ import annotations

import dataclasses
import importlib
import sys
import time
import traceback
from typing import Any, Callable, Optional, Sequence

try:  # installed as gpuframe.benchmarks, or run as a script from benchmarks/
    from .common import BENCHMARKS, BenchConfig, arg_parser, config_from_args, write_results
    _PACKAGE: Optional[str] = __package__ or "gpuframe.benchmarks"
except ImportError:  # pragma: no cover - script mode
    from common import BENCHMARKS, BenchConfig, arg_parser, config_from_args, write_results  # type: ignore[no-redef]
    _PACKAGE = None


class BenchmarkMissing(LookupError):
    """The module ``benchmarks/<name>.py`` is not present (not an error inside it)."""


def load(name: str) -> Any:
    """Import benchmark module ``name``; :class:`BenchmarkMissing` if the module itself is absent.

    An ``ImportError`` raised *inside* a present module (a missing dependency) propagates: it is a
    failure of that benchmark, not a skip.
    """
    full = f"{_PACKAGE}.{name}" if _PACKAGE else name
    try:
        mod = importlib.import_module(full)
    except ModuleNotFoundError as e:
        if e.name == full:
            raise BenchmarkMissing(f"module {full} is not present") from None
        raise
    if not callable(getattr(mod, "run", None)):
        raise TypeError(f"benchmark module {full} has no run(cfg) function")
    return mod


def check_records(name: str, records: Any) -> list[dict]:
    """``records`` if it is what ``run(cfg)`` must return (a list of records); ``TypeError`` if not."""
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise TypeError(f"{name}.run(cfg) must return a list of records (dicts), got {type(records).__name__}")
    for r in records:
        missing = [k for k in ("benchmark", "case", "results", "checked") if k not in r]
        if missing:
            raise TypeError(f"{name}.run(cfg) returned a record without {missing}: {sorted(r)}")
    return records


def run_all(cfg: BenchConfig, names: Optional[Sequence[str]] = None, *,
            on_done: Optional[Callable[[str, dict], None]] = None, require: bool = False) -> dict:
    """Run the benchmark modules ``names`` (default: all of :data:`BENCHMARKS`) one after another.

    Parameters
    ----------
    cfg : BenchConfig
        The configuration every module gets; ``cfg.progress`` receives ``"<name>: <status>"`` lines.
    names : sequence of str, optional
        Module names under ``benchmarks/``.
    on_done : callable, optional
        Called as ``on_done(name, outcome)`` after each module, with ``outcome`` one of
        ``{"records": [...], "seconds": s}``, ``{"skipped": reason}``, ``{"error": text}``.
    require : bool
        When True a missing module is an error instead of a skip (a benchmark asked for by name).

    Returns
    -------
    dict
        ``{"records": [...], "skipped": [{"benchmark", "reason"}], "errors": [{"benchmark", "error",
        "traceback"}], "seconds": {name: wall seconds}}``.
    """
    names = list(BENCHMARKS if names is None else names)
    unknown = [n for n in names if not isinstance(n, str) or not n.isidentifier()]
    if unknown:
        raise ValueError(f"benchmark names must be module names like {BENCHMARKS}, got {unknown!r}")
    out: dict[str, Any] = {"records": [], "skipped": [], "errors": [], "seconds": {}}
    for name in names:
        sub = dataclasses.replace(cfg, progress=(lambda m, _n=name: cfg.say(f"{_n}: {m}")))
        sub.say("starting")
        t0 = time.perf_counter()
        outcome: dict[str, Any]
        try:
            mod = load(name)
            records = check_records(name, mod.run(sub))
        except BenchmarkMissing as e:
            if require:
                outcome = {"error": f"benchmark {name!r} is not available: {e}"}
                out["errors"].append({"benchmark": name, "error": outcome["error"], "traceback": ""})
            else:
                outcome = {"skipped": str(e)}
                out["skipped"].append({"benchmark": name, "reason": str(e)})
        except KeyboardInterrupt:
            raise
        except Exception as e:  # noqa: BLE001 - one failing benchmark must not hide the others' results
            msg = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}".rstrip(": ")
            outcome = {"error": msg}
            out["errors"].append({"benchmark": name, "error": msg, "traceback": traceback.format_exc()})
        else:
            outcome = {"records": records}
            out["records"].extend(records)
        outcome["seconds"] = out["seconds"][name] = round(time.perf_counter() - t0, 3)
        if on_done is not None:
            on_done(name, outcome)
    return out


def outcome_line(name: str, outcome: dict) -> str:
    """One line describing what happened to benchmark ``name``."""
    secs = outcome.get("seconds", 0.0)
    if "records" in outcome:
        return f"done    {name}: {len(outcome['records'])} case(s) in {secs:.1f} s"
    if "skipped" in outcome:
        return f"skipped {name}: {outcome['skipped']}"
    return f"FAILED  {name} after {secs:.1f} s: {outcome.get('error')}"


def run(cfg: BenchConfig) -> list[dict]:
    """Every benchmark's records (the common ``run`` contract); raises if any benchmark failed."""
    out = run_all(cfg)
    if out["errors"]:
        raise RuntimeError("; ".join(f"{e['benchmark']}: {e['error']}" for e in out["errors"]))
    return out["records"]


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = arg_parser("Run every gpuframe benchmark with one configuration.", default_rows="smoke").parse_args(argv)
    cfg = config_from_args(args)
    out = run_all(cfg, on_done=lambda n, o: print(outcome_line(n, o), file=sys.stderr))
    write_results(out["records"], cfg.out, skipped=out["skipped"], errors=out["errors"], seconds=out["seconds"])
    if out["errors"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
