"""``python -m pushgate.bench ARGS`` runs ``pushgate bench ARGS``."""

import argparse
import sys

from pushgate.bench.cli import run_bench
from pushgate.bench.parser import add_bench_parser


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pushgate")
    add_bench_parser(parser.add_subparsers(dest="command"))
    args = sys.argv[1:] if argv is None else argv
    return run_bench(parser.parse_args(["bench", *args]))


if __name__ == "__main__":
    sys.exit(main())
