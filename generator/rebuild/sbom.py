"""A CycloneDX 1.6 JSON SBOM per built image, written with cyclonedx-python-lib.

Components: every installed dpkg package (purl pkg:deb, version, architecture, source package,
licenses where its copyright file is machine-readable), the base the image was built on (image id
as a hash; the registry digest for a registry base), and the s6-overlay tarballs with their
sha256 when the init layer uses them. Same image, same SBOM: the serial number derives from the
image id and the timestamp is the image's SOURCE_DATE_EPOCH.

Written to output/<name>.sbom.cdx.json, beside the rendered directory rather than in it: files
inside output/<name>/ are build inputs and belong to `gen render`. An image built for several
platforms has one SBOM per platform: the host's under that name, the others' as
output/<name>@<arch>.sbom.cdx.json (its build unit's name).
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from cyclonedx.contrib.license.exceptions import InvalidSpdxLicenseException
from cyclonedx.contrib.license.factories import LicenseFactory
from cyclonedx.model import HashAlgorithm, HashType, Property
from cyclonedx.model.bom import Bom, BomMetaData
from cyclonedx.model.component import Component, ComponentType
from cyclonedx.output.json import JsonV1Dot6
from packageurl import PackageURL

from generator.builder.host import Host
from generator.builder.outputs import OutputImage
from generator.contract import BootstrapBase, LockedImage
from generator.files import write_text_atomic
from generator.publish.attach import sbom_path
from generator.rebuild.lock import locked_units
from generator.rebuild.packages import Package, installed_packages
from generator.rebuild.updates import root_of

_NAMESPACE = uuid.UUID("6f1c2b2e-7d1a-4f0e-9a51-3c0d6b1f9e42")  # gen's namespace for serial numbers


def _sha256(hex_digest: str) -> HashType:
    return HashType(alg=HashAlgorithm.SHA_256, content=hex_digest.removeprefix("sha256:"))


def _package_component(package: Package, distro: str, release: str, licenses: LicenseFactory) -> Component:
    qualifiers = {"arch": package.architecture, "distro": f"{distro}-{release}"}
    if package.source != package.name or package.source_version != package.version:
        qualifiers["upstream"] = f"{package.source}@{package.source_version}"
    purl = PackageURL(type="deb", namespace=distro, name=package.name, version=package.version, qualifiers=qualifiers)
    return Component(
        name=package.name,
        version=package.version,
        type=ComponentType.LIBRARY,
        purl=purl,
        bom_ref=f"deb:{package.name}:{package.architecture}",
        licenses=[_license(licenses, name) for name in package.licenses],
        properties=[Property(name="dev.gen:source", value=f"{package.source} {package.source_version}")],
    )


def _license(factory: LicenseFactory, name: str):
    """An SPDX license by id where the name is one, else a named license (never an expression, so
    several licenses of one package can stand side by side)."""
    try:
        return factory.make_with_id(name)
    except InvalidSpdxLicenseException:
        return factory.make_with_name(name)


def _base_component(image: OutputImage, locked: LockedImage) -> Component:
    base = locked.base
    hashes = [_sha256(base.image_id)] if base.image_id else []
    properties = [Property(name="dev.gen:base-kind", value=base.kind)]
    if base.digest:
        properties.append(Property(name="dev.gen:manifest-digest", value=base.digest))
    return Component(
        name=base.name or base.ref or "base",
        type=ComponentType.CONTAINER,
        bom_ref="base",
        hashes=hashes,
        properties=properties,
        description="the image this one is built on (hash: its image id)",
    )


def _init_components(locked: LockedImage) -> list[Component]:
    init = locked.init
    if init.kind != "s6-overlay":
        return []
    return [
        Component(
            name=file,
            version=init.version or "",
            type=ComponentType.FILE,
            bom_ref=f"s6-overlay:{file}",
            hashes=[_sha256(digest)],
        )
        for file, digest in sorted(init.checksums)
    ]


def build_sbom(image: OutputImage, locked: LockedImage, packages: list[Package], distro: str, release: str) -> Bom:
    licenses = LicenseFactory()
    subject = Component(
        name=image.repo,
        version=locked.build_id or None,
        type=ComponentType.CONTAINER,
        bom_ref=f"image:{image.name}",
        hashes=[_sha256(locked.image_id)],
        properties=[Property(name="dev.gen:tag", value=t) for t in image.tags]
        + ([Property(name="dev.gen:manifest-digest", value=locked.digest)] if locked.digest else [])
        + ([Property(name="dev.gen:platform", value=image.platform)] if image.platform else []),
    )
    metadata = BomMetaData(component=subject, timestamp=datetime.fromtimestamp(image.source_date_epoch, tz=UTC))
    components = [_base_component(image, locked), *_init_components(locked)]
    components += [_package_component(p, distro, release, licenses) for p in packages]
    serial = uuid.uuid5(_NAMESPACE, f"{image.name}:{locked.image_id}")
    bom = Bom(components=components, metadata=metadata, serial_number=serial)
    bom.register_dependency(subject, components)
    return bom


def sbom_json(bom: Bom) -> str:
    return JsonV1Dot6(bom).output_as_string(indent=2) + "\n"


def write_sbom(
    output_dir: Path, image: OutputImage, locked: LockedImage, packages: list[Package], distro: str, release: str
) -> Path:
    """Write the SBOM when its text changed; its path."""
    path = sbom_path(output_dir, image.name)
    text = sbom_json(build_sbom(image, locked, packages, distro, release))
    write_text_atomic(path, text)
    return path


def write_sboms(
    host: Host, output_dir: Path, images: dict[str, OutputImage], name: str, prefix: str, digest: str = ""
) -> list[Path]:
    """The SBOM of each platform's image of `name` as it is in storage; digest is the registry's
    (an index's, for several platforms) and goes into the primary one."""
    root = root_of(images, name)
    base = root.base
    distro, release = (base.distro, base.release) if isinstance(base, BootstrapBase) else ("", "")
    paths = []
    for unit, entry in locked_units(host, images, name, prefix):
        packages = installed_packages(host, f"{prefix}/{unit.repo}:{unit.tags[0]}")
        locked = replace(entry, digest=digest if unit.name == name else "")
        paths.append(write_sbom(output_dir, unit, locked, packages, distro, release))
    return paths
