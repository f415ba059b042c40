"""Rebuild stage: keeping published images fresh. It reads the lock (what each image was built
from), finds what went stale (a moved base, newer packages, a changed spec), rebuilds that with
the builder, verifies and publishes it, and writes SBOMs, the lock and a report; it also emits
the CI pipelines that run it on a schedule. It depends on build, verify and publish, and nothing
depends on it.

Modules:
- scheduled: assess(ctx, lock) -> verdicts; rebuild(ctx, dry_run) -> report (`gen rebuild`);
- lock: gen.lock, read and written in one place (read_lock, write_lock, locked_units);
- sbom: CycloneDX SBOMs of built images (write_sboms);
- packages / updates: installed packages of an image, and newer ones in its apt source;
- release_sums: s6-overlay release checksums (`gen s6-overlay add-version`);
- ci: the GitHub and GitLab pipelines (`gen ci`).
"""
