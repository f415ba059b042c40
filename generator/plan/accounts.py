"""Numeric ids of an image's accounts, for USER and for checks that compare owners."""

from __future__ import annotations

from generator.model import Image
from generator.spec.checks import base_accounts


def account_ids(image: Image) -> tuple[dict[str, int], dict[str, int]]:
    """uid by user name and gid by group name: the spec's own, then the base's fixed ones."""
    base_users, base_groups = base_accounts(image.family)
    uids = {"root": 0, **base_users, **{u.name: u.uid for u in image.users}}
    gids = {"root": 0, **base_groups, **{g.name: g.gid for g in image.groups}}
    return uids, gids
