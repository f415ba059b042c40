"""The init layer of an image: which provider, what it needs, and the defaults it runs with.

Two providers share the same spec fields:

* ``s6``: the distro's s6 and execline packages with gen's own small init on top (the files under
  templates/init/s6). Everything it reads at run time is an environment variable with a default
  set here, so `podman run -e` can change it per container.
* ``s6-overlay``: the pinned release tarballs, fetched in a builder stage and verified against
  sha256 sums gen knows (generator/data/s6-overlay-checksums.json) or the spec gives. s6-overlay
  is PID 1 and runs the start-up; gen's own scripts (templates/init/s6-overlay, most of them
  shared with ``s6``) make it behave as an ``s6`` image does: the spec's services become s6-rc
  longruns with their own loggers, and CMD runs supervised as gen's app service.

With ``logging.logger: gen-log`` (the default) an s6 image also gets gen's logger, compiled from
templates/logger/gen-log.c in a builder stage with the base's own compiler and libc; only the
binary reaches the final image.

Python decides everything here; the templates only hold script and Dockerfile text.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from generator.contract import read_json
from generator.errors import GenError, SpecFieldError, UsageError
from generator.model import Image, Readiness
from generator.plan.accounts import base_may_be_non_root
from generator.platforms import DEFAULT_PLATFORM, S6_OVERLAY_ARCHES, Platform

GITHUB_RELEASES = "https://github.com/just-containers/s6-overlay/releases/download"
CHECKSUMS_FILE = "s6-overlay-checksums.json"
NOARCH = "s6-overlay-noarch.tar.xz"
SYMLINK_FILES = ("s6-overlay-symlinks-noarch.tar.xz", "s6-overlay-symlinks-arch.tar.xz")
FETCH_OUTPUT_DIR = "/gen-s6-overlay"


# Distro packages each provider needs in the final image, by template family.
S6_PACKAGES = {"apt": ("execline", "s6"), "apk": ("execline", "s6"), "dnf": ("execline", "s6")}
# s6-overlay tarballs are .tar.xz: the fetch stage needs xz to unpack them.
XZ_PACKAGES = {"apt": ("xz-utils",), "apk": ("xz",), "dnf": ("xz",)}

# init.on_hook_failure -> S6_BEHAVIOUR_IF_STAGE2_FAILS (s6-overlay's values and meaning).
HOOK_FAILURE_BEHAVIOUR = {"continue": "0", "warn": "1", "stop": "2"}

# s6-overlay: where CMD goes (ENTRYPOINT ["/init", this]), gen's s6-rc oneshots, the skeletons of
# a service's s6-rc definitions, and the release from which user bundles live in user-bundles.d.
OVERLAY_CMD = "/usr/lib/gen/init/overlay-cmd"
RC_SOURCES = "etc/s6-overlay/s6-rc.d"
# The spec stage keeps services off these names and their own NAME-log and NAME-pipeline
# (generator.spec.checks.reserved_service_names; a test holds the two together).
GEN_ONESHOTS = ("gen-setup", "gen-app")
RC_SKELETONS = {"service": "init/s6-rc/service", "logger": "init/s6-rc/logger"}
USER_BUNDLES_D_SINCE = (3, 2, 3, 2)

_SHA256 = re.compile(r"[0-9a-f]{64}")  # used with fullmatch: "$" would let a trailing newline in
# The 3.x releases gen supports; parts of at most 9 digits, so _version_key's int() never meets
# a number past Python's digit limit.
_VERSION = re.compile(r"3(\.[0-9]{1,9}){1,4}")
_SUM_LINE = re.compile(r"^([0-9a-fA-F]{64})\s+\*?(\S+)\s*$")


@dataclass(frozen=True)
class FetchFile:
    name: str  # release file name, e.g. s6-overlay-noarch.tar.xz
    sha256: str
    arch: str | None  # s6-overlay arch name for per-arch files, None for noarch ones


# The logger's source (under templates/), where the build context holds it, and where it is built.
LOGGER_TEMPLATE_DIR = "logger"
LOGGER_CONTEXT_DIR = "gen-log-src"
LOGGER_OUTPUT_DIR = "/gen-log-out"
LOGGER_PATH = "/usr/lib/gen/init/gen-log"
# A C compiler and the libc headers, by template family: the builder stage's only packages.
COMPILER_PACKAGES = {"apt": ("gcc", "libc6-dev"), "apk": ("gcc", "musl-dev"), "dnf": ("gcc", "glibc-devel")}


@dataclass(frozen=True)
class CompileStage:
    """A builder stage (templates/stages/gen-log-build.j2) that compiles gen's logger from the
    build context's source with the base's compiler; output_dir holds the binary at LOGGER_PATH."""

    name: str
    context_dir: str
    packages: tuple[str, ...]
    family: str
    output_dir: str
    binary: str
    become_root: bool  # the base may run as another user; installing the compiler needs root

    @property
    def template(self) -> str:
        return f"stages/{self.name}-build.j2"


@dataclass(frozen=True)
class FetchStage:
    """A builder stage (templates/stages/<name>-fetch.j2) that downloads release files, verifies
    each against its sha256 and unpacks them into output_dir, which the final stage copies to /."""

    name: str
    version: str
    base_url: str  # "" when the files come from a local directory the build serves
    files: tuple[FetchFile, ...]  # every file gen knows a sum for; per-arch ones are picked at build
    packages: tuple[str, ...]  # what the stage installs to unpack them
    output_dir: str
    family: str
    default_arch: str  # s6-overlay arch built unless the build passes another
    local_dir: str | None = None  # init.source when it is a directory on the build host
    # (platform, s6-overlay arch) for each platform the spec lists: the build passes it per platform.
    platform_archs: tuple[tuple[str, str], ...] = ()

    @property
    def template(self) -> str:
        return f"stages/{self.name}-fetch.j2"

    @property
    def noarch_files(self) -> tuple[FetchFile, ...]:
        return tuple(f for f in self.files if f.arch is None)

    @property
    def arch_files(self) -> tuple[FetchFile, ...]:
        return tuple(f for f in self.files if f.arch is not None)


@dataclass(frozen=True)
class RcDefinition:
    """An s6-rc source directory gen writes into an s6-overlay image: a skeleton's files (type
    and scripts, from templates/<skeleton>/) plus the files decided here (argv, names, links)."""

    directory: str  # below / in the image, e.g. etc/s6-overlay/s6-rc.d/web
    skeleton: str | None
    files: tuple[tuple[str, str], ...]  # (path below directory, content)


@dataclass(frozen=True)
class InitLayer:
    packages: tuple[str, ...]  # distro packages the layer needs in the final image
    template_dir: str  # under templates/: copied to gen-init/ in the context, then to /
    fetch_stage: FetchStage | None
    entrypoint: tuple[str, ...]
    logger_stage: CompileStage | None = None  # gen-log, when this image is the first to need it
    rc_definitions: tuple[RcDefinition, ...] = ()  # s6-overlay: the spec's services for s6-rc

    @property
    def builder_stages(self) -> tuple[FetchStage | CompileStage, ...]:
        return tuple(s for s in (self.fetch_stage, self.logger_stage) if s is not None)


# --- s6-overlay checksums --------------------------------------------------------------------


def table_path() -> Path:
    """The shipped table's file (in a source checkout or editable install: the repository's)."""
    return Path(str(resources.files("generator").joinpath("data", CHECKSUMS_FILE)))


def checksum_table() -> dict[str, dict[str, str]]:
    """The shipped table: version -> {release file name: sha256}."""
    return json.loads(table_path().read_text())


def project_table_path(project_root: Path) -> Path:
    """A project's own table (`gen s6-overlay add-version` writes it), beside specs/ and gen.lock."""
    return project_root / CHECKSUMS_FILE


def known_checksums(project_root: Path) -> dict[str, dict[str, str]]:
    """The shipped table with the project's own releases added; a project file that is not a
    table of 3.x versions, release file names and sha256 sums, or that changes a shipped
    release's sums, is a UsageError (one line naming the file and the key, exit 2)."""
    return json.loads(merge_table(checksum_table(), read_project_table(project_table_path(project_root))))


def read_project_table(path: Path) -> dict[str, dict[str, str]]:
    """A project's table file ({} when there is none), every key and sum checked: a bad one is a
    UsageError naming the file and the key, as is a change of a shipped release's sums."""
    if path.is_symlink():
        raise UsageError(f"{path}: a symlink; gen reads only the project's own files (make it a regular file)")
    if not path.exists():
        return {}
    fix = "rewrite it with `gen s6-overlay add-version`"
    project = read_json(path, UsageError, fix, too_deep="not a JSON table (nested too deeply)")
    if not isinstance(project, dict):
        raise UsageError(
            f"{path}: expected {{version: {{file name: sha256}}}}, not a JSON {type(project).__name__}; {fix}"
        )
    shipped = checksum_table()
    for version, files in project.items():
        # Every key is checked here, where the file is named: a bad one would otherwise fail
        # later (sorting versions, the fetch stage's file names) as a traceback.
        if not _VERSION.fullmatch(version):
            raise UsageError(f"{path}: {_short(version)!r} is not an s6-overlay 3.x version such as 3.2.0.2; {fix}")
        if not isinstance(files, dict) or not files:
            raise UsageError(f"{path}: {version}: expected {{file name: sha256}}; {fix}")
        for name, digest in files.items():
            if not _is_release_file(name):
                raise UsageError(
                    f"{path}: {version}: {_short(name)!r} is not a release file gen fetches (the noarch and "
                    f"symlinks files, and s6-overlay-ARCH.tar.xz for ARCH in {', '.join(sorted(S6_OVERLAY_ARCHES))}); "
                    f"{fix}"
                )
            if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
                raise UsageError(f"{path}: {version} {name}: {_short(str(digest))!r} is not a sha256; {fix}")
            old = shipped.get(version, {}).get(name)
            if old is not None and old != digest:
                raise UsageError(
                    f"{path}: {version} {name}: gen ships {old} for this published release, which never "
                    "changes; remove the entry or correct it"
                )
    return project


def _short(text: str) -> str:
    """text cut to a length an error line can hold."""
    return text if len(text) <= 60 else text[:60] + "..."


# The .sha256 files and the version are the user's input, so their errors are UsageErrors (exit 2).
def parse_sha256_file(text: str, expected_name: str | None = None) -> tuple[str, str]:
    """(file name, sha256) from a published `.sha256` file (sha256sum's output format)."""
    where = f"{expected_name}.sha256: " if expected_name is not None else ""
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) != 1 or not (match := _SUM_LINE.match(lines[0].strip())):
        raise UsageError(
            f"{where}not a sha256sum line: {text.strip()[:120]!r} (expected '<64 hex digits>  <file name>'); "
            "use the release's published .sha256 file"
        )
    digest, name = match.group(1).lower(), match.group(2).rsplit("/", 1)[-1]
    if expected_name is not None and name != expected_name:
        raise UsageError(f"{expected_name}.sha256 names {name!r}, not {expected_name!r}")
    return name, digest


def add_version(version: str, sha256_files: Mapping[str, str]) -> dict[str, dict[str, str]]:
    """Table entries for one release from its published .sha256 files' texts, keyed by the
    tarball's name: {version: {file: sha256}}. Pure: fetching the texts is the caller's job."""
    if not _VERSION.fullmatch(version):
        raise UsageError(f"s6-overlay version {_short(version)!r}: only the 3.x line is supported (e.g. 3.2.0.2)")
    entries = dict(parse_sha256_file(text, name) for name, text in sorted(sha256_files.items()))
    if NOARCH not in entries:
        raise UsageError(f"s6-overlay {version}: {NOARCH}.sha256 is required")
    if not any(_arch_of(name) for name in entries):
        raise UsageError(f"s6-overlay {version}: at least one s6-overlay-<arch>.tar.xz.sha256 is required")
    return {version: dict(sorted(entries.items()))}


def merge_table(table: Mapping[str, Mapping[str, str]], entries: Mapping[str, Mapping[str, str]]) -> str:
    """The table file's new text with `entries` added (a known version's sums must not change)."""
    merged = {v: dict(files) for v, files in table.items()}
    for version, files in entries.items():
        for name, digest in files.items():
            old = merged.get(version, {}).get(name)
            if old is not None and old != digest:
                raise GenError(
                    f"s6-overlay {version} {name}: the table has {old}, the new sum is {digest}; "
                    "a published release never changes, so check where the new one came from"
                )
        merged.setdefault(version, {}).update(files)
    ordered = {v: dict(sorted(merged[v].items())) for v in sorted(merged, key=_version_key)}
    return json.dumps(ordered, indent=2) + "\n"


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split("."))


def _arch_of(name: str) -> str | None:
    if name == NOARCH or name in SYMLINK_FILES:
        return None
    match = re.fullmatch(r"s6-overlay-([a-z0-9_]+)\.tar\.xz", name)
    return match.group(1) if match and match.group(1) in S6_OVERLAY_ARCHES else None


def _is_release_file(name: str) -> bool:
    """Whether name is a file an s6-overlay 3.x release publishes (and the fetch stage knows)."""
    return name == NOARCH or name in SYMLINK_FILES or _arch_of(name) is not None


def s6_overlay_checksums(image: Image, table: Mapping[str, Mapping[str, str]] | None = None) -> dict[str, str]:
    """The sums one image's build verifies: the table's (the shipped one unless given, e.g.
    known_checksums), overridden by the spec's."""
    init = image.init
    table = checksum_table() if table is None else table
    assert init.version, "the spec stage refuses init.kind s6-overlay without init.version"
    if not _VERSION.fullmatch(init.version):  # the schema allows any dotted number, of any length
        raise SpecFieldError(
            ("init", "version"),
            f"{_short(init.version)!r} is not an s6-overlay 3.x version",
            "pin a 3.x release, e.g. 3.2.0.2",
        )
    sums = dict(table.get(init.version, {}))
    sums.update(dict(init.checksums))
    if not sums:
        known = ", ".join(sorted(table, key=_version_key))
        raise SpecFieldError(
            ("init", "version"),
            f"gen knows no checksums for s6-overlay {init.version} (known: {known})",
            f"run `gen s6-overlay add-version {init.version} --sums-from DIR|URL` (the release's .sha256 files), "
            f"add them under init.checksums ({NOARCH}: <sha256>, ...), or pick a known version",
        )
    for name, digest in sums.items():
        if not _SHA256.fullmatch(digest):
            raise SpecFieldError(("init", "checksums", name), f"{digest!r} is not a sha256", "64 hex digits")
        if not _is_release_file(name):
            raise SpecFieldError(
                ("init", "checksums", name),
                f"{name!r} is not an s6-overlay 3.x release file",
                f"e.g. {NOARCH} or s6-overlay-x86_64.tar.xz",
            )
    if NOARCH not in sums:
        raise SpecFieldError(
            ("init", "checksums"),
            f"no sha256 for {NOARCH} of s6-overlay {init.version}",
            f"add init.checksums.{NOARCH}",
        )
    if not any(_arch_of(n) for n in sums):
        raise SpecFieldError(
            ("init", "checksums"),
            f"no sha256 for any s6-overlay-<arch>.tar.xz of {init.version}",
            "add init.checksums.s6-overlay-x86_64.tar.xz (or your arch)",
        )
    return sums


def _source(image: Image) -> tuple[str, str | None]:
    """(base URL, local directory) the tarballs come from."""
    source = image.init.source
    if source is None:
        return f"{GITHUB_RELEASES}/v{image.init.version}", None
    if source.startswith("file://"):
        return "", source[len("file://") :]
    if source.startswith("/"):
        return "", source
    return source.rstrip("/"), None


def s6_overlay_fetch_stage(image: Image, table: Mapping[str, Mapping[str, str]] | None = None) -> FetchStage:
    sums = s6_overlay_checksums(image, table)
    files = tuple(FetchFile(name, digest, _arch_of(name)) for name, digest in sorted(sums.items()))
    arches = sorted({f.arch for f in files if f.arch})
    default_arch = DEFAULT_PLATFORM.s6_overlay_arch
    if default_arch not in arches:
        default_arch = arches[0]
    base_url, local_dir = _source(image)
    platform_archs = tuple((p, _platform_arch(p, arches)) for p in image.platforms or ())
    return FetchStage(
        name="s6-overlay",
        version=image.init.version or "",
        base_url=base_url,
        files=files,
        packages=XZ_PACKAGES[image.family],
        output_dir=FETCH_OUTPUT_DIR,
        family=image.family,
        default_arch=default_arch,
        local_dir=local_dir,
        platform_archs=platform_archs,
    )


def _platform_arch(platform: str, known: list[str]) -> str:
    """s6-overlay's arch name for an OCI platform; an error when no release sum covers it."""
    arch = Platform.parse(platform).s6_overlay_arch
    if arch is None or arch not in known:
        name = f"s6-overlay-{arch or '<arch>'}.tar.xz"
        raise SpecFieldError(
            ("platforms",),
            f"no sha256 known for {name}, which {platform} needs",
            f"add init.checksums.{name} (from its release's .sha256 file) or drop {platform}",
        )
    return arch


# --- the layer and its run-time defaults ------------------------------------------------------


def _logger_stage(image: Image, parent: Image | None) -> CompileStage | None:
    """gen-log's builder stage, unless the image uses s6-log or inherits gen-log from its parent."""
    if image.logging.logger != "gen-log":
        return None
    if parent is not None and parent.init.kind in ("s6", "s6-overlay") and parent.logging.logger == "gen-log":
        return None
    return CompileStage(
        "gen-log",
        LOGGER_CONTEXT_DIR,
        COMPILER_PACKAGES[image.family],
        image.family,
        LOGGER_OUTPUT_DIR,
        LOGGER_PATH,
        base_may_be_non_root(image, parent),
    )


def layer_packages(image: Image) -> tuple[str, ...]:
    """The distro packages an image's init layer puts in it (the s6 provider's only)."""
    return S6_PACKAGES[image.family] if image.init.kind == "s6" else ()


def init_layer(
    image: Image, parent: Image | None, sums_table: Mapping[str, Mapping[str, str]] | None = None
) -> InitLayer:
    """The init layer an image with init.kind s6 or s6-overlay gets. Its files are idempotent, so a
    child restates them; only gen-log's builder stage is left to the first image that needs it."""
    kind = image.init.kind
    if kind == "s6":
        return InitLayer(layer_packages(image), "init/s6", None, ("/init",), _logger_stage(image, parent))
    if kind == "s6-overlay":
        # The overlay brings its own s6 and execline; gen brings its scripts and the logger.
        return InitLayer(
            (),
            "init/s6-overlay",
            s6_overlay_fetch_stage(image, sums_table),
            ("/init", OVERLAY_CMD),
            _logger_stage(image, parent),
            rc_definitions(image),
        )
    raise GenError(f"{image.spec_path}: init.kind {kind!r} has no init layer")


def rc_definitions(image: Image) -> tuple[RcDefinition, ...]:
    """The spec's services as s6-rc longruns, each a pipeline with its logger, in the user bundle
    with gen's oneshots; gen-app depends on every service, so a stop brings the app down first."""
    stdout_writers = sum(s.log_stdout for s in image.services) + image.logging.stdout
    definitions = []
    for service in image.services:
        name, logger = service.name, f"{service.name}-log"
        argv = tuple((f"data/argv/{i:06d}", arg) for i, arg in enumerate(service.command))
        definitions.append(
            RcDefinition(
                f"{RC_SOURCES}/{name}",
                RC_SKELETONS["service"],
                (
                    ("producer-for", f"{logger}\n"),
                    ("data/user", service.user or image.user or ""),
                    ("dependencies.d/base", ""),
                    ("dependencies.d/gen-setup", ""),
                    *((f"dependencies.d/{dep}", "") for dep in service.after),
                    *_readiness_files(service.ready),
                    *argv,
                ),
            )
        )
        prefix = (("data/prefix", f"{name}:"),) if service.log_stdout and stdout_writers > 1 else ()
        definitions.append(
            RcDefinition(
                f"{RC_SOURCES}/{logger}",
                RC_SKELETONS["logger"],
                (
                    ("consumer-for", f"{name}\n"),
                    ("pipeline-name", f"{name}-pipeline\n"),
                    ("data/name", name),
                    ("data/stdout", "1" if service.log_stdout else "0"),
                    ("dependencies.d/gen-setup", ""),
                    *prefix,
                ),
            )
        )
    definitions.append(
        RcDefinition(f"{RC_SOURCES}/gen-app/dependencies.d", None, tuple((s.name, "") for s in image.services))
    )
    contents = (*GEN_ONESHOTS, *(f"{s.name}-pipeline" for s in image.services))
    definitions.append(RcDefinition(_user_bundle(image.init.version or ""), None, tuple((c, "") for c in contents)))
    return tuple(definitions)


def _readiness_files(ready: Readiness | None) -> tuple[tuple[str, str], ...]:
    """An s6-rc longrun's readiness: s6-rc waits for its notification before starting what
    depends on it, and fails the start after timeout-up; service-run reads data/ready."""
    if ready is None:
        return ()
    files = [
        ("notification-fd", f"{ready.fd}\n"),
        ("timeout-up", f"{ready.timeout_ms}\n"),
        ("data/ready/kind", "check\n" if ready.check else "fd\n"),
        ("data/ready/interval", f"{ready.interval_ms}\n"),
        ("data/ready/timeout", f"{ready.timeout_ms}\n"),
    ]
    files += [(f"data/ready/argv/{i:06d}", arg) for i, arg in enumerate(ready.check or ())]
    return tuple(files)


def _user_bundle(version: str) -> str:
    """Where s6-overlay reads the user bundle's contents: user-bundles.d from 3.2.3.2 on (earlier
    releases know only s6-rc.d/user, which later ones still read with a warning)."""
    if _version_key(version) >= USER_BUNDLES_D_SINCE:
        return "etc/s6-overlay/user-bundles.d/user/contents.d"
    return f"{RC_SOURCES}/user/contents.d"


def init_env(image: Image) -> dict[str, str]:
    """ENV defaults of the init layer, from the spec; `podman run -e` overrides any of them."""
    init, logging = image.init, image.logging
    env = {
        "S6_KILL_GRACETIME": str(init.kill_grace_time),
        "S6_SERVICES_GRACETIME": str(init.services_grace_time),
        "S6_BEHAVIOUR_IF_STAGE2_FAILS": HOOK_FAILURE_BEHAVIOUR[init.on_hook_failure],
        "S6_VERBOSITY": str(init.verbosity),
    }
    if image.sysctls.values:
        env["GEN_SYSCTL_POLICY"] = image.sysctls.policy
    if image.profiles or image.default_profile:
        env["GEN_PROFILE"] = image.default_profile or ""
        env["GEN_PROFILES_DIR"] = image.profiles_dir
    if init.kind == "s6-overlay":
        # s6-overlay v3 gives CMD an emptied environment unless told to keep it. Its last stop
        # step sleeps S6_KILL_GRACETIME ms even when nothing is left (s6-overlay#628): gen's own
        # stop waits for what is left (GEN_KILL_GRACETIME at most), so s6-overlay's wait is 0.
        env["S6_KEEP_ENV"] = "1"
        env["GEN_KILL_GRACETIME"] = env["S6_KILL_GRACETIME"]
        env["S6_KILL_GRACETIME"] = "0"
        env["S6_CMD_WAIT_FOR_SERVICES_MAXTIME"] = str(init.services_start_timeout)
    env.update(
        {
            "GEN_LOG_DIR": logging.dir,
            "GEN_LOG_MAX_SIZE": str(logging.max_size),
            "GEN_LOG_KEEP": str(logging.keep),
            "GEN_LOG_TIMESTAMP": logging.timestamp,
            "GEN_LOG_STDOUT": "1" if logging.stdout else "0",
            "GEN_LOGGER": logging.logger,
            "GEN_RESTART": init.restart,
        }
    )
    if logging.forward_to:
        env["GEN_LOG_FORWARD"] = logging.forward_to
        env["GEN_LOG_FORWARD_FACILITY"] = logging.forward_facility
    return env
