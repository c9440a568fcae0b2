"""python -m training {train,soup,export,evaluate,reproduce,line_reader} ..."""

from __future__ import annotations

import argparse
import importlib
import sys

from training.data import MnistDataError

# each a module of training/ with add_arguments, main
COMMANDS = ("train", "soup", "export", "evaluate", "reproduce", "line_reader")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # Only the chosen command's module is imported: `evaluate` runs on ONNX Runtime and starts without torch (1.5 s
    # less). Without a known command (--help, a typo) all are, for the list.
    chosen = [argv[0]] if argv and argv[0] in COMMANDS else COMMANDS
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    for name in chosen:
        module = importlib.import_module(f"training.{name}")
        sub = commands.add_parser(name, help=module.__doc__.splitlines()[0], description=module.__doc__)
        module.add_arguments(sub)
        sub.set_defaults(run=module.main)
    args = parser.parse_args(argv)
    # Each evaluation's line at once, also into a log file (nohup make train > train.log): runs last an hour.
    sys.stdout.reconfigure(line_buffering=True)
    try:
        args.run(args)
    except MnistDataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
