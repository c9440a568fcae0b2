"""python -m training {train,soup,export,evaluate,reproduce} ..."""

from __future__ import annotations

import argparse
import sys

from training import evaluate, export, reproduce, soup, train
from training.data import MnistDataError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    modules = (("train", train), ("soup", soup), ("export", export), ("evaluate", evaluate), ("reproduce", reproduce))
    for name, module in modules:
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
