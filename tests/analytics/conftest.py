from __future__ import annotations

import itertools

import pytest

from accounts.grants import Scope


@pytest.fixture
def api(make_role, make_user, auth_client):
    """``api(scope=Scope.GROUP, groupes=[...])``: a client of a user whose role reads audits at that scope
    (``None``: a user without the audits grant)."""
    counter = itertools.count()

    def _client(*, scope: Scope | None, **fields):
        n = next(counter)
        grants = {"audits": ("r", scope.value)} if scope is not None else {"fiches": ("r", "ALL")}
        return auth_client(make_user(make_role(f"analytics-{n}", **grants), **fields))

    return _client
