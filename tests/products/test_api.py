"""The products API: CRUD in the documented shape, the order of ``audit_config_ids`` kept and a
PATCH replacing it, validation naming the field, duplicates (up to case and accents) as 409
``product_exists``, grants (products.read for reads, products.write for writes), filters and
pagination; and the admin's product pages."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest
from django.db import IntegrityError, transaction

from accounts.models import User
from audits.models import AuditConfig
from products import services
from products.models import Product, ProductAuditConfig
from products.selectors import audit_config_ids_of

pytestmark = pytest.mark.django_db

PRODUCTS = "/api/products"
KEYS = {"id", "name", "code", "description", "is_active", "audit_config_ids", "created_at", "updated_at"}


def detail(product_id: int) -> str:
    return f"/api/products/{product_id}"


def error_of(response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message", "details"}, body
    return body["error"]


@pytest.fixture
def editor(make_role, make_user):
    return make_user(make_role("product-editor", products=("rw", "ALL")), email="products@example.com")


@pytest.fixture
def reader(make_role, make_user):
    return make_user(make_role("product-reader", products=("r", "ALL")), email="reader@example.com")


@pytest.fixture
def outsider(make_role, make_user):
    """Every audit grant, none on products."""
    return make_user(
        make_role("auditor", audits=("rw", "ALL"), audit_configs=("rw", "ALL")), email="auditor@example.com"
    )


@pytest.fixture
def configs(make_config) -> dict[str, int]:
    return {name: make_config(name).pk for name in ("Vente", "Rétractation", "Qualité")}


@pytest.fixture
def product(configs) -> Product:
    return services.product_create(
        data={
            "name": "Santé Essentiel",
            "code": "SANTE-ESS",
            "description": "Mutuelle de base.",
            "audit_config_ids": [configs["Vente"], configs["Qualité"]],
        }
    )


# --- CRUD ---------------------------------------------------------------------------------------------------------


def test_create_read_update_delete_in_the_documented_shape(configs, editor, auth_client):
    client = auth_client(editor)
    ids = [configs["Qualité"], configs["Vente"], configs["Rétractation"]]
    payload = {"name": "Santé Sérénité", "code": "sante-serenite", "description": "Formule 3.", "audit_config_ids": ids}
    response = client.post(PRODUCTS, payload, format="json")
    assert response.status_code == 201, response.content
    created = response.json()
    assert set(created) == KEYS
    assert {k: v for k, v in created.items() if k not in ("id", "created_at", "updated_at")} == {
        "name": "Santé Sérénité",
        "code": "sante-serenite",
        "description": "Formule 3.",
        "is_active": True,
        "audit_config_ids": ids,  # the order given, not the ids' order
    }
    assert isinstance(created["id"], int)
    assert datetime.fromisoformat(created["created_at"]) <= datetime.fromisoformat(created["updated_at"])
    links = ProductAuditConfig.objects.filter(product_id=created["id"]).order_by("position")
    assert [(link.position, link.audit_config_id) for link in links] == [(1, ids[0]), (2, ids[1]), (3, ids[2])]

    assert client.get(detail(created["id"])).json() == created

    response = client.patch(detail(created["id"]), {"description": "Formule 4.", "is_active": False}, format="json")
    assert response.status_code == 200, response.content
    updated = response.json()
    assert {**created, "description": "Formule 4.", "is_active": False, "updated_at": updated["updated_at"]} == updated
    assert updated["updated_at"] > created["updated_at"]
    assert client.get(detail(created["id"])).json() == updated

    response = client.delete(detail(created["id"]))
    assert response.status_code == 204 and not response.content
    response = client.get(detail(created["id"]))
    assert response.status_code == 404
    assert error_of(response)["code"] == "product_not_found"
    assert not ProductAuditConfig.objects.exists()
    assert AuditConfig.objects.count() == 3  # the audit configs stay


def test_defaults_and_no_configs(editor, auth_client):
    response = auth_client(editor).post(PRODUCTS, {"name": "Obsèques", "code": "OBS"}, format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["description"], body["is_active"], body["audit_config_ids"]) == ("", True, [])


def test_a_patch_replaces_the_config_list_and_keeps_the_other_fields(product, configs, editor, auth_client):
    client = auth_client(editor)
    before = client.get(detail(product.pk)).json()
    new_ids = [configs["Rétractation"], configs["Vente"]]
    response = client.patch(detail(product.pk), {"audit_config_ids": new_ids}, format="json")
    assert response.status_code == 200, response.content
    after = response.json()
    assert after["audit_config_ids"] == new_ids
    assert {k: after[k] for k in ("name", "code", "description", "is_active")} == {
        k: before[k] for k in ("name", "code", "description", "is_active")
    }
    assert after["updated_at"] > before["updated_at"]

    response = client.patch(detail(product.pk), {"audit_config_ids": []}, format="json")
    assert response.status_code == 200 and response.json()["audit_config_ids"] == []
    assert not ProductAuditConfig.objects.filter(product=product).exists()


def test_an_empty_patch_changes_nothing(product, editor, auth_client):
    client = auth_client(editor)
    before = client.get(detail(product.pk)).json()
    response = client.patch(detail(product.pk), {}, format="json")
    assert response.status_code == 200
    assert response.json() == before


def test_a_product_may_keep_inactive_configs(configs, make_config, editor, auth_client):
    inactive = make_config("Ancienne grille", is_active=False).pk
    response = auth_client(editor).post(
        PRODUCTS, {"name": "Auto", "code": "AUTO", "audit_config_ids": [inactive, configs["Vente"]]}, format="json"
    )
    assert response.status_code == 201, response.content
    assert response.json()["audit_config_ids"] == [inactive, configs["Vente"]]


def test_an_unknown_product_is_404(editor, auth_client):
    client = auth_client(editor)
    for method in ("get", "patch", "delete"):
        response = getattr(client, method)(detail(999999), {"name": "x"}, format="json")
        assert response.status_code == 404, (method, response.content)
        error = error_of(response)
        assert error["code"] == "product_not_found" and error["details"] == {"product_id": 999999}


# --- Validation -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        pytest.param({"name": "", "code": "X"}, "name", id="empty-name"),
        pytest.param({"name": "   ", "code": "X"}, "name", id="blank-name"),
        pytest.param({"code": "X"}, "name", id="no-name"),
        pytest.param({"name": "X" * 201, "code": "X"}, "name", id="long-name"),
        pytest.param({"name": "Auto", "code": ""}, "code", id="empty-code"),
        pytest.param({"name": "Auto"}, "code", id="no-code"),
        pytest.param({"name": "Auto", "code": "a b"}, "code", id="code-with-a-space"),
        pytest.param({"name": "Auto", "code": "-auto"}, "code", id="code-starting-with-a-dash"),
        pytest.param({"name": "Auto", "code": "é"}, "code", id="code-with-an-accent"),
        pytest.param({"name": "Auto", "code": "A" * 65}, "code", id="long-code"),
        pytest.param({"name": "Auto", "code": "A", "audit_config_ids": "1"}, "audit_config_ids", id="ids-not-a-list"),
        pytest.param({"name": "Auto", "code": "A", "audit_config_ids": ["x"]}, "audit_config_ids", id="id-not-int"),
        pytest.param({"name": "Auto", "code": "A", "audit_config_ids": [0]}, "audit_config_ids", id="id-zero"),
        pytest.param({"name": "Auto", "code": "A", "is_active": "maybe"}, "is_active", id="is-active-not-bool"),
    ],
)
def test_invalid_products_are_400_naming_the_field(payload, field, editor, auth_client):
    response = auth_client(editor).post(PRODUCTS, payload, format="json")
    assert response.status_code == 400, response.content
    error = error_of(response)
    assert error["code"] == "validation_error"
    assert error["details"][field], error
    assert error["message"].startswith(f"{field}:"), error
    assert not Product.objects.exists()


def test_unknown_audit_config_ids_are_400_listing_them(configs, editor, auth_client):
    unknown = [max(configs.values()) + 100, max(configs.values()) + 7]
    response = auth_client(editor).post(
        PRODUCTS, {"name": "Auto", "code": "AUTO", "audit_config_ids": [configs["Vente"], *unknown]}, format="json"
    )
    assert response.status_code == 400, response.content
    error = error_of(response)
    assert error["code"] == "invalid_input"
    assert error["details"]["audit_config_ids"] and error["details"]["unknown_ids"] == unknown
    assert error["message"].startswith("audit_config_ids:")
    assert not Product.objects.exists()


def test_a_repeated_audit_config_id_is_400(configs, editor, auth_client):
    ids = [configs["Vente"], configs["Qualité"], configs["Vente"]]
    response = auth_client(editor).post(
        PRODUCTS, {"name": "Auto", "code": "AUTO", "audit_config_ids": ids}, format="json"
    )
    assert response.status_code == 400, response.content
    error = error_of(response)
    assert error["details"]["duplicate_ids"] == [configs["Vente"]]
    assert not Product.objects.exists()


@pytest.mark.parametrize(
    ("patch", "field", "code"),
    [
        ({"name": " "}, "name", "validation_error"),
        ({"code": "no spaces"}, "code", "validation_error"),
        ({"audit_config_ids": [999999]}, "audit_config_ids", "invalid_input"),
        ({"is_active": None}, "is_active", "validation_error"),
    ],
)
def test_an_invalid_patch_is_400_and_changes_nothing(patch, field, code, product, editor, auth_client):
    client = auth_client(editor)
    before = client.get(detail(product.pk)).json()
    response = client.patch(detail(product.pk), {**patch, "description": "Changed."}, format="json")
    assert response.status_code == 400, response.content
    error = error_of(response)
    assert error["code"] == code and field in error["details"], error
    assert client.get(detail(product.pk)).json() == before


def test_unknown_fields_are_ignored(editor, auth_client):
    response = auth_client(editor).post(PRODUCTS, {"name": "Auto", "code": "AUTO", "colour": "red"}, format="json")
    assert response.status_code == 201, response.content
    assert set(response.json()) == KEYS


# --- Duplicates -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        pytest.param({"name": "santé essentiel", "code": "OTHER"}, "name", id="name-other-case"),
        pytest.param({"name": "  SANTE ESSENTIEL ", "code": "OTHER"}, "name", id="name-without-accents"),
        pytest.param({"name": "Autre", "code": "sante-ess"}, "code", id="code-other-case"),
    ],
)
def test_a_duplicate_name_or_code_is_409(payload, field, product, editor, auth_client):
    response = auth_client(editor).post(PRODUCTS, payload, format="json")
    assert response.status_code == 409, response.content
    error = error_of(response)
    assert error["code"] == "product_exists"
    assert error["details"]["field"] == field and error["details"][field]
    assert error["details"]["product_id"] == product.pk
    assert error["message"].startswith(f"{field}:")
    assert Product.objects.count() == 1


def test_renaming_onto_another_product_is_409_and_onto_itself_is_fine(product, editor, auth_client):
    client = auth_client(editor)
    other = client.post(PRODUCTS, {"name": "Auto", "code": "AUTO"}, format="json").json()
    for patch, field in (({"name": "SANTÉ essentiel"}, "name"), ({"code": "Sante-Ess"}, "code")):
        response = client.patch(detail(other["id"]), patch, format="json")
        assert response.status_code == 409, response.content
        assert error_of(response)["details"]["field"] == field
    assert client.get(detail(other["id"])).json() == other

    response = client.patch(detail(product.pk), {"name": "SANTÉ ESSENTIEL", "code": "sante-ess"}, format="json")
    assert response.status_code == 200, response.content
    assert (response.json()["name"], response.json()["code"]) == ("SANTÉ ESSENTIEL", "sante-ess")


def test_the_database_refuses_a_case_duplicate_written_outside_the_services(product):
    """The fence behind the services' check: the case-insensitive unique constraints."""
    for fields in ({"name": "SANTÉ ESSENTIEL", "code": "x1"}, {"name": "Autre", "code": "sante-ESS"}):
        with pytest.raises(IntegrityError), transaction.atomic():
            Product.objects.create(**fields)


# --- Grants ---------------------------------------------------------------------------------------------------------


def routes(product: Product) -> list[tuple[str, str, str]]:
    return [
        ("get", PRODUCTS, "read"),
        ("post", PRODUCTS, "write"),
        ("get", detail(product.pk), "read"),
        ("patch", detail(product.pk), "write"),
        ("delete", detail(product.pk), "write"),
    ]


def test_product_routes_need_a_token(product, api_client):
    for method, url, _ in routes(product):
        response = getattr(api_client, method)(url, {"name": "Changed", "code": "CHANGED"}, format="json")
        assert response.status_code == 401, (method, url)
        assert error_of(response)["code"] == "not_authenticated"


def test_product_routes_need_the_products_grant(product, outsider, reader, auth_client):
    """audits.* and audit-configs.* are not products.*; products.read is not products.write."""
    for method, url, action in routes(product):
        response = getattr(auth_client(outsider), method)(url, {"name": "Changed", "code": "CHANGED"}, format="json")
        assert response.status_code == 403, (method, url)
        error = error_of(response)
        assert error["code"] == "permission_denied" and error["details"] == {"required": f"products.{action}"}

        response = getattr(auth_client(reader), method)(url, {"name": "Changed", "code": "CHANGED"}, format="json")
        if action == "read":
            assert response.status_code == 200, (method, url)
        else:
            assert response.status_code == 403, (method, url)
            assert error_of(response)["details"] == {"required": "products.write"}
    product.refresh_from_db()
    assert (product.name, product.code) == ("Santé Essentiel", "SANTE-ESS")
    assert Product.objects.count() == 1


# --- List, filters, pagination --------------------------------------------------------------------------------------


@pytest.fixture
def catalogue(configs) -> dict[str, Product]:
    rows = [
        ("Santé Essentiel", "SANTE-ESS", True, [configs["Vente"]]),
        ("Santé Sérénité", "SANTE-SER", True, [configs["Qualité"], configs["Vente"]]),
        ("Obsèques", "OBS", False, []),
        ("Auto Tiers", "AUTO-T", True, [configs["Rétractation"]]),
    ]
    return {
        name: services.product_create(
            data={"name": name, "code": code, "is_active": is_active, "audit_config_ids": ids}
        )
        for name, code, is_active, ids in rows
    }


def test_the_list_by_name_with_config_ids_in_order(catalogue, configs, reader, auth_client, django_assert_num_queries):
    client = auth_client(reader)
    client.get(PRODUCTS)  # warm the grants cache: the count below is the endpoint's own
    with django_assert_num_queries(3):  # count, page, the page's config links: no query per product
        body = client.get(PRODUCTS).json()
    assert body["count"] == 4 and body["next"] is None and body["previous"] is None
    assert [(p["name"], p["audit_config_ids"]) for p in body["results"]] == [
        ("Auto Tiers", [configs["Rétractation"]]),
        ("Obsèques", []),
        ("Santé Essentiel", [configs["Vente"]]),
        ("Santé Sérénité", [configs["Qualité"], configs["Vente"]]),
    ]
    assert all(set(p) == KEYS for p in body["results"])


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"is_active": "true"}, ["Auto Tiers", "Santé Essentiel", "Santé Sérénité"]),
        ({"is_active": "false"}, ["Obsèques"]),
        ({"q": "santé"}, ["Santé Essentiel", "Santé Sérénité"]),
        ({"q": "SER"}, ["Santé Sérénité"]),  # the code
        ({"q": "auto-t"}, ["Auto Tiers"]),
        ({"q": "sant", "is_active": "true"}, ["Santé Essentiel", "Santé Sérénité"]),
        ({"q": "obs", "is_active": "true"}, []),
        ({"q": "nothing"}, []),
    ],
)
def test_list_filters(query, expected, catalogue, reader, auth_client):
    response = auth_client(reader).get(PRODUCTS, query)
    assert response.status_code == 200, response.content
    assert [p["name"] for p in response.json()["results"]] == expected
    assert response.json()["count"] == len(expected)


def test_a_bad_filter_is_400(catalogue, reader, auth_client):
    response = auth_client(reader).get(PRODUCTS, {"is_active": "maybe"})
    assert response.status_code == 400
    assert "is_active" in error_of(response)["details"]


def test_the_list_is_paginated(catalogue, reader, auth_client):
    page = auth_client(reader).get(PRODUCTS, {"limit": 2, "offset": 1}).json()
    assert page["count"] == 4 and [p["name"] for p in page["results"]] == ["Obsèques", "Santé Essentiel"]
    assert page["next"] and page["previous"]


def test_the_list_is_at_api_products_like_every_other_collection(catalogue, reader, auth_client):
    assert auth_client(reader).get("/api/products").json()["count"] == 4
    assert auth_client(reader).get("/api/products/").status_code == 404  # no trailing slashes in this API


# --- Admin ----------------------------------------------------------------------------------------------------------


@pytest.fixture
def staff(db) -> User:
    return User.objects.create_superuser(email="ops@example.com", password="ops-pass-2026")


def test_the_admin_lists_searches_and_filters_products(catalogue, staff, client):
    client.force_login(staff)
    page = client.get("/admin/products/product/").content.decode()
    assert "Santé Sérénité" in page and "Obsèques" in page
    page = client.get("/admin/products/product/?q=ser").content.decode()
    assert "Santé Sérénité" in page and "Obsèques" not in page
    page = client.get("/admin/products/product/?is_active__exact=0").content.decode()
    assert "Obsèques" in page and "Santé Sérénité" not in page


def test_the_admin_edits_configs_inline_in_position_order(catalogue, configs, staff, client):
    client.force_login(staff)
    product = catalogue["Santé Sérénité"]
    page = client.get(f"/admin/products/product/{product.pk}/change/")
    assert page.status_code == 200 and b"position" in page.content
    links = list(ProductAuditConfig.objects.filter(product=product).order_by("position"))
    form = {
        "name": product.name,
        "code": product.code,
        "description": "",
        "is_active": "on",
        "config_links-TOTAL_FORMS": "3",
        "config_links-INITIAL_FORMS": "2",
        "config_links-MIN_NUM_FORMS": "0",
        "config_links-MAX_NUM_FORMS": "1000",
        "config_links-0-id": str(links[0].pk),
        "config_links-0-product": str(product.pk),
        "config_links-0-position": "2",
        "config_links-0-audit_config": str(links[0].audit_config_id),
        "config_links-1-id": str(links[1].pk),
        "config_links-1-product": str(product.pk),
        "config_links-1-position": "3",
        "config_links-1-audit_config": str(links[1].audit_config_id),
        "config_links-2-product": str(product.pk),
        "config_links-2-position": "1",
        "config_links-2-audit_config": str(configs["Rétractation"]),
    }
    response = client.post(f"/admin/products/product/{product.pk}/change/", form)
    assert response.status_code == 302, (
        response.context["errors"],
        [f.errors for f in response.context["inline_admin_formsets"][0].formset.forms],
        response.context["inline_admin_formsets"][0].formset.non_form_errors(),
    )
    product.refresh_from_db()
    assert audit_config_ids_of(product) == [configs["Rétractation"], configs["Qualité"], configs["Vente"]]


def test_the_admin_refuses_a_name_another_product_has_up_to_accents(catalogue, staff, client):
    client.force_login(staff)
    form = {
        "name": "sante serenite",
        "code": "NEW",
        "description": "",
        "is_active": "on",
        "config_links-TOTAL_FORMS": "0",
        "config_links-INITIAL_FORMS": "0",
        "config_links-MIN_NUM_FORMS": "0",
        "config_links-MAX_NUM_FORMS": "1000",
    }
    response = client.post("/admin/products/product/add/", form)
    assert response.status_code == 200  # the form again, with the error
    assert "already has this name" in response.content.decode()
    assert Product.objects.count() == 4
