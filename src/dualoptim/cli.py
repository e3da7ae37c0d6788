"""The ``dualoptim`` command: parse arguments, call one function per subcommand.

Each subcommand registers itself in :func:`build_parser` with a ``handler``; adding one
(train, unlearn, bench, report) is one ``_add_*`` function and one handler. Nothing here
knows a task: a config names its task, the task registry finds it, and bench runs it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from fractions import Fraction
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console

import dualoptim
from dualoptim.config import ConfigError, from_dict, merge, parse_overrides, read_config
from dualoptim.distributed import is_main
from dualoptim.errors import WriteError
from dualoptim.tasks import registry
from dualoptim.unlearn.task import Task

if TYPE_CHECKING:
    from dualoptim.bench.task_report import Shown


def _console() -> Console:
    """Rich's console; a log file or pipe gets 160 columns instead of 80, so the tables of
    mean ± std cells stay on one line each."""
    return Console() if sys.stdout.isatty() else Console(width=160)


def _at_least(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    parse.__name__ = "int"  # argparse names the type in its error messages
    return parse


def _positive_number(text: str) -> float:
    """A grid value: a decimal, ``1e-4`` or a fraction, so ``1/3`` is exactly a third (and
    matches records made with it) rather than 0.333."""
    try:
        value = Fraction(text)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a number or a fraction like 1/3"
        ) from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: grid values must be > 0")
    return float(value)


def _demo(args: argparse.Namespace) -> int:
    # Imported here so that `dualoptim --help` does not pay for matplotlib and the study.
    from dualoptim.variance_study.variance_report import run_demo

    run_demo(args.out, n_seeds=args.seeds, steps=args.steps)
    return 0


def _add_demo(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="shared vs decoupled momentum: the variance theorem on a noisy quadratic",
        description="Run heavy-ball momentum with one shared buffer and with one buffer per "
        "objective on conflicting noisy quadratics over a grid of step sizes, forget losses "
        "and T_f:T_r ratios; print a table, save plots and a JSON record.",
    )
    parser.add_argument(
        "--out", type=Path, default=Path("results/variance"), help="output directory"
    )
    parser.add_argument("--seeds", type=_at_least(2), default=512, help="independent runs per cell")
    parser.add_argument("--steps", type=_at_least(1), default=300, help="optimizer steps per run")
    parser.set_defaults(handler=_demo)


def _shipped_configs() -> dict[str, Path]:
    """The named configs shipped in dualoptim/configs/<task>/, by name."""
    root = resources.files("dualoptim") / "configs"
    return {
        p.name[:-5]: Path(str(p))
        for task in registry.BUILT_IN
        for p in (root / task).iterdir()
        if p.name.endswith(".yaml")
    }


def _named_config(name_or_path: str) -> Path:
    """A config file: a path, or the name of one shipped in dualoptim/configs/<task>/."""
    path = Path(name_or_path)
    if path.exists():
        return path
    shipped = _shipped_configs()
    if name_or_path in shipped:
        return shipped[name_or_path]
    what = "config file" if path.suffix in (".yaml", ".yml") else "config file or named config"
    raise ConfigError(
        f"no {what} {name_or_path!r}; the named configs are {', '.join(sorted(shipped))}"
    )


def _load(args: argparse.Namespace) -> tuple[Task, Any]:
    """The config's task and its experiment (``task:``, classification when there is none);
    the file is read once, and overrides may set the task."""
    data = merge(read_config(_named_config(args.config)), parse_overrides(args.overrides))
    task = registry.get(data.pop("task", "vision"))
    return task, from_dict(task.config_class, data)


def _print_table(title: str, header: Sequence[str], cells: Sequence[Sequence[str]]) -> None:
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=escape(title))
    for i, column in enumerate(header):
        table.add_column(escape(column), justify="left" if i == 0 else "right")
    for row in cells:  # cells are text: a row label "sfron (dual) [carry]" is no style tag
        table.add_row(*map(escape, row))
    _console().print(table)


def _show(out: Path) -> Shown:
    """Rebuild ``out``'s report from all its records (earlier sweeps' too) and print it."""
    from dualoptim.bench.task_report import rebuild

    shown = rebuild(out)
    for table in shown.tables:
        _print_table(*table)
    for note in shown.notes:
        _console().print(note)
    _console().print(f"wrote {out / 'report.md'} and the records in {out / 'records'}")
    return shown


def _sweep(args: argparse.Namespace) -> int:
    """unlearn, bench and tune: a sweep of the config's runs, then the report."""
    from dualoptim.bench.sweeps import sweep

    task, config = _load(args)  # the whole configuration is validated before any training
    out = (args.out or Path("results") / task.name) / Path(args.config).stem
    tune = args.command == "tune"
    if tune and task.layout.gap_to is None:
        raise ValueError(
            f"tune picks the η_f of the lowest Gap to a reference; {task.name} tables have no "
            "Gap: use bench --grid"
        )
    sweep(
        config, out, getattr(args, "grid", [1.0]), absolute=tune, progress=True,
        retry_failed=args.retry_failed, extend=getattr(args, "extend", 0),
        tuned_seeds=getattr(args, "tuned_seeds", 0),
    )  # fmt: skip
    if not is_main():  # in a multi-process run the first process reports
        return 0
    shown = _show(out)
    if tune:
        best = ", ".join(f"{group} {forget_lr:.3g}" for group, forget_lr in shown.tuned)
        _console().print(f"best η_f (lowest mean Gap): {best}")
    return 0


def _report(args: argparse.Namespace) -> int:
    _show(args.folder)
    return 0


def _add_report(subparsers: argparse._SubParsersAction) -> None:
    text = "rebuild a sweep's report (tables, plots) from its records alone"
    parser = subparsers.add_parser("report", help=text, description=text)
    parser.add_argument("folder", type=Path, help="a sweep's output folder (holds records/)")
    parser.set_defaults(handler=_report)


def _models(args: argparse.Namespace) -> int:
    """train / retrain / evaluate: the reference models of each seed and their metrics."""
    if getattr(args, "downstream", False):  # the config's downstream options, or the defaults
        args.overrides = [*args.overrides, "downstream={}"]
    task, config = _load(args)
    table = task.reference_models(config, args.command)
    if is_main():
        _print_table(f"{args.command}: {args.config}", *table)
    return 0


def _add_vision(subparsers: argparse._SubParsersAction) -> None:
    helps = {
        "unlearn": "run the config's methods and settings over its seeds; print the table",
        "bench": "a sweep: the config's runs × seeds × an η_f grid (multiples); tables, plots",
        "train": "train (or load from the cache) the original model",
        "retrain": "train (or load) RT, the model retrained on D_r, for each seed",
        "evaluate": "FA/RA/TA/MIA of the original model and of RT for each seed",
        "tune": "SPEC §1.3: try each η_f of a grid with η_r fixed; the lowest mean Gap wins",
    }
    for command, text in helps.items():
        parser = subparsers.add_parser(command, help=text, description=text)
        parser.add_argument(
            "--config",
            default="digits",
            help=f"a YAML file or a named config ({', '.join(sorted(_shipped_configs()))})",
        )
        parser.add_argument(
            "overrides",
            nargs="*",
            metavar="key=value",
            help="override config values, anywhere on the line: seeds=[0,1] train.epochs=5",
        )
        if command in ("unlearn", "bench", "tune"):
            parser.add_argument(
                "--out",
                type=Path,
                default=None,
                help="where records and the report go, a folder per config (default: "
                "results/<task>); a rerun skips the runs whose records are there",
            )
            parser.add_argument(
                "--retry-failed",
                action="store_true",
                help="run again the runs recorded as failed (diverged, out of memory); "
                "a rerun skips them otherwise",
            )
        if command == "evaluate":
            parser.add_argument(
                "--downstream",
                action="store_true",
                help="LLM tasks: also run the lm-eval benchmarks (SPEC §3.5) on each model, "
                "the config's downstream options or the talk's five tasks",
            )
        if command == "bench":
            parser.add_argument(
                "--grid",
                type=_positive_number,
                nargs="+",
                default=[1.0],
                help="η_f multiples of each run's η_f, e.g. 1/3 1 3 10 (SPEC §3.4)",
            )
        if command == "tune":
            parser.add_argument(
                "--grid",
                type=_positive_number,
                nargs="+",
                default=[1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3],
                help="the η_f values to try",
            )
        if command in ("bench", "tune"):
            parser.add_argument(
                "--extend",
                type=_at_least(0),
                default=0,
                metavar="N",
                help="up to N rounds of one more ×3 η_f step past each best η_f at the grid's "
                "edge, so that the tuned η_f has run neighbours (SPEC §3.4; default 0)",
            )
            parser.add_argument(
                "--tuned-seeds",
                type=_at_least(0),
                default=0,
                metavar="N",
                help="then run each tuned η_f on new seeds (after the config's) until it has N: "
                "the main table and claims get N seeds, η_f stays tuned on the config's",
            )
        handler = _sweep if command in ("unlearn", "bench", "tune") else _models
        parser.set_defaults(handler=handler, command=command)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dualoptim", description=dualoptim.__doc__)
    parser.add_argument("--version", action="version", version=dualoptim.__version__)
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    _add_demo(subparsers)
    _add_vision(subparsers)
    _add_report(subparsers)
    return parser


def _overrides_out_of_grid(argv: Sequence[str] | None) -> list[str]:
    """``argv`` with the key=value words that follow ``--grid``'s numbers moved in front of
    that ``--grid`` (their order kept): ``--grid`` takes any number of values and would read
    an override as one."""
    kept: list[str] = []
    grid_at: int | None = None
    for word in sys.argv[1:] if argv is None else argv:
        if word.startswith("-"):
            grid_at = len(kept) if word == "--grid" else None
        elif grid_at is not None and "=" in word:
            kept.insert(grid_at, word)
            grid_at += 1
            continue
        kept.append(word)
    return kept


def _parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """``argv`` parsed, with key=value overrides anywhere on the line: argparse gives the
    ``overrides`` positional only its first run of words and returns the later ones as extras,
    in order, so they are appended (later overrides still win)."""
    args, extras = parser.parse_known_args(_overrides_out_of_grid(argv))
    if extras and hasattr(args, "overrides") and not any(e.startswith("-") for e in extras):
        args.overrides = [*args.overrides, *extras]
    elif extras:
        parser.error(f"unrecognized arguments: {' '.join(extras)}")
    return args


def _explain(err: Exception) -> str:
    """An expected failure in one line. OSErrors raised by the standard library carry the file
    apart from the message; ours (WriteError, FileNotFoundError("…: no records")) say it all."""
    if isinstance(err, OSError) and err.filename is not None and not isinstance(err, WriteError):
        text = f"{err.filename}: {err.strerror}"
    else:
        text = str(err) or type(err).__name__
    return " ".join(text.split())


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``dualoptim`` console script; returns the exit status.

    Every expected failure (bad config or data, unreadable or unwritable file, full disk,
    missing extra) ends with one line and status 2, Ctrl-C with one line and status 130;
    anything else is a bug and keeps its traceback. Earlier results are left as they were."""
    parser = build_parser()
    args = _parse(parser, argv)
    try:
        return args.handler(args)
    except KeyboardInterrupt:  # sweeps keep a record per finished run and skip those on a rerun
        message = "interrupted; rerun the same command to resume (finished runs are kept)"
        parser.exit(130, f"dualoptim: {message}\n")
    except (ValueError, ImportError, OSError) as err:  # ConfigError is a ValueError
        parser.exit(2, f"dualoptim: error: {_explain(err)}\n")
