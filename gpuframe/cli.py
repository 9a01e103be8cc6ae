"""The ``gpuframe`` command: ``info``, ``bench`` and ``demo``.

Errors print one line, ``gpuframe: error: ...``, and exit with 2 for a usage error or 1 for a
failure; ``--debug`` prints the traceback as well. Progress goes to stderr (a live bar on a
terminal, plain timestamped lines otherwise), results to stdout.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import textwrap
import time
import traceback
from typing import Any, Callable, NoReturn, Optional, Sequence

PROG = "gpuframe"

DESCRIPTION = """\
gpuframe: CUDA-accelerated Arrow tables (hash join, hash partition, a UCX shuffle for Dask,
zero-copy hand-off to PyTorch). The same code runs on a CUDA GPU or, without one, on the CPU."""

EPILOG = """\
examples:
  gpuframe info                                  versions, backends, devices, transports
  gpuframe bench join --rows 10M --runs 5        hash join against pandas, Polars, DuckDB, pyarrow
  gpuframe bench all --rows smoke --runs 1 --out results.json
  gpuframe bench report results.json --out-dir report/
  gpuframe demo                                  Parquet -> Dask/UCX join -> features -> PyTorch
  gpuframe compile                               compile the CPU kernels now, not at first use
  gpuframe --debug bench shuffle --workers 4     show the traceback if something fails

Run 'gpuframe <command> --help' for the options of a command."""

BENCH_EPILOG = """\
examples:
  gpuframe bench join --rows 10M --peers polars,duckdb
  gpuframe bench partition --device cuda --runs 3 --out partition.json
  gpuframe bench all --rows smoke --runs 1 --out smoke.json && gpuframe bench report smoke.json

sizes: --rows takes a count (20000, 2.5M, 1G) or a named size: {sizes}."""

# CLI name -> module under gpuframe.benchmarks
BENCH_MODULES = {"join": "join", "partition": "partition", "shuffle": "shuffle", "dask-merge": "dask_merge",
                 "dask-ops": "dask_ops",
                 "dlpack": "dlpack", "groupby": "groupby", "setops": "setops", "sort": "sort"}
BENCH_HELP = {
    "join": "hash join of two tables against the peers (cases in benchmarks/join.py)",
    "partition": "hash partition of a table into N parts against the peers",
    "shuffle": "distributed all-to-all shuffle on a local Dask cluster (UCX or TCP)",
    "dask-merge": "gpuframe.dask.merge against dask.dataframe.merge on a local cluster",
    "dask-ops": "gpuframe.dask.groupby_agg and sort against Dask's groupby-agg and sort_values",
    "dlpack": "zero-copy Table -> PyTorch (DLPack) against pandas/pyarrow -> numpy -> torch",
    "groupby": "db-benchmark groupby questions (G1 data) against DuckDB and Polars",
    "setops": "unique/union/intersect/difference against DuckDB and Polars",
    "sort": "stable sort by one or two keys (int64, strings) against Polars and DuckDB",
    "all": "every benchmark with one configuration (missing ones are skipped with a note)",
}


class CLIError(Exception):
    """A failure the user can act on: printed as one line, exit status 1."""

    exit_code = 1


class UsageError(CLIError):
    """Bad command-line usage: printed as one line, exit status 2."""

    exit_code = 2


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (raised, then printed by :func:`main`)."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see '{self.prog} --help')")


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Wraps prose paragraphs to the terminal; keeps indented example lines as written."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=32, width=min(shutil.get_terminal_size((100, 24)).columns, 100))

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        out = []
        for para in text.split("\n\n"):
            lines = para.splitlines()
            if any(ln.startswith(" ") for ln in lines) or len(lines) > 1 and lines[0].endswith(":"):
                out.append("\n".join(indent + ln for ln in lines))
            else:
                out.append(textwrap.fill(" ".join(ln.strip() for ln in lines), width, initial_indent=indent,
                                         subsequent_indent=indent, break_on_hyphens=False))
        return "\n\n".join(out)


# ---------------------------------------------------------------------------------------- types
def _rows(text: str) -> int:
    from .benchmarks.common import parse_rows

    try:
        return parse_rows(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _demo_rows(text: str) -> int:
    rows = _rows(text)
    if rows < 1000:
        raise argparse.ArgumentTypeError(f"the demo needs at least 1000 rows, got {text!r}")
    return rows


def _peers(text: str) -> list[str]:
    from .benchmarks.common import parse_peers

    try:
        return parse_peers(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _positive(what: str, minimum: int = 1) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{what} must be >= {minimum}, got {value}")
        return value

    parse.__name__ = what
    return parse


# ---------------------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    from .benchmarks.common import DEFAULT_PEERS, KNOWN_PEERS, SIZES

    common = _Parser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="print the full traceback when something fails")

    p = _Parser(prog=PROG, description=DESCRIPTION, epilog=EPILOG, formatter_class=_Formatter, parents=[common])
    p.add_argument("--version", action="version", version=f"gpuframe {__version__}")
    sub = p.add_subparsers(dest="command", metavar="<command>", title="commands", parser_class=_Parser)

    info = sub.add_parser("info", parents=[common], formatter_class=_Formatter,
                          help="versions, backends, devices and transports",
                          description="Show gpuframe's version, its dependencies, the backends and the "
                                      "operations each implements, the devices (CPU, GPUs) and the "
                                      "transports (UCX, TCP) available here.")
    info.add_argument("--json", action="store_true", help="print the information as JSON")
    info.set_defaults(func=_cmd_info)

    sizes = ", ".join(f"{k}={v:,}" for k, v in SIZES.items())
    bench = sub.add_parser("bench", parents=[common], formatter_class=_Formatter,
                           help="benchmarks against pandas, Polars, DuckDB, pyarrow (and cuDF, Dask)",
                           description="Run a benchmark (gpuframe and its peers side by side on the same "
                                       "data, every answer checked, medians over --runs), or render a "
                                       "results file as a report.",
                           epilog=BENCH_EPILOG.format(sizes=sizes))
    bsub = bench.add_subparsers(dest="benchmark", metavar="<benchmark>", title="benchmarks", parser_class=_Parser)

    opts = _Parser(add_help=False)
    g = opts.add_argument_group("benchmark options")
    g.add_argument("--rows", type=_rows, default=SIZES["small"], metavar="N",
                   help=f"rows of the main table: a count (10M, 2.5k) or one of {', '.join(SIZES)} (default: small)")
    g.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where gpuframe runs (default: cpu)")
    g.add_argument("--peers", type=_peers, default=list(DEFAULT_PEERS), metavar="LIST",
                   help=f"comma-separated peers from {','.join(KNOWN_PEERS)}, or none (default: {','.join(DEFAULT_PEERS)})")
    g.add_argument("--workers", type=_positive("--workers"), default=2, metavar="N",
                   help="Dask workers for the distributed benchmarks (default: 2)")
    g.add_argument("--runs", type=_positive("--runs"), default=5, metavar="N",
                   help="timed runs per engine; the median is reported (default: 5)")
    g.add_argument("--warmup", type=_positive("--warmup", 0), default=1, metavar="N",
                   help="untimed runs first, to compile and warm caches (default: 1)")
    g.add_argument("--out", default=None, metavar="FILE",
                   help="write the results as JSON (render them with 'gpuframe bench report FILE')")

    for name in [*BENCH_MODULES, "all"]:
        b = bsub.add_parser(name, parents=[common, opts], formatter_class=_Formatter, help=BENCH_HELP[name],
                            description=BENCH_HELP[name][0].upper() + BENCH_HELP[name][1:] + ".")
        b.set_defaults(func=_cmd_bench)
    rep = bsub.add_parser("report", parents=[common], formatter_class=_Formatter,
                          help="render a results JSON as a Markdown table and a PNG chart",
                          description="Render a results file as report.md (a table with the speed-up "
                                      "against the best peer and the target) and speedup.png (the "
                                      "speed-up against each peer, per case).")
    rep.add_argument("results", metavar="RESULTS.json", help="a file written by 'gpuframe bench ... --out'")
    rep.add_argument("--out-dir", default=None, metavar="DIR",
                     help="where report.md and speedup.png go (default: the folder of RESULTS.json)")
    rep.set_defaults(func=_cmd_report)

    demo = sub.add_parser("demo", parents=[common], formatter_class=_Formatter,
                          help="the whole pipeline in one command: Parquet -> Dask join -> PyTorch",
                          description="Generate click events, users and items as Parquet, join them on a "
                                      "local Dask cluster with gpuframe.dask.merge over UCX, build features, "
                                      "hand them to PyTorch through DLPack without a copy, train a small "
                                      "model, and compare each stage's time with pandas.")
    demo.add_argument("--rows", type=_demo_rows, default=None, metavar="N",
                      help="click events to generate (default: 2M; users and items scale with it)")
    demo.add_argument("--workers", type=_positive("--workers"), default=2, metavar="N",
                      help="Dask workers (default: 2)")
    demo.add_argument("--device", choices=["cpu", "cuda"], default=None,
                      help="where gpuframe runs (default: cuda when a GPU is present, else cpu)")
    demo.add_argument("--protocol", choices=["ucxx", "tcp"], default="ucxx",
                      help="Dask comms; ucxx falls back to tcp, with a note, when ucxx is not installed")
    demo.add_argument("--steps", type=_positive("--steps"), default=60, metavar="N",
                      help="training steps (default: 60)")
    demo.add_argument("--keep", action="store_true", help="keep the generated Parquet folder (its path is printed)")
    demo.set_defaults(func=_cmd_demo)

    comp = sub.add_parser("compile", parents=[common], formatter_class=_Formatter,
                          help="compile the CPU kernels now (run once after installing)",
                          description="Compile every CPU kernel the operations reach into numba's on-disk "
                                      "cache, in several processes at once, so that no first call waits "
                                      "for the compiler (about 4 minutes on 2 cores; seconds when the "
                                      "cache is already warm).")
    comp.add_argument("--processes", type=_positive("--processes"), default=None, metavar="N",
                      help="compiling processes (default: one per core)")
    comp.add_argument("--jobs", type=_job_names, default=None, metavar="LIST",
                      help="comma-separated jobs, from " + ",".join(_JOB_NAMES) + " (default: all)")
    comp.set_defaults(func=_cmd_compile)

    bench.set_defaults(func=lambda a: _missing_sub(bench, "a benchmark or 'report'"))
    p.set_defaults(func=lambda a: _missing_sub(p, "a command: info, bench, demo or compile"))
    return p


_JOB_NAMES = ("join-inner", "partition", "join-outer", "join-semi", "join-keys", "partition-types", "groupby",
              "sort", "setops")   # gpuframe.precompile.JOBS


def _job_names(text: str) -> list[str]:
    names = [t.strip() for t in text.split(",") if t.strip()]
    bad = [n for n in names if n not in _JOB_NAMES]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"expected job names from {','.join(_JOB_NAMES)}, got {text!r}")
    return names


def _missing_sub(parser: argparse.ArgumentParser, what: str) -> NoReturn:
    raise UsageError(f"choose {what} (see '{parser.prog} --help')")


# ---------------------------------------------------------------------------------------- output
def _stderr_console() -> Any:
    from rich.console import Console

    return Console(stderr=True, highlight=False)


class Status:
    """Live status of a long run on stderr: a rich bar on a terminal, timestamped lines otherwise."""

    def __init__(self, title: str, total: Optional[int] = None, console: Any = None) -> None:
        self.console = console or _stderr_console()
        self.title = title
        self.total = total
        self.t0 = time.perf_counter()
        self._progress: Any = None
        self._task: Any = None

    def __enter__(self) -> "Status":
        if self.console.is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

            cols: list[Any] = [SpinnerColumn(), TextColumn("[bold]{task.fields[title]}")]
            if self.total:
                cols += [BarColumn(bar_width=20), MofNCompleteColumn()]
            cols += [TimeElapsedColumn(), TextColumn("{task.description}")]
            self._progress = Progress(*cols, console=self.console, transient=True)
            self._progress.__enter__()
            self._task = self._progress.add_task("starting", total=self.total, title=self.title)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)

    def update(self, msg: str) -> None:
        """Show ``msg`` as the current step."""
        if self._progress is not None:
            self._progress.update(self._task, description=msg)
        else:
            self.console.print(f"[{time.perf_counter() - self.t0:7.1f}s] {self.title}: {msg}", markup=False,
                               soft_wrap=True)

    def advance(self) -> None:
        if self._progress is not None:
            self._progress.advance(self._task)

    def log(self, msg: str) -> None:
        """A line that stays (printed above the live bar)."""
        self.console.print(msg, markup=False, soft_wrap=True)


# ---------------------------------------------------------------------------------------- commands
def _cmd_info(args: argparse.Namespace) -> int:
    from .sysinfo import format_info, info

    data = info()
    if args.json:
        print(json.dumps(data, indent=2, default=str))
    else:
        print(format_info(data))
    return 0


def _bench_config(args: argparse.Namespace) -> tuple[Any, list[str]]:
    from .benchmarks.common import BenchConfig, peer_available

    notes = []
    peers = []
    for peer in args.peers:
        if peer_available(peer):
            peers.append(peer)
        else:
            notes.append(f"peer {peer!r} is not installed: skipped")
    if args.device == "cuda":
        from .core.device import CUDA_INSTALL_HINT, cuda_available

        if not cuda_available():
            raise CLIError(f"--device cuda: no CUDA GPU was found; {CUDA_INSTALL_HINT}")
    cfg = BenchConfig(rows=args.rows, runs=args.runs, warmup=args.warmup, device=args.device, peers=peers,
                      workers=args.workers, out=args.out)
    return cfg, notes


def _cmd_bench(args: argparse.Namespace) -> int:
    from .benchmarks import all as bench_all
    from .benchmarks.common import format_rows, write_results
    from .benchmarks.report import markdown_table

    cfg, notes = _bench_config(args)
    single = args.benchmark != "all"
    names = [BENCH_MODULES[args.benchmark]] if single else list(bench_all.BENCHMARKS)
    status = Status(f"bench {args.benchmark} ({format_rows(cfg.rows)} rows)", total=None if single else len(names))
    for n in notes:
        status.log(f"note: {n}")
    with status:
        cfg.progress = status.update
        if single:
            # one benchmark: its exception propagates, so --debug shows where it came from
            try:
                mod = bench_all.load(names[0])
            except bench_all.BenchmarkMissing as e:
                raise CLIError(f"benchmark {args.benchmark!r} is not available: {e}") from None
            t0 = time.perf_counter()
            records = bench_all.check_records(names[0], mod.run(cfg))
            secs = round(time.perf_counter() - t0, 3)
            outcome = {"records": records, "skipped": [], "errors": [], "seconds": {names[0]: secs}}
            status.log(bench_all.outcome_line(names[0], {"records": records, "seconds": secs}))
        else:
            outcome = bench_all.run_all(cfg, names, on_done=lambda n, o: (status.advance(),
                                                                          status.log(bench_all.outcome_line(n, o))))
    doc = write_results(outcome["records"], args.out, command=" ".join([PROG, *args.argv]),
                        skipped=outcome["skipped"], errors=outcome["errors"], notes=notes,
                        seconds=outcome["seconds"])
    if doc["records"]:
        print(markdown_table(doc["records"]))
    if args.out:
        status.log(f"results written to {args.out}; render them with: gpuframe bench report {args.out}")
    if outcome["errors"]:
        if getattr(args, "debug", False):
            for e in outcome["errors"]:
                print(f"--- {e['benchmark']} ---\n{e['traceback']}", file=sys.stderr)
        failed = "; ".join(f"{e['benchmark']}: {e['error']}" for e in outcome["errors"])
        where = f" (the other results are in {args.out})" if args.out else ""
        raise CLIError(f"{len(outcome['errors'])} of {len(names)} benchmarks failed{where}: {failed}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from .benchmarks.common import load_results
    from .benchmarks.report import markdown_table, render

    md_path, png_path = render(args.results, args.out_dir)
    print(markdown_table(load_results(args.results)["records"]))
    con = _stderr_console()
    con.print(f"wrote {md_path}" + (f" and {png_path}" if png_path else " (no chart: no case has gpuframe and a peer timed)"),
              markup=False, soft_wrap=True)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(rows=args.rows, workers=args.workers, device=args.device, protocol=args.protocol,
             steps=args.steps, keep=args.keep)
    return 0


def _cmd_compile(args: argparse.Namespace) -> int:
    from .precompile import compile_kernels

    con = _stderr_console()
    con.print("gpuframe: compiling the CPU kernels into numba's cache", markup=False)
    res = compile_kernels(args.processes, jobs=args.jobs,
                          say=lambda line: con.print("  " + line, markup=False, soft_wrap=True))
    con.print(f"gpuframe: kernels ready in {res['seconds']:.1f} s ({res['processes']} processes)", markup=False)
    return 0


# ---------------------------------------------------------------------------------------- entry
_PLAIN = (CLIError, ValueError, TypeError, KeyError, FileNotFoundError, PermissionError, NotImplementedError)


def _one_line(exc: BaseException) -> str:
    from .core.device import NoGPUError

    text = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    msg = lines[0] + (" …" if len(lines) > 1 else "") if lines else ""
    if isinstance(exc, KeyError) and len(msg.split()) <= 1:  # a bare key: say what it is
        msg = f"KeyError: {exc.args[0]!r}" if exc.args else "KeyError"
    elif not isinstance(exc, (*_PLAIN, NoGPUError)) or not msg:
        msg = f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__
    return msg


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the ``gpuframe`` command; returns the exit status (0 ok, 1 failure, 2 usage, 130 interrupted)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        args = build_parser().parse_args(argv)
        args.argv = argv
        return int(args.func(args) or 0)
    except BrokenPipeError:
        # stdout closed early (`gpuframe info | head`): not an error worth a message
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except KeyboardInterrupt:
        if debug:
            traceback.print_exc()
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except UsageError as e:
        print(f"{PROG}: error: {_one_line(e)}", file=sys.stderr)
        return e.exit_code
    except Exception as e:  # noqa: BLE001 - the command's last line of defence
        if debug:
            traceback.print_exc()
        msg = _one_line(e)
        # expected failures (bad input, no GPU...) explain themselves; others may need the traceback
        unexpected = msg.startswith(f"{type(e).__name__}:")
        hint = " (run with --debug for the traceback)" if (unexpected and not debug) else ""
        print(f"{PROG}: error: {msg}{hint}", file=sys.stderr)
        return e.exit_code if isinstance(e, CLIError) else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
