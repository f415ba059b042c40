"""Names every stage agrees on, importing nothing of gen's (the CLI reads them at start-up)."""

DEFAULT_PREFIX = "localhost/gen"  # where images are tagged when no --prefix is given
STAGING_PREFIX = ".gen-staging-"  # beside output/: a render in progress, or one interrupted
