"""The permission keys and scopes: plain values shared by the tables (``accounts.models``), the
grants (``accounts.grants``, which re-exports them) and the API. Imports nothing of the project."""

from __future__ import annotations

from enum import StrEnum

# The registry of permission keys. Unknown keys are rejected everywhere (API, admin, DB).
PERMISSION_KEYS: tuple[str, ...] = (
    "fiches",
    "recordings",
    "transcriptions",
    "audits",
    "audit-configs",
    "automation",
    "products",
    "chat",
    "users",
)


class Scope(StrEnum):
    SELF = "SELF"
    GROUP = "GROUP"
    ALL = "ALL"

    @property
    def width(self) -> int:
        return _SCOPE_WIDTH[self]


_SCOPE_WIDTH = {Scope.SELF: 0, Scope.GROUP: 1, Scope.ALL: 2}
