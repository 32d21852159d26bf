"""``realtime`` is a leaf (DESIGN.md): it imports no domain app; apps register their channel
authorizers and hand webhook payloads in. ``accounts`` does not reach into ``fiches`` either."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from realtime.registry import channel_authorizer_for, registered_channel_prefixes

ROOT = Path(__file__).resolve().parents[2]
DOMAIN_APPS = {"fiches", "transcriptions", "audits", "automation"}


def imported_top_packages(package: str) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in (ROOT / package).rglob("*.py"):
        if "migrations" in path.parts:
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        names = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
        found[str(path.relative_to(ROOT))] = names
    return found


@pytest.mark.parametrize("package", ["realtime", "accounts"])
def test_the_package_imports_no_domain_app(package):
    offenders = {
        path: sorted(names & DOMAIN_APPS)
        for path, names in imported_top_packages(package).items()
        if names & DOMAIN_APPS
    }
    assert offenders == {}


def test_the_apps_registered_their_channels():
    assert {"private-fiche-", "private-job-", "private-job-automation-run-"} <= set(registered_channel_prefixes())
    object_id, _ = channel_authorizer_for("private-job-automation-run-42")
    assert object_id == "42"  # the longest prefix wins over private-job-
    assert channel_authorizer_for("private-job-") is None  # no object id
    assert channel_authorizer_for("private-unknown-1") is None
