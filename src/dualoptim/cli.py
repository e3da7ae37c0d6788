"""The ``dualoptim`` command: parse arguments, call one function per subcommand.

Each subcommand registers itself in :func:`build_parser` with a ``handler``; adding one
(train, unlearn, bench, report) is one ``_add_*`` function and one handler.

Over 400 lines: the per-task reference commands and result tables (``_llm_models``,
``_diffusion_models``, ``TABLES``) live here until the Task protocol moves them into the
tasks (issue 14).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from fractions import Fraction
from importlib import resources
from pathlib import Path

from rich.console import Console

import dualoptim
from dualoptim.config import ConfigError, from_dict, merge, parse_overrides, read_config
from dualoptim.errors import WriteError


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
        hint = " (key=value overrides go before --grid)" if "=" in text else ""
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a number or a fraction like 1/3{hint}"
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


#: Each task's experiment class, imported only when a config of that task loads: the LLM and
#: diffusion tasks bring transformers and diffusers (and with it bitsandbytes), which a
#: classification command never needs.
EXPERIMENTS = {
    "vision": "dualoptim.tasks.vision.config:VisionExperiment",
    "llm": "dualoptim.tasks.llm.config:LLMExperiment",
    "diffusion": "dualoptim.tasks.diffusion.config:DiffusionExperiment",
}


def _shipped_configs() -> dict[str, Path]:
    """The named configs shipped in dualoptim/configs/<task>/, by name."""
    root = resources.files("dualoptim") / "configs"
    return {
        p.name[:-5]: Path(str(p))
        for task in EXPERIMENTS
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


def _experiment(args: argparse.Namespace):
    """The config's experiment, of the task it names (``task: llm`` / ``diffusion``;
    classification when there is none); the file is read once, overrides may set the task."""
    data = merge(read_config(_named_config(args.config)), parse_overrides(args.overrides))
    task = data.pop("task", "vision")  # each class's own task field defaults to its task
    if task not in EXPERIMENTS:
        allowed = ", ".join(repr(t) for t in EXPERIMENTS)
        raise ConfigError(f"task: got {task!r}; allowed values: {allowed}")
    module, name = EXPERIMENTS[task].split(":")
    return from_dict(getattr(importlib.import_module(module), name), data)


def _print_table(title: str, header: Sequence[str], cells: Sequence[Sequence[str]]) -> None:
    from rich.table import Table

    table = Table(title=title)
    for i, column in enumerate(header):
        table.add_column(column, justify="left" if i == 0 else "right")
    for row in cells:
        table.add_row(*row)
    _console().print(table)


def _show(summary, out: Path, metrics: Sequence[str]) -> None:
    from dualoptim.bench.records import RecordStore
    from dualoptim.bench.report import timing_note
    from dualoptim.bench.tables import main_table, sensitivity_table

    seeds = len(summary.rt.seeds)
    _print_table(
        f"{out.name}: {seeds} seeds", *main_table([summary.rt, *summary.main_rows()], metrics)
    )
    if summary.sensitivity():
        _print_table("Gap by η_f (× the run's η_f)", *sensitivity_table(summary.sensitivity()))
    note = timing_note(list(RecordStore(out / "records")))
    if note:
        _console().print(note)
    _console().print(f"wrote {out / 'report.md'} and the records in {out / 'records'}")


def _llm_table(out: Path, records) -> None:
    from dualoptim.bench.metric_table import metric_rows, metric_table
    from dualoptim.tasks.llm.sweep import LABELS, METRICS, REFERENCES, report

    report(records, out, out.name)
    rows = metric_rows(records, METRICS, REFERENCES)
    _print_table(out.name, *metric_table(rows, METRICS, LABELS))
    _console().print(f"wrote {out / 'report.md'} and the records in {out / 'records'}")


def _diffusion_table(out: Path, records) -> None:
    from dualoptim.tasks.diffusion.sweep import report, tables

    report(records, out, out.name)
    table2, averages, _ = tables(records)
    _print_table(f"{out.name}: per forgotten class (Table 2)", *table2)
    _print_table("averages over the forgotten classes", *averages)
    _console().print(f"wrote {out / 'report.md'} and the records in {out / 'records'}")


#: Tasks whose sweeps report their own tables (classification reports Gap to RT, below).
TABLES = {"llm": _llm_table, "diffusion": _diffusion_table}


def _sweep(args: argparse.Namespace) -> int:
    """unlearn, bench and tune: a sweep of the config's runs, then the report."""
    from dualoptim.bench.records import RecordStore
    from dualoptim.bench.report import rebuild_report
    from dualoptim.tasks.vision.sweep import METRICS, sweep

    exp = _experiment(args)  # the whole configuration is validated before any training
    task = getattr(exp, "task", "vision")
    out = (args.out or Path("results") / task) / Path(args.config).stem
    if task in TABLES:
        if args.command == "tune":
            raise ValueError(f"tune is for classification configs; use bench --grid for {task}")
        task_sweep = importlib.import_module(f"dualoptim.tasks.{task}.sweep").sweep
        grid = getattr(args, "grid", [1.0])
        task_sweep(exp, out, grid, progress=True, retry_failed=args.retry_failed)
        TABLES[task](out, list(RecordStore(out / "records")))
        return 0
    grid = getattr(args, "grid", [1.0])
    tune = args.command == "tune"
    sweep(exp, out, grid, absolute=tune, progress=True, retry_failed=args.retry_failed)
    summary = rebuild_report(out, METRICS, out.name)  # the folder's records, earlier ones too
    _show(summary, out, METRICS)
    if args.command == "tune":
        best = ", ".join(f"{row.group} {row.forget_lr:.3g}" for row in summary.tuned())
        _console().print(f"best η_f (lowest mean Gap): {best}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from dualoptim.bench.records import RecordStore
    from dualoptim.bench.report import rebuild_report
    from dualoptim.tasks.vision.sweep import METRICS

    records = list(RecordStore(args.folder / "records"))
    if records and records[0].get("task") in TABLES:
        TABLES[records[0]["task"]](args.folder, records)
        return 0
    summary = rebuild_report(args.folder, METRICS, args.folder.name)
    _show(summary, args.folder, METRICS)
    return 0


def _add_report(subparsers: argparse._SubParsersAction) -> None:
    text = "rebuild a sweep's report (tables, plots) from its records alone"
    parser = subparsers.add_parser("report", help=text, description=text)
    parser.add_argument("folder", type=Path, help="a sweep's output folder (holds records/)")
    parser.set_defaults(handler=_report)


def _models(args: argparse.Namespace) -> int:
    """train / retrain / evaluate: the reference models of each seed and their metrics."""
    from rich.table import Table

    from dualoptim.tasks.vision import experiment as ex

    exp = _experiment(args)
    if getattr(exp, "task", "vision") == "llm":
        return _llm_models(args, exp)
    if getattr(exp, "task", "vision") == "diffusion":
        return _diffusion_models(args, exp)
    data = ex.load_experiment_data(exp)
    splits = {seed: ex.forget_split(exp, data, seed) for seed in exp.seeds}  # before training
    original, seconds = ex.original_model(exp, data)
    table = Table(title=f"{args.command}: {args.config}")
    for column in ("model", "seed", "FA", "RA", "TA", "MIA", "MIA_efficacy", "train s"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for seed, split in splits.items():
        rows = []
        if args.command in ("train", "evaluate"):
            rows.append(("original", original, seconds))
        if args.command in ("retrain", "evaluate"):
            rows.append(("RT", *ex.retrained_model(exp, data, split, seed)))
        for name, model, train_seconds in rows:
            m = ex.evaluate_model(model, data, split)
            table.add_row(
                name,
                str(seed),
                *(f"{m[k]:.2f}" for k in ("FA", "RA", "TA", "MIA", "MIA_efficacy")),
                f"{train_seconds:.1f}",
            )
    _console().print(table)
    return 0


def _llm_models(args: argparse.Namespace, exp) -> int:
    """train: the target; retrain: the retain model; evaluate: both, on the TOFU suite."""
    from dualoptim.tasks.llm.world import World

    world = World(exp)
    columns = ("forget_quality", "model_utility", "forget/rouge", "retain/rouge", "UFE", "MU")
    rows = []
    if args.command in ("train", "evaluate"):
        rows.append(("target", world.target[1], world.target_evaluation))
    if args.command in ("retrain", "evaluate"):
        rows.append(("retain model", world.retain_model[1], world.retain_evaluation))
    cells = []
    for name, seconds, evaluation in rows:
        m = world.summary(evaluation["scores"], evaluation["forget_ratios"], False)
        cells.append([name, *(f"{m[c]:.3f}" for c in columns), f"{seconds:.0f}"])
    _print_table(f"{args.command}: {args.config}", ["model", *columns, "train s"], cells)
    return 0


def _diffusion_models(args: argparse.Namespace, exp) -> int:
    """train: the original denoiser and the classifier; evaluate: the original's FA/FID for
    each forgotten class. There is no retrained reference: Table 2 starts from the original."""
    from dualoptim.tasks.diffusion.world import World

    if args.command == "retrain":
        raise ValueError(
            "diffusion has no retrained reference (Table 2 compares with the original model); "
            "use train or evaluate"
        )
    world = World(exp)
    seconds = world.original[1]
    cells = [["original denoiser", f"{seconds:.0f}", "", ""]]
    cells.append(["classifier (test accuracy %)", "", f"{world.classifier_accuracy:.2f}", ""])
    if args.command == "evaluate":
        for forgotten in exp.data.forget_classes:
            m = world.reference(forgotten)
            name = world.data.class_names[forgotten]
            cells.append([f"original, FA/FID for {name}", "", f"{m['FA']:.2f}", f"{m['FID']:.2f}"])
    _print_table(f"{args.command}: {args.config}", ["model", "train s", "FA / acc", "FID"], cells)
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


def _parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """``argv`` parsed, with key=value overrides anywhere on the line: argparse gives the
    ``overrides`` positional only its first run of words and returns the later ones as extras,
    in order, so they are appended (later overrides still win)."""
    args, extras = parser.parse_known_args(argv)
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
