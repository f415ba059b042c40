"""The `gen` executable. From the moment main() runs, Ctrl-C (while gen's own modules load, too)
ends with one line and exit 130, never a traceback.

Not before: the console script pip writes imports this module only after the interpreter has
started and imported `site` (with .pth files: an editable install's finder imports pathlib, re
and urllib there), and gen has no code that runs earlier. A Ctrl-C in the first few ms, before
Python installs its SIGINT handler, kills the process silently (shells say 130); one in the rest
of start-up, about 5-40 ms after exec on a loaded two-core machine, is Python's own traceback
("Failed to import the site module", or at the script's import line)."""

import sys


def main() -> None:
    try:
        from generator.cli import main as run_cli

        run_cli()
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        sys.exit(130)
