"""Mirror resolution: spec, then GEN_MIRROR, then the host's apt sources (both file styles)."""

from pathlib import Path

import pytest

from generator.builder.mirror import (
    MirrorNotFound,
    host_sources,
    mirror_from_sources,
    parse_deb822,
    parse_one_line,
    resolve_mirror,
    snapshot_url,
)

DEB822 = """\
Types: deb
# a comment between fields
URIs: http://archive.example.invalid/debian/
Suites: bookworm bookworm-updates
Components: main contrib
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://archive.example.invalid/debian-security
Suites: bookworm-security
Components: main

Types: deb-src
URIs: http://src.example.invalid/debian
Suites: bookworm
Components: main
"""

ONE_LINE = """\
# deb http://commented.example.invalid/debian bookworm main
deb [arch=amd64 signed-by=/usr/share/keyrings/x.gpg] http://one.example.invalid/debian bookworm main
deb http://one.example.invalid/debian-security bookworm-security main
deb http://thirdparty.example.invalid/apt stable main
"""


def etc_apt(tmp_path: Path, sources: str | None = None, listing: str | None = None) -> Path:
    root = tmp_path / "etc-apt"
    (root / "sources.list.d").mkdir(parents=True)
    if sources is not None:
        (root / "sources.list.d" / "debian.sources").write_text(sources)
    if listing is not None:
        (root / "sources.list").write_text(listing)
    return root


def test_deb822_stanzas_keep_only_binary_entries():
    entries = parse_deb822(Path("x.sources"), DEB822)
    assert [e.uris for e in entries] == [
        ("http://archive.example.invalid/debian/",),
        ("http://archive.example.invalid/debian-security",),
    ]
    assert entries[0].suites == ("bookworm", "bookworm-updates")
    assert entries[0].components == ("main", "contrib")


def test_deb822_disabled_stanza_is_not_used():
    text = "Types: deb\nURIs: http://off.example.invalid/debian\nSuites: bookworm\nEnabled: no\n"
    assert mirror_from_sources(parse_deb822(Path("x"), text), "debian", "bookworm") is None


def test_one_line_skips_comments_and_options():
    entries = parse_one_line(Path("sources.list"), ONE_LINE)
    assert [e.uris[0] for e in entries] == [
        "http://one.example.invalid/debian",
        "http://one.example.invalid/debian-security",
        "http://thirdparty.example.invalid/apt",
    ]
    assert entries[0].suites == ("bookworm",)


def test_host_deb822_archive_chosen_over_security(tmp_path):
    root = etc_apt(tmp_path, sources=DEB822)
    assert mirror_from_sources(host_sources(root), "debian", "bookworm") == "http://archive.example.invalid/debian"


def test_host_one_line_file(tmp_path):
    root = etc_apt(tmp_path, listing=ONE_LINE)
    assert resolve_mirror(None, "debian", "bookworm", {}, root) == "http://one.example.invalid/debian"


def test_archive_serving_the_suite_wins(tmp_path):
    listing = (
        "deb http://old.example.invalid/debian bullseye main\ndeb http://new.example.invalid/debian bookworm main\n"
    )
    root = etc_apt(tmp_path, listing=listing)
    assert resolve_mirror(None, "debian", "bookworm", {}, root) == "http://new.example.invalid/debian"
    # no entry for the suite: any archive of the distro still serves it
    assert resolve_mirror(None, "debian", "trixie", {}, root) == "http://old.example.invalid/debian"


def test_precedence_spec_then_env_then_host(tmp_path):
    root = etc_apt(tmp_path, sources=DEB822)
    env = {"GEN_MIRROR": "http://env.example.invalid/debian/"}
    assert (
        resolve_mirror("http://spec.example.invalid/debian", "debian", "bookworm", env, root)
        == "http://spec.example.invalid/debian"
    )
    assert resolve_mirror(None, "debian", "bookworm", env, root) == "http://env.example.invalid/debian"
    assert resolve_mirror(None, "debian", "bookworm", {}, root) == "http://archive.example.invalid/debian"


def test_no_mirror_error_names_the_fix(tmp_path):
    root = etc_apt(tmp_path, listing="deb http://thirdparty.example.invalid/apt stable main\n")
    with pytest.raises(MirrorNotFound) as caught:
        resolve_mirror(None, "debian", "bookworm", {}, root)
    assert "GEN_MIRROR" in str(caught.value) and "gen doctor" in str(caught.value)
    assert caught.value.exit_code == 1


def test_ubuntu_archive_is_not_taken_for_debian(tmp_path):
    root = etc_apt(tmp_path, listing="deb http://u.example.invalid/ubuntu noble main\n")
    assert resolve_mirror(None, "ubuntu", "noble", {}, root) == "http://u.example.invalid/ubuntu"
    with pytest.raises(MirrorNotFound):
        resolve_mirror(None, "debian", "bookworm", {}, root)


def test_snapshot_url_follows_snapshot_layout():
    assert (
        snapshot_url("http://snap.example.invalid/archive/debian/", "20240101T000000Z")
        == "http://snap.example.invalid/archive/debian/20240101T000000Z"
    )
    assert snapshot_url("http://m.example.invalid/debian/", None) == "http://m.example.invalid/debian"
