"""Who may use which RAG collection: each user's collection names live in a namespace of their own, and an owner
may share a collection with named users, read-only.

Stored names are `<namespace><name>`; a namespace ends in `--`, which user-chosen names may not contain. A user
addresses their own collections by bare name and one shared with them by its stored name (as the listing shows
it, with `shared_by`). Anything else is 404, the same answer as for a collection that does not exist.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any, Callable

from apps.common import APIError
from apps.security import LOCAL_USER, is_admin, valid_user_name
from cluster.config import ConductorConfig

_SAFE_USER = re.compile(r"[^A-Za-z0-9_]")
SEPARATOR = "--"
MAX_SHARES = 100


def namespace(user: str) -> str:
    """The prefix of `user`'s stored collection names: readable, and unique per exact user name (a hash of it, so
    `a.b` and `a_b` never share one); none for the local user of a keyless server and the CLI."""
    if user == LOCAL_USER:
        return ""
    return f"{_SAFE_USER.sub('_', user)[:16]}-{hashlib.sha256(user.encode()).hexdigest()[:8]}{SEPARATOR}"


def owns(user: str, stored: str) -> bool:
    """Whether `stored` is in `user`'s namespace (the local user's is the bare names, owned by no prefix)."""
    prefix = namespace(user)
    return bool(prefix) and stored.startswith(prefix)


def _missing(name: str) -> APIError:
    return APIError(404, f"collection {name!r} does not exist", code="collection_not_found", param="collection")


class CollectionAccess:
    """`meta(stored)` reads a collection's metadata (raising for a missing one); shares are kept there."""

    def __init__(self, config: ConductorConfig, meta: Callable[[str], dict[str, Any]]):
        self.config, self.meta = config, meta

    def stored(self, user: str, name: str, write: bool = False) -> str:
        """The stored name `user` means by `name`, if they may read it (or change it, with `write`)."""
        if SEPARATOR not in name:
            return namespace(user) + name
        if is_admin(self.config, user):
            return name
        if owns(user, name):  # their own, written out in full
            return name
        try:
            shared = user in self.meta(name).get("shared_with", [])
        except Exception:  # noqa: BLE001 - missing or unreadable: the same 404 as for no access
            shared = False
        if not shared:
            raise _missing(name)
        if write:
            raise APIError(403, f"collection {name!r} is shared with you read-only", code="read_only")
        return name

    def is_reader(self, user: str, stored: str) -> bool:
        """True when `user` reaches `stored` only because it is shared with them (not its owner, not an admin)."""
        return (SEPARATOR in stored and not is_admin(self.config, user)
                and not owns(user, stored))

    def visible(self, user: str, listing: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """What `user` sees of the store's listing: their own by bare name, shared ones by stored name."""
        if is_admin(self.config, user):
            return listing
        prefix, out = namespace(user), []
        for c in listing:
            if prefix and c["name"].startswith(prefix):
                out.append({**c, "name": c["name"][len(prefix):]})
            elif not prefix and SEPARATOR not in c["name"]:
                out.append(c)
            elif user in c.get("shared_with", []):
                out.append({k: v for k, v in c.items() if k != "shared_with"} | {"shared_by": c.get("owner")})
        return out


def check_shares(users: list[str]) -> list[str]:
    if len(users) > MAX_SHARES:
        raise APIError(400, f"a collection may be shared with at most {MAX_SHARES} users", param="users")
    for u in users:
        if not valid_user_name(u):
            raise APIError(400, f"invalid user name {u[:40]!r}", param="users")
    return sorted(set(users))
