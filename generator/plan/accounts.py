"""Who an image's accounts are by number (for USER and owner checks), and who its base runs as."""

from __future__ import annotations

from generator.model import Image
from generator.spec.checks import base_accounts


def account_ids(image: Image) -> tuple[dict[str, int], dict[str, int]]:
    """uid by user name and gid by group name: the spec's own, then the base's fixed ones."""
    base_users, base_groups = base_accounts(image.family)
    uids = {"root": 0, **base_users, **{u.name: u.uid for u in image.users}}
    gids = {"root": 0, **base_groups, **{g.name: g.gid for g in image.groups}}
    return uids, gids


def base_may_be_non_root(image: Image, parent: Image | None) -> bool:
    """Whether the base's own USER may be other than root: a non-root parent, or a registry or
    local image, which may set any USER (a bootstrapped rootfs is root's)."""
    if parent is not None:
        return parent.runs_as != "root"
    return bool(image.base.image or image.base.local)
