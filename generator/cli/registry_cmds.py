"""`gen push`, `gen pull`, `gen retag`, `gen lock`, `gen sbom`, `gen rebuild`, `gen ci`: the registry
stage's commands.

Exit codes: 0 ok (for rebuild: nothing to do); 3 rebuild rebuilt images; 1 an operation failed;
2 bad input (unknown image, bad registry, --insecure-registry for a non-loopback host).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from generator.builder.events import BuildEvent, Phase
from generator.builder.host import Host
from generator.cli.options import (
    INSECURE_ENV,
    JsonOption,
    PrefixOption,
    ProjectOption,
    ReportDirOption,
    StorageOption,
    err,
    error_exit,
    out,
    signals_cancel,
)
from generator.errors import GenError, UsageError
from generator.files import refuse_links_below, write_text_atomic
from generator.naming import DEFAULT_PREFIX

NamesArgument = Annotated[list[str] | None, typer.Argument(help="Images (default: all rendered).", show_default=False)]
RegistryOption = Annotated[
    str,
    typer.Option(
        "--registry",
        "-r",
        help="Registry and organization, HOST[:PORT]/ORG.",
        envvar="GEN_REGISTRY",
        metavar="HOST/ORG",
    ),
]
InsecureOption = Annotated[
    bool,
    typer.Option(
        "--insecure-registry",
        help="Plain HTTP / unverified TLS; loopback registries only.",
        envvar=INSECURE_ENV,
    ),
]
SinceOption = Annotated[
    str | None,
    typer.Option(
        "--since",
        help="Only images whose spec, templates or overlays changed in (REV, HEAD], and their dependents.",
        metavar="REV",
    ),
]
OnlyPlatformOption = Annotated[
    list[str] | None,
    typer.Option(
        "--platform",
        help="Only this platform's image of an image built for several (repeatable; one CI job per "
        "platform); push then joins no index.",
        metavar="OS/ARCH",
        show_default=False,
    ),
]


def _progress(line: str) -> None:
    err.print(f"[dim]{escape(line)}[/]", markup=True, highlight=False)


def _rebuild_event(event: BuildEvent) -> None:
    """gen rebuild's progress as log lines (it runs in CI): each step of the build and around it."""
    if event.phase is not Phase.STARTED:
        _progress(f"{event.image}: {event.phase.value}: {event.step or event.message}")


def _print_transfers(done, as_json: bool, verb: str) -> None:
    if as_json:
        out.print_json(
            json.dumps(
                [
                    {
                        "name": t.name,
                        "tags": list(t.tags),
                        "digest": t.digest,
                        "image_id": t.image_id or None,
                        "from": t.source,
                        "to": t.destination,
                        "sbom_tag": t.sbom_tag,
                        "platforms": dict(t.platforms) or None,
                        "signed": list(t.signed),
                        "provenance": list(t.attested),
                    }
                    for t in done
                ]
            )
        )
        return
    for t in done:
        out.print(
            f"{verb} {t.name} {t.digest or '(platform images, no index)'} -> {t.destination}:{{{','.join(t.tags)}}}",
            markup=False,
        )
        for platform, digest in t.platforms:
            out.print(f"  {platform}: {digest}", markup=False)
        if t.sbom_tag:
            out.print(f"  SBOM attached as {t.destination}:{t.sbom_tag}", markup=False)
        for digest in t.signed:
            out.print(f"  signed {digest}", markup=False)
        for digest in t.attested:
            out.print(f"  provenance attached to {digest}", markup=False)
    if not done:
        out.print("no image selected")


def _transfer(
    operation,
    verb: str,
    names,
    registry: str,
    insecure_registry: bool,
    since,
    project: Path,
    storage_root,
    prefix: str,
    as_json: bool,
    **platform_options,
) -> None:
    """push or pull: the images chosen by names/--since, between gen's storage and the registry."""
    from generator.publish import parse_registry, select_images

    try:
        target = parse_registry(_required(registry), insecure_registry)
        images, chosen = select_images(project, list(names or []), since)
        done = operation(
            Host.from_env(storage_root, project),
            images,
            chosen,
            prefix.rstrip("/"),
            target,
            _progress,
            **platform_options,
        )
    except GenError as exc:
        raise error_exit(exc) from None
    _print_transfers(done, as_json, verb)


def register(app: typer.Typer) -> None:
    keys = typer.Typer(help="Signing keys for `gen push` (sigstore format, as cosign reads them).")
    app.add_typer(keys, name="keys")

    @keys.command("new")
    def keys_new(
        output: Annotated[
            Path,
            typer.Option(
                "--output", help="Writes PREFIX.key and PREFIX.pub (keep the .key out of git).", metavar="PREFIX"
            ),
        ] = Path(".gen/keys/gen-signing"),
        project: ProjectOption = Path("."),
    ) -> None:
        """Write a new ECDSA P-256 key pair: PREFIX.key (encrypted with the passphrase from the file
        GEN_KEY_PASSPHRASE_FILE names, or GEN_KEY_PASSPHRASE; mode 0600) and PREFIX.pub. `gen push`
        signs with it when GEN_SIGNING_KEY names the .key; `gen verify-image --key PREFIX.pub` (and
        `cosign verify --key`) check the signatures."""
        from generator.publish.signing import passphrase_from, write_key_pair

        try:
            prefix = output if output.is_absolute() else project / output
            if not prefix.name or prefix.name in (".", ".."):
                raise UsageError(f"--output {output}: give a path prefix such as keys/release")
            refuse_links_below(project, prefix.parent)
            key_path, pub_path = write_key_pair(prefix, passphrase_from(dict(os.environ)))
        except GenError as exc:
            raise error_exit(exc) from None
        out.print(f"wrote {key_path} (private, encrypted, 0600) and {pub_path}", markup=False)
        out.print(
            f"to sign on push: GEN_SIGNING_KEY={key_path}, and the passphrase in GEN_KEY_PASSPHRASE_FILE", markup=False
        )

    @app.command("verify-image")
    def verify_image(
        reference: Annotated[str, typer.Argument(help="HOST[:PORT]/ORG/NAME:TAG in a registry.")],
        key: Annotated[Path, typer.Option("--key", help="The public key (NAME.pub of `gen keys new`).")],
        insecure_registry: InsecureOption = False,
        project: ProjectOption = Path("."),
        as_json: JsonOption = False,
    ) -> None:
        """Check what REFERENCE stands for (an index and each platform's image): every manifest signed
        by KEY for this repository; each image with a provenance statement signed by KEY that names
        its digest, the committed spec's hash (output/NAME) and gen.lock's base; and an SBOM beside
        it. Exit 1 naming each thing that does not match."""
        from generator.publish import parse_registry
        from generator.publish.signing import read_public_key
        from generator.rebuild.provenance import verify_pushed

        try:
            where, _, name_tag = reference.removeprefix("docker://").rpartition("/")
            name, _, tag = name_tag.partition(":")
            if not where or not name or not tag or "@" in name_tag:
                raise UsageError(f"{reference!r}: give HOST[:PORT]/ORG/NAME:TAG")
            registry = parse_registry(where, insecure_registry, option="REFERENCE")
            public_key = read_public_key(key)
            verdicts = verify_pushed(Host.from_env(None, project), registry, name, tag, public_key, project)
        except GenError as exc:
            raise error_exit(exc) from None
        failed = [v for v in verdicts if v.problems]
        if as_json:
            manifests = [{"digest": v.digest, "what": v.what, "problems": list(v.problems)} for v in verdicts]
            out.print_json(json.dumps({"reference": reference, "verified": not failed, "manifests": manifests}))
        else:
            for v in verdicts:
                state = "; ".join(v.problems) if v.problems else "trusted"
                out.print(f"{v.what} {v.digest}: {state}", markup=False)
        if failed:
            raise typer.Exit(1)

    @app.command()
    def trust(
        key: Annotated[Path, typer.Argument(help="The public key (NAME.pub of `gen keys new`).")],
        registry: RegistryOption = "",
        directory: Annotated[Path, typer.Option("--dir", help="Where policy.json and registries.d/ go.")] = Path(
            ".gen/trust"
        ),
        base_policy: Annotated[
            Path, typer.Option("--base-policy", help="The policy to extend (other registries keep their rules).")
        ] = Path("/etc/containers/policy.json"),
        project: ProjectOption = Path("."),
    ) -> None:
        """Write a containers policy that makes podman, buildah and skopeo refuse images from --registry
        HOST/ORG unless KEY signed them (sigstore signatures, the `.sig` tags `gen push` writes), and the
        registries.d file that tells them where the signatures are. Install both system-wide, or pass
        them per command (--signature-policy, --registries.d)."""
        from generator.publish import parse_registry
        from generator.publish.signing import read_public_key, tools_without_sigstore
        from generator.rebuild.trust import read_base_policy, registries_d, trust_policy

        try:
            target = parse_registry(_required(registry))
            read_public_key(key)  # a key gen can read, before anything is written
            base = read_base_policy(base_policy)
            where = directory if directory.is_absolute() else project / directory
            refuse_links_below(project, where / "registries.d")
            policy_path, registries_path = where / "policy.json", where / "registries.d" / "gen.yaml"
            policy = trust_policy(base, str(target), key.absolute())
            write_text_atomic(policy_path, json.dumps(policy, indent=2) + "\n")
            write_text_atomic(registries_path, registries_d(target.host))
        except GenError as exc:
            raise error_exit(exc) from None
        out.print(f"wrote {policy_path} and {registries_path}", markup=False)
        out.print(
            f"use: skopeo --policy {policy_path} copy --registries.d {where / 'registries.d'} ...; for podman "
            f"and buildah install them as /etc/containers/policy.json and /etc/containers/registries.d/gen.yaml",
            markup=False,
        )
        lacking = tools_without_sigstore()
        if lacking:
            err.print(
                f"warning: this host's {', '.join(lacking)} cannot check sigstore signatures (built without "
                f"sigstore, as Debian 12's are): with this policy they refuse every image from {target}, "
                "signed or not; `gen verify-image` checks the signatures here",
                markup=False,
            )

    @app.command()
    def login(
        registry: RegistryOption = "",
        insecure_registry: InsecureOption = False,
        project: ProjectOption = Path("."),
        storage_root: StorageOption = None,
    ) -> None:
        """Log in to the registry from CI variables: GEN_REGISTRY_USER and GEN_REGISTRY_PASSWORD, or
        GitLab's CI_REGISTRY_USER and CI_REGISTRY_PASSWORD for its own registry. The password goes
        to `skopeo login` on stdin and is never shown; the auth file it writes serves every later
        push and pull. Without such variables it does nothing (a registry open to the job)."""
        from generator.publish import Skopeo, parse_registry
        from generator.publish.skopeo import ci_credentials

        try:
            target = parse_registry(_required(registry), insecure_registry)
            host = Host.from_env(storage_root, project)
            found = ci_credentials(host.env, target.host)
            if found is None:
                out.print(f"no registry credentials in the environment: not logging in to {target.host}")
                return
            user, password, variables = found
            Skopeo(host).login(target, user, password)
        except GenError as exc:
            raise error_exit(exc) from None
        out.print(f"logged in to {target.host} as {user} ({variables})")

    @app.command()
    def push(
        names: NamesArgument = None,
        registry: RegistryOption = "",
        insecure_registry: InsecureOption = False,
        since: SinceOption = None,
        project: ProjectOption = Path("."),
        storage_root: StorageOption = None,
        prefix: PrefixOption = DEFAULT_PREFIX,
        platform: OnlyPlatformOption = None,
        index_only: Annotated[
            bool,
            typer.Option(
                "--index-only",
                help="Join the platforms' images already in the registry into each image's index; "
                "upload no image (the last CI job).",
            ),
        ] = False,
        as_json: JsonOption = False,
    ) -> None:
        """Push built images with every tag, the build-id tag gen-<key> included, to HOST/ORG/NAME; an
        image built for several platforms goes as each platform's image plus one OCI index of them.
        Credentials come from the containers auth file (`podman login`, REGISTRY_AUTH_FILE)."""
        from generator.publish import push_images
        from generator.publish.signing import signer_from_env

        if platform and index_only:
            raise error_exit(
                UsageError("--platform and --index-only exclude each other: the index joins every platform")
            )
        try:  # GEN_SIGNING_KEY set: every manifest pushed is signed (the key opened before any push)
            signer = signer_from_env(dict(os.environ))
        except GenError as exc:
            raise error_exit(exc) from None

        def push_signed_and_attested(host, images, chosen, prefix, target, progress, **options):
            from generator.rebuild.provenance import attest_pushed, utc_now

            started = utc_now()
            done = push_images(host, images, chosen, prefix, target, progress, **options)
            if signer is None:
                return done
            attested = []
            for t in done:
                progress(f"attaching provenance to {t.name}")
                attested.append(attest_pushed(host, images, t, prefix, target, signer, dict(os.environ), started))
            return attested

        _transfer(
            push_signed_and_attested,
            "pushed",
            names,
            registry,
            insecure_registry,
            since,
            project,
            storage_root,
            prefix,
            as_json,
            only=tuple(platform or ()),
            index_only=index_only,
            signer=signer,
        )

    @app.command()
    def pull(
        names: NamesArgument = None,
        registry: RegistryOption = "",
        insecure_registry: InsecureOption = False,
        since: SinceOption = None,
        project: ProjectOption = Path("."),
        storage_root: StorageOption = None,
        prefix: PrefixOption = DEFAULT_PREFIX,
        platform: OnlyPlatformOption = None,
        policy: Annotated[
            Path | None,
            typer.Option(
                "--policy",
                help="The containers policy to pull under (default: .gen/trust/policy.json from `gen trust`, "
                "else the user's or the system's policy.json).",
            ),
        ] = None,
        as_json: JsonOption = False,
    ) -> None:
        """Pull images from HOST/ORG into gen's storage under --prefix, with their build-id tags, so
        `gen build` sees them as up to date (every platform's image of one built for several). Each
        image is checked against the containers policy before anything is copied: sigstore
        signatures it requires are verified by gen (the image is then copied by that digest)."""
        from generator.publish import pull_images
        from generator.publish.policy import PullGate, policy_in_effect

        try:  # the policy read (and its keys) before anything is pulled
            in_effect = policy_in_effect(policy, project, dict(os.environ))
        except GenError as exc:
            raise error_exit(exc) from None

        def pull_checked(host, images, chosen, prefix, target, progress, **options):
            with PullGate(in_effect) as gate:
                return pull_images(host, images, chosen, prefix, target, progress, gate=gate, **options)

        _transfer(
            pull_checked,
            "pulled",
            names,
            registry,
            insecure_registry,
            since,
            project,
            storage_root,
            prefix,
            as_json,
            only=tuple(platform or ()),
        )

    @app.command()
    def retag(
        names: NamesArgument = None,
        source: Annotated[str, typer.Option("--from", help="Source HOST[:PORT]/ORG.", metavar="HOST/ORG")] = "",
        destination: Annotated[str, typer.Option("--to", help="Destination HOST[:PORT]/ORG.", metavar="HOST/ORG")] = "",
        insecure_registry: InsecureOption = False,
        since: SinceOption = None,
        project: ProjectOption = Path("."),
        storage_root: StorageOption = None,
        as_json: JsonOption = False,
    ) -> None:
        """Copy every tag of the images from one organization (or registry) to another, registry to
        registry; manifests are copied byte for byte, so digests stay the same. With GEN_SIGNING_KEY,
        every manifest is signed for the new repository too (a signature names its repository)."""
        from generator.errors import UsageError
        from generator.publish import parse_registry, retag_images, select_images
        from generator.publish.signing import signer_from_env

        try:
            signer = signer_from_env(dict(os.environ))  # opened before anything is copied
            src = parse_registry(_required(source, "--from"), insecure_registry, "--from")
            dst = parse_registry(_required(destination, "--to"), insecure_registry, "--to")
            if src == dst:
                raise UsageError(f"--from and --to are both {src}; give two different organizations")
            images, chosen = select_images(project, list(names or []), since)
            done = retag_images(Host.from_env(storage_root, project), images, chosen, src, dst, _progress, signer)
        except GenError as exc:
            raise error_exit(exc) from None
        _print_transfers(done, as_json, "copied")

    @app.command()
    def lock(
        update: Annotated[
            bool,
            typer.Option(
                "--update",
                help="Refresh gen.lock from the images in storage (and their digests in --registry, when given).",
            ),
        ] = False,
        registry: RegistryOption = "",
        insecure_registry: InsecureOption = False,
        plan: Annotated[
            Path | None,
            typer.Option(
                "--plan",
                help="With --update, in a CI pipeline's last job: the plan job's `gen rebuild --dry-run "
                "--json` output; writes the run's report (rebuild-report.json and .md) to --report-dir.",
                show_default=False,
            ),
        ] = None,
        report_dir: ReportDirOption = None,
        project: ProjectOption = Path("."),
        storage_root: StorageOption = None,
        prefix: PrefixOption = DEFAULT_PREFIX,
        as_json: JsonOption = False,
    ) -> None:
        """Show gen.lock, or with --update record for every built image its base and rootfs ids, image
        id, registry digest, init artifacts' checksums and installed package versions."""
        from generator.publish import parse_registry, select_images
        from generator.rebuild.lock import lock_path, locked_image, read_lock, write_lock
        from generator.rebuild.scheduled import pipeline_report, read_plan, write_report

        try:
            if plan is not None and not update:
                from generator.errors import UsageError

                raise UsageError("--plan needs --update: the report compares the lock before and after")
            decisions = read_plan(plan) if plan is not None else None
            current = read_lock(project)
            before = read_lock(project)
            if not update:
                if not lock_path(project).is_file():
                    err.print("no gen.lock yet; run `gen lock --update` after `gen build`")
                    raise typer.Exit(1)
                out.print(current.to_json(), markup=False, end="")
                return
            target = parse_registry(registry, insecure_registry) if registry.strip() else None
            host = Host.from_env(storage_root, project)
            images, chosen = select_images(project, [], None)
            skopeo = None
            for name in chosen:
                digest = ""
                if target is not None:
                    from generator.publish import Skopeo

                    skopeo = skopeo or Skopeo(host)
                    digest = skopeo.digest(f"{target.repository(name)}:{images[name].tags[0]}", target.tls_verify) or ""
                elif name in current.images:
                    digest = current.images[name].digest
                current.images[name] = locked_image(host, images, name, prefix.rstrip("/"), digest)
                _progress(f"locked {name}")
            for gone in set(current.images) - set(images):
                del current.images[gone]
            if target is not None:
                current.registry = str(target)
            changed = write_lock(project, current)
            report = pipeline_report(decisions, before, current, str(target) if target else None) if decisions else None
            paths = write_report(report_dir or project / ".gen", report) if report else ()
        except GenError as exc:
            raise error_exit(exc) from None
        if as_json:
            result = {"lock": str(lock_path(project)), "changed": changed, "images": sorted(current.images)}
            out.print_json(json.dumps(result | {"reports": [str(p) for p in paths]}))
        else:
            out.print(f"{'wrote' if changed else 'unchanged:'} {lock_path(project)} ({len(current.images)} image(s))")
        for path in paths:
            err.print(f"report: {path}", markup=False)

    @app.command()
    def sbom(
        names: NamesArgument = None,
        project: ProjectOption = Path("."),
        storage_root: StorageOption = None,
        prefix: PrefixOption = DEFAULT_PREFIX,
    ) -> None:
        """Write a CycloneDX 1.6 JSON SBOM of each built image to output/NAME.sbom.cdx.json: its dpkg
        packages with versions and licenses (where machine-readable), its base and init artifacts."""
        from generator.publish import select_images
        from generator.rebuild.lock import read_lock
        from generator.rebuild.sbom import write_sboms

        try:
            host = Host.from_env(storage_root, project)
            images, chosen = select_images(project, list(names or []), None)
            current = read_lock(project)
            for name in chosen:
                digest = current.images[name].digest if name in current.images else ""
                for path in write_sboms(host, project / "output", images, name, prefix.rstrip("/"), digest):
                    out.print(f"wrote {path}", markup=False)
        except GenError as exc:
            raise error_exit(exc) from None

    @app.command(
        epilog="Exit codes: 0 nothing to do; 3 images were rebuilt (or adopted); 1 a step failed; "
        "2 bad input. A report goes to --report-dir as rebuild-report.json and .md."
    )
    def rebuild(
        registry: RegistryOption = "",
        insecure_registry: InsecureOption = False,
        dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the decision and why; change nothing.")] = False,
        no_package_check: Annotated[
            bool,
            typer.Option(
                "--no-package-check", help="Skip (b): resolving installed packages against the package index."
            ),
        ] = False,
        skip_verify: Annotated[
            bool, typer.Option("--skip-verify", help="Do not run `gen verify` on rebuilt images.")
        ] = False,
        report_dir: ReportDirOption = None,
        project: ProjectOption = Path("."),
        storage_root: StorageOption = None,
        prefix: PrefixOption = DEFAULT_PREFIX,
        as_json: JsonOption = False,
    ) -> None:
        """The scheduled job: find stale images ((a) base changed in the registry, (b) newer packages
        in the index, (c) spec/templates/overlays changed, (d) parent rebuilt), rebuild exactly those
        parents first, verify, push to --registry, update gen.lock, write a JSON and Markdown report.

        Exit code 0: nothing to do; 3: images were rebuilt; 1: a step failed; 2: bad input."""
        from generator.builder.outputs import load_outputs
        from generator.publish import parse_registry
        from generator.publish.signing import signer_from_env
        from generator.rebuild.scheduled import RebuildContext, report_markdown, write_report
        from generator.rebuild.scheduled import rebuild as run

        try:
            target = parse_registry(registry, insecure_registry) if registry.strip() else None
            if insecure_registry and target is None:
                from generator.errors import UsageError

                raise UsageError("--insecure-registry needs --registry HOST/ORG")
            host = Host.from_env(storage_root, project)
            ctx = RebuildContext(
                host,
                project,
                load_outputs(project / "output"),
                prefix.rstrip("/"),
                target,
                check_packages=not no_package_check,
                verify=not skip_verify,
                on_event=_rebuild_event,
                signer=signer_from_env(dict(os.environ)) if target is not None and not dry_run else None,
            )
            with signals_cancel(ctx.cancel):  # Ctrl-C stops the running build; what finished is locked
                data = run(ctx, dry_run)
            paths = write_report(report_dir or project / ".gen", data) if not dry_run else ()
        except GenError as exc:
            raise error_exit(exc) from None
        if as_json:
            out.print_json(json.dumps(data))
        else:
            out.print(report_markdown(data), markup=False)
        for path in paths:
            err.print(f"report: {path}", markup=False)
        raise typer.Exit(data["exit_code"])

    @app.command()
    def ci(
        platform: Annotated[str, typer.Argument(help="github or gitlab.")],
        registry: RegistryOption = "",
        cron: Annotated[
            str, typer.Option("--cron", help="When the scheduled rebuild runs (5 cron fields, UTC).")
        ] = "17 3 * * *",
        install: Annotated[
            str | None,
            typer.Option(
                "--install",
                help="Shell command that installs gen on a "
                "runner and puts it on PATH. Default: install gen from the pipeline's own checkout (the "
                "commit it runs on) into a virtual environment, for specs kept in gen's own repository; "
                "give this when they live in another repository.",
                show_default=False,
            ),
        ] = None,
        output: Annotated[
            Path | None,
            typer.Option(
                "--output",
                "-o",
                help="Where to write (default: .github/workflows/gen-rebuild.yml or .gitlab-ci.yml); - for stdout.",
                show_default=False,
            ),
        ] = None,
        project: ProjectOption = Path("."),
    ) -> None:
        """Emit a scheduled CI pipeline: a plan job computes the stale set with `gen rebuild --dry-run`,
        then one matrix job per image and DAG level pulls its parent from the registry, builds,
        verifies and pushes; a last job updates gen.lock."""
        from generator.builder.outputs import load_outputs
        from generator.publish import parse_registry
        from generator.rebuild.ci import render_pipeline, write_pipeline

        try:
            target = parse_registry(_required(registry))
            text = render_pipeline(platform, load_outputs(project / "output"), str(target), cron, install)
            if output is not None and str(output) == "-":
                out.print(text, markup=False, end="")
                return
            path = write_pipeline(project, platform, text, output)
        except GenError as exc:
            raise error_exit(exc) from None
        out.print(f"wrote {path}", markup=False)


def _required(value: str, option: str = "--registry") -> str:
    from generator.errors import UsageError

    if not value.strip():
        hint = " (or set GEN_REGISTRY)" if option == "--registry" else ""
        raise UsageError(f"{option} HOST/ORG is required{hint}, e.g. {option} registry.example.com/team")
    return value
