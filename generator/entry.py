"""The `gen` executable. Ctrl-C at any moment, even while Python is still loading gen's modules,
ends with one line and exit 130, never a traceback."""

import sys


def main() -> None:
    try:
        from generator.cli import main as run_cli

        run_cli()
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        sys.exit(130)
