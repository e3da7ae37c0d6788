"""The ``dualoptim`` command: parse arguments, call one function per subcommand.

Each subcommand registers itself in :func:`build_parser` with a ``handler``; adding one
(train, unlearn, bench, report) is one ``_add_*`` function and one handler.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path

import dualoptim


def _at_least(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    parse.__name__ = "int"  # argparse names the type in its error messages
    return parse


def _demo(args: argparse.Namespace) -> int:
    # Imported here so that `dualoptim --help` does not pay for matplotlib and the study.
    from dualoptim.experiments.variance_report import run_demo

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dualoptim", description=dualoptim.__doc__)
    parser.add_argument("--version", action="version", version=dualoptim.__version__)
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    _add_demo(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``dualoptim`` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    return args.handler(args)
