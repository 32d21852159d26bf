"""Effective grants (union over roles), HasGrant, scope_queryset and can_access."""

from types import SimpleNamespace

import pytest
from rest_framework.response import Response
from rest_framework.test import APIRequestFactory, force_authenticate
from rest_framework.views import APIView

from accounts.grants import Grant, Scope, effective_grants, forget_grants, merge_grants, scope_for
from accounts.models import User
from accounts.permissions import HasGrant, can_access, scope_queryset

pytestmark = pytest.mark.django_db


# --- merge_grants / effective_grants ------------------------------------------------------


def test_merge_grants_ors_flags_and_takes_the_widest_scope_per_action():
    merged = merge_grants(
        [
            ("fiches", True, False, "SELF"),
            ("fiches", False, True, "GROUP"),
            ("audits", True, False, "ALL"),
            ("audits", True, True, "SELF"),
            ("chat", True, False, "GROUP"),
            ("chat", True, False, "SELF"),
        ]
    )
    assert merged == {
        "fiches": Grant("fiches", True, True, Scope.SELF, Scope.GROUP),
        "audits": Grant("audits", True, True, Scope.ALL, Scope.SELF),
        "chat": Grant("chat", True, False, Scope.GROUP, None),
    }


def test_a_write_only_all_role_does_not_widen_another_roles_self_read(make_role, make_user):
    reader = make_role("self-reader", fiches=("r", "SELF"))
    writer = make_role("all-writer", fiches=("w", "ALL"))
    user = make_user(reader, writer, crm_user_id="u-1")

    assert scope_for(user, "fiches", "read") == Scope.SELF
    assert scope_for(user, "fiches", "write") == Scope.ALL
    mine = SimpleNamespace(groupe="Lyon-2", crm_user_id="u-1")
    theirs = SimpleNamespace(groupe="Lyon-2", crm_user_id="u-2")
    assert can_access(user, "fiches", mine) and not can_access(user, "fiches", theirs)
    assert can_access(user, "fiches", theirs, action="write")
    assert effective_grants(user)["fiches"].as_claim() == {
        "key": "fiches",
        "read": True,
        "write": True,
        "scope": "SELF",
        "read_scope": "SELF",
        "write_scope": "ALL",
    }


def test_merge_grants_row_without_read_or_write_grants_nothing_and_does_not_widen():
    merged = merge_grants(
        [
            ("fiches", True, False, "SELF"),
            ("fiches", False, False, "ALL"),  # an empty row: must not widen fiches to ALL
            ("users", False, False, "ALL"),  # an empty row alone: no grant at all
        ]
    )
    assert merged == {"fiches": Grant("fiches", True, False, Scope.SELF, None)}


def test_effective_grants_union_across_roles(make_role, make_user):
    agent = make_role("agent", fiches=("r", "SELF"), audits=("r", "SELF"))
    manager = make_role("manager", fiches=("rw", "GROUP"), audit_configs=("r", "ALL"))
    empty = make_role("empty", fiches=("", "ALL"), users=("", "ALL"))
    user = make_user(agent, manager, empty)

    grants = effective_grants(user)

    assert grants == {
        "fiches": Grant("fiches", True, True, Scope.GROUP, Scope.GROUP),
        "audits": Grant("audits", True, False, Scope.SELF, None),
        "audit-configs": Grant("audit-configs", True, False, Scope.ALL, None),
    }
    assert [g.as_claim() for g in grants.values()][0] == {
        "key": "fiches",
        "read": True,
        "write": True,
        "scope": "GROUP",
        "read_scope": "GROUP",
        "write_scope": "GROUP",
    }


def test_effective_grants_reflects_role_changes_after_forget(make_role, make_user):
    viewer = make_role("viewer", fiches=("r", "ALL"))
    user = make_user(viewer)
    assert "fiches" in effective_grants(user)
    user.roles.clear()
    forget_grants(user)
    assert effective_grants(user) == {}


def test_inactive_user_has_no_grants(make_role, make_user):
    user = make_user(make_role("admin", fiches=("rw", "ALL"), users=("rw", "ALL")), is_active=False)
    assert effective_grants(user) == {}
    assert effective_grants(None) == {}


# --- HasGrant -----------------------------------------------------------------------------


class FichesReadView(APIView):
    permission_classes = [HasGrant("fiches", "read")]

    def get(self, request):
        return Response({"ok": True})


class FichesWriteView(APIView):
    permission_classes = [HasGrant("fiches", "write")]

    def post(self, request):
        return Response({"ok": True})


def _call(view_cls, user, method="get"):
    factory = APIRequestFactory()
    request = getattr(factory, method)("/x", format="json")
    if user is not None:
        force_authenticate(request, user=user)
    response = view_cls.as_view()(request)
    response.render()
    return response


def test_has_grant_allows_user_with_grant(make_role, make_user):
    user = make_user(make_role("agent", fiches=("r", "SELF")))
    response = _call(FichesReadView, user)
    assert response.status_code == 200
    assert response.data == {"ok": True}


def test_has_grant_denies_without_grant_with_envelope(make_role, make_user):
    user = make_user(make_role("auditor", audits=("rw", "ALL"), fiches=("", "ALL")))
    response = _call(FichesReadView, user)
    assert response.status_code == 403
    assert response.data["error"]["code"] == "permission_denied"
    assert response.data["error"]["details"]["required"] == "fiches.read"


def test_has_grant_read_only_user_cannot_write(make_role, make_user):
    user = make_user(make_role("viewer", fiches=("r", "ALL")))
    response = _call(FichesWriteView, user, method="post")
    assert response.status_code == 403
    assert response.data["error"]["details"]["required"] == "fiches.write"


def test_has_grant_unauthenticated_is_401(db):
    response = _call(FichesReadView, None)
    assert response.status_code == 401
    assert response.data["error"]["code"] == "not_authenticated"


def test_has_grant_rejects_unknown_key_and_action():
    with pytest.raises(ValueError):
        HasGrant("fichez", "read")
    with pytest.raises(ValueError):
        HasGrant("fiches", "delete")


# --- scope_queryset / can_access ------------------------------------------------------------


@pytest.fixture
def rows(make_user):
    """Users standing in for scoped rows: first_name is the group, crm_user_id the owner."""
    return {
        "lyon2_417": make_user(email="r1@rows.test", first_name="Lyon-2", crm_user_id="u-417"),
        "lyon2_418": make_user(email="r2@rows.test", first_name="Lyon-2", crm_user_id="u-418"),
        "paris_431": make_user(email="r3@rows.test", first_name="Paris-Est", crm_user_id="u-431"),
        "lyon1_none": make_user(email="r4@rows.test", first_name="Lyon-1", crm_user_id=None),
    }


def _visible(viewer, **kwargs):
    qs = scope_queryset(
        User.objects.filter(email__endswith="@rows.test"),
        viewer,
        "fiches",
        group_field="first_name",
        user_field="crm_user_id",
        **kwargs,
    )
    return set(qs.values_list("email", flat=True))


ALL_ROWS = {"r1@rows.test", "r2@rows.test", "r3@rows.test", "r4@rows.test"}
DICT_417 = {"groupe": "Lyon-2", "crm_user_id": "u-417"}
DICT_431 = {"groupe": "Paris-Est", "crm_user_id": "u-431"}
OBJ_417 = SimpleNamespace(groupe="Lyon-2", crm_user_id="u-417")
OBJ_431 = SimpleNamespace(groupe="Paris-Est", crm_user_id="u-431")
OBJ_NO_OWNER = SimpleNamespace(groupe=None, crm_user_id=None)


def test_scope_all_sees_everything(rows, make_role, make_user):
    viewer = make_user(make_role("viewer", fiches=("r", "ALL")))
    assert _visible(viewer) == ALL_ROWS
    assert all(can_access(viewer, "fiches", o) for o in (DICT_417, DICT_431, OBJ_417, OBJ_431, OBJ_NO_OWNER))


def test_scope_group_sees_own_groups_only(rows, make_role, make_user):
    manager = make_user(make_role("manager", fiches=("rw", "GROUP")), groupes=["Lyon-2", "Lyon-1"])
    assert _visible(manager) == {"r1@rows.test", "r2@rows.test", "r4@rows.test"}
    assert can_access(manager, "fiches", DICT_417)
    assert can_access(manager, "fiches", OBJ_417)
    assert not can_access(manager, "fiches", DICT_431)
    assert not can_access(manager, "fiches", OBJ_431)
    assert not can_access(manager, "fiches", OBJ_NO_OWNER)
    assert not can_access(manager, "fiches", {})


def test_scope_group_without_groupes_sees_nothing(rows, make_role, make_user):
    manager = make_user(make_role("manager", fiches=("rw", "GROUP")), groupes=[])
    assert _visible(manager) == set()
    assert not can_access(manager, "fiches", DICT_417)
    assert not can_access(manager, "fiches", OBJ_NO_OWNER)


def test_scope_self_sees_own_rows_only(rows, make_role):
    agent = rows["lyon2_417"]  # crm_user_id is unique: the u-417 row's user is the agent
    agent.roles.set([make_role("agent", fiches=("r", "SELF"))])
    agent.groupes = ["Lyon-2"]
    agent.save()
    assert _visible(agent) == {"r1@rows.test"}
    assert can_access(agent, "fiches", DICT_417)
    assert can_access(agent, "fiches", OBJ_417)
    assert not can_access(agent, "fiches", {"groupe": "Lyon-2", "crm_user_id": "u-418"})
    assert not can_access(agent, "fiches", OBJ_431)


def test_scope_self_without_crm_user_id_sees_nothing(rows, make_role, make_user):
    agent = make_user(make_role("agent", fiches=("r", "SELF")), crm_user_id=None)
    assert _visible(agent) == set()  # in particular not the row whose crm_user_id is NULL
    assert not can_access(agent, "fiches", OBJ_NO_OWNER)
    assert not can_access(agent, "fiches", {"groupe": "Lyon-1", "crm_user_id": None})
    assert not can_access(agent, "fiches", DICT_417)


def test_no_grant_sees_nothing(rows, make_role, make_user):
    other = make_user(make_role("auditor", audits=("rw", "ALL")))
    assert _visible(other) == set()
    assert not can_access(other, "fiches", DICT_417)


def test_scope_respects_action(rows, make_role, make_user):
    """Read ALL but no write: the write scope is empty."""
    viewer = make_user(make_role("viewer", fiches=("r", "ALL")))
    assert _visible(viewer, action="write") == set()
    assert not can_access(viewer, "fiches", DICT_417, action="write")


def test_scope_is_widest_across_roles(rows, make_role):
    user = rows["paris_431"]
    user.roles.set([make_role("agent", fiches=("r", "SELF")), make_role("manager", fiches=("r", "GROUP"))])
    user.groupes = ["Lyon-2"]
    user.save()
    # GROUP wins over SELF: the Lyon-2 rows, not the user's own Paris-Est row.
    assert _visible(user) == {"r1@rows.test", "r2@rows.test"}
    assert not can_access(user, "fiches", DICT_431)
