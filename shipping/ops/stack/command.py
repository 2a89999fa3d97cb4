"""The stack's command line: ``python -m shipping.ops.stack up|down|status|clean``."""

from __future__ import annotations

import argparse
import logging
import shutil
import sys

from shipping.ops.stack.common import StackError
from shipping.ops.stack.core import Stack
from shipping.ops.supervision import SupervisorError


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m shipping.ops.stack``."""
    parser = argparse.ArgumentParser(
        prog="python -m shipping.ops.stack", description="Start, stop or inspect the local stack."
    )
    parser.add_argument("command", choices=["up", "down", "status", "clean"])
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    stack = Stack()
    try:
        if args.command == "up":
            stack.up()
        elif args.command == "down":
            stack.down()
        elif args.command == "clean":
            stack.down(quiet=True)
            shutil.rmtree(stack.dir, ignore_errors=True)
        else:
            return stack.status()
    except (StackError, SupervisorError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
