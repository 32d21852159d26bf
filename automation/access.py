"""Whose grants bound an automation run, and which fiches that lets it touch.

A schedule has an **owner**; a run acts for that owner (``AutomationRun.owner``, copied from the
schedule when the run is created) with the owner's grants **as they are at each step** (a role change
or a deactivation applies to the runs going on). A fiche is in a run's scope when the owner may, for
every key the run's steps use:

- ``fiches`` read (selection and the details fetch): always;
- ``transcriptions`` write: when the run transcribes (``runTranscription``);
- ``audits`` write: when the run audits (``runAudits``).

Scopes are those of ``accounts.permissions`` (SELF: ``crm_user_id``; GROUP: ``groupes``; ALL). A fiche
id that is not in the cache cannot be placed in a SELF or GROUP scope without asking the CRM (a side
effect the scope must come before): it is in scope only for an owner whose every needed grant is ALL.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from django.db.models import QuerySet

from accounts.grants import Action, Scope, scope_for
from accounts.permissions import can_access, scope_queryset
from fiches.models import FicheCache

if TYPE_CHECKING:
    from accounts.models import User

Need = tuple[str, Action]

# Reasons and errors that name no fiche, no group and no user data.
OUT_OF_SCOPE = "not in the scope of the schedule's owner, or unknown"
NO_OWNER = "this schedule has no owner: no fiche is in its scope (set an owner)"
OWNER_INACTIVE = "the schedule's owner is deactivated: nothing was fetched"


def needs(config: Mapping[str, Any]) -> list[Need]:
    """The grants a run of ``config`` (a schedule's settings, snake_case) uses on each fiche."""
    wanted: list[Need] = [("fiches", "read")]
    if config.get("run_transcription", True):
        wanted.append(("transcriptions", "write"))
    if config.get("run_audits", True):
        wanted.append(("audits", "write"))
    return wanted


def grant_name(need: Need) -> str:
    return f"{need[0]}.{need[1]}"


def missing_grants(user: User, wanted: Iterable[Need]) -> list[str]:
    """The needed grants ``user`` does not hold at all (``fiches.read``, ...)."""
    return [grant_name(n) for n in wanted if scope_for(user, n[0], n[1]) is None]


def sees_everything(user: User | None, wanted: Iterable[Need]) -> bool:
    """Every needed grant with scope ALL: any fiche id is in scope, cached or not."""
    return user is not None and all(scope_for(user, key, action) == Scope.ALL for key, action in wanted)


def fiche_in_scope(user: User | None, row: FicheCache | None, wanted: Iterable[Need]) -> bool:
    """``row`` (None: not cached) is in ``user``'s scope for every needed grant."""
    wanted = list(wanted)
    if user is None or not user.is_active:
        return False
    if row is None:
        return sees_everything(user, wanted)
    return all(can_access(user, key, row, action=action) for key, action in wanted)


def filter_in_scope(queryset: QuerySet[FicheCache], user: User, wanted: Iterable[Need]) -> QuerySet[FicheCache]:
    """The fiche cache rows of ``queryset`` in ``user``'s scope for every needed grant (in SQL)."""
    for key, action in wanted:
        queryset = scope_queryset(queryset, user, key, action=action)
    return queryset


def ids_in_scope(user: User | None, fiche_ids: Iterable[str], wanted: Iterable[Need]) -> set[str]:
    """The ids of ``fiche_ids`` in ``user``'s scope (uncached ones only for an all-ALL user)."""
    ids, wanted = {str(f) for f in fiche_ids}, list(wanted)
    if user is None or not user.is_active or not ids:
        return set()
    if sees_everything(user, wanted):
        return ids
    rows = filter_in_scope(FicheCache.objects.filter(fiche_id__in=ids), user, wanted)
    return set(rows.values_list("fiche_id", flat=True))


def groupes_in_scope(user: User | None, groupes: Iterable[str], wanted: Iterable[Need]) -> bool:
    """Every named group may hold fiches in ``user``'s scope: ALL, or GROUP with the group among the
    user's groups. SELF: a group only narrows the user's own fiches (the run keeps those), so any
    group passes. A grant the user does not hold refuses every group."""
    groupes, wanted = [str(g) for g in groupes], list(wanted)
    if not groupes:
        return True
    if user is None or not user.is_active:
        return False
    own = set(user.groupes or [])
    for key, action in wanted:
        scope = scope_for(user, key, action)
        if scope is None or (scope == Scope.GROUP and not set(groupes) <= own):
            return False
    return True
