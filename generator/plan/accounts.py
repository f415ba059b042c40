"""Who an image's accounts are by number (for USER and owner checks), and who its base runs as."""

from __future__ import annotations

from collections.abc import Iterable

from generator.model import Group, Image, User
from generator.spec.checks import base_accounts


def account_ids(image: Image) -> tuple[dict[str, int], dict[str, int]]:
    """uid by user name and gid by group name: the spec's own, then the base's fixed ones."""
    base_users, base_groups = base_accounts(image.family)
    spec_uids, spec_gids = spec_account_ids(image.users, image.groups)
    return {**base_users, **spec_uids}, {**base_groups, **spec_gids}


def spec_account_ids(users: Iterable[User], groups: Iterable[Group]) -> tuple[dict[str, int], dict[str, int]]:
    """The ids a spec fixes: root's and its own accounts'. Verify holds an image to these and
    looks any other account (the base's) up inside the container."""
    return {"root": 0, **{u.name: u.uid for u in users}}, {"root": 0, **{g.name: g.gid for g in groups}}


def base_may_be_non_root(image: Image, parent: Image | None) -> bool:
    """Whether the base's own USER may be other than root: a non-root parent, or a registry or
    local image, which may set any USER (a bootstrapped rootfs is root's)."""
    if parent is not None:
        return parent.runs_as != "root"
    return bool(image.base.image or image.base.local)
