"""The skit-pipelines command: serve PipelineService, and drive it from a terminal.

Exit codes: 0 success, 1 a failed call or a run that did not succeed, 2 bad usage,
130 interrupted (Ctrl-C).

The package is split by job: `parser` (the command line), `values` (parsing its values),
`local` (the commands that need no service: serve, tokens, demo data), `commands` (one
function per client command), `render` (messages to text), `live` (following a run) and
`exits` (the exit codes).
"""

from __future__ import annotations

import argparse
import os
import sys

from skit_pipelines.errors import PipelinesError
from skit_pipelines_cli.exits import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_USAGE
from skit_pipelines_cli.local import LocalCommand
from skit_pipelines_cli.parser import build_parser
from skit_pipelines_cli.values import UsageError

__all__ = ["build_parser", "main"]


def main(argv: list[str] | None = None) -> int:
    """Runs the command in `argv` (default sys.argv[1:]) and returns the exit code."""
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(os.environ, command=argv[0] if argv else None)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else EXIT_USAGE
    try:
        if hasattr(args, "local"):
            local: LocalCommand = args.local
            return local(args, sys.stdout)
        return _remote(args)
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except PipelinesError as error:
        print(f"error: {error.message}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader (e.g. `| head`) went away; point stdout at devnull so the flush at
        # exit does not raise again (the recipe in the `signal` module's docs).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_FAILURE


def _remote(args: argparse.Namespace) -> int:
    # Imported only for the commands that call the service: `serve` starts without the
    # client and its renderers.
    from skit_pipelines_cli.commands import dispatch
    from skit_pipelines_cli.render import emit, error_lines
    from skit_pipelines_client import RPCError

    try:
        return dispatch(args, sys.stdout)
    except RPCError as error:
        emit(error_lines(error, args.server), sys.stderr)
        return EXIT_FAILURE
