"""``audit_config_for_produit``: the audit config a fiche's product picks when automation or a batch
names none (the first active config by position of the active product whose name or code equals
the fiche's ``produit`` up to case, accents and surrounding spaces); and its batch form."""

from __future__ import annotations

import pytest

from audits.models import AuditConfig
from products import services
from products.models import Product
from products.selectors import audit_config_for_produit, audit_configs_for_produits, fold

pytestmark = pytest.mark.django_db


@pytest.fixture
def configs(make_config) -> dict[str, int]:
    return {
        "old": make_config("Ancienne grille", is_active=False).pk,
        "vente": make_config("Vente").pk,
        "qualite": make_config("Qualité").pk,
    }


@pytest.fixture
def products(configs) -> dict[str, int]:
    rows = [
        ("Santé Essentiel", "SANTE-ESS", True, [configs["old"], configs["qualite"], configs["vente"]]),
        ("Obsèques", "OBS", False, [configs["vente"]]),
        ("Auto Tiers", "AUTO-T", True, [configs["old"]]),
        ("Habitation", "HAB", True, []),
    ]
    return {
        name: services.product_create(
            data={"name": name, "code": code, "is_active": active, "audit_config_ids": ids}
        ).pk
        for name, code, active, ids in rows
    }


@pytest.mark.parametrize(
    "produit",
    [
        "Santé Essentiel",  # the exact name
        "sante essentiel",  # another case, no accents
        "SANTÉ ESSENTIEL",
        "  Santé   Essentiel ",  # spaces around and doubled
        "Sante\u0301 Essentiel",  # a combining accent (NFD) rather than é
        "SANTE-ESS",  # the code
        "sante-ess",
    ],
)
def test_the_first_active_config_by_position_skipping_an_inactive_one(produit, products, configs):
    assert audit_config_for_produit(produit) == configs["qualite"]


def test_position_order_not_id_order(configs):
    services.product_create(
        data={"name": "Prévoyance", "code": "PREV", "audit_config_ids": [configs["vente"], configs["qualite"]]}
    )
    assert configs["vente"] < configs["qualite"]
    assert audit_config_for_produit("prevoyance") == configs["vente"]
    services.product_update(
        product_id=Product.objects.get(code="PREV").pk,
        patch={"audit_config_ids": [configs["qualite"], configs["vente"]]},
    )
    assert audit_config_for_produit("prevoyance") == configs["qualite"]


@pytest.mark.parametrize(
    "produit",
    [
        pytest.param("Obsèques", id="inactive-product"),
        pytest.param("OBS", id="inactive-product-by-code"),
        pytest.param("Auto Tiers", id="only-inactive-configs"),
        pytest.param("Habitation", id="no-configs"),
        pytest.param("Santé", id="a-prefix-is-not-a-match"),
        pytest.param("Santé Essentiel Plus", id="unknown"),
        pytest.param("", id="empty"),
        pytest.param("   ", id="spaces"),
        pytest.param(None, id="none"),
    ],
)
def test_no_config(produit, products):
    assert audit_config_for_produit(produit) is None


def test_reactivating_a_config_or_a_product_takes_effect(products, configs):
    AuditConfig.objects.filter(pk=configs["old"]).update(is_active=True)
    assert audit_config_for_produit("Santé Essentiel") == configs["old"]
    assert audit_config_for_produit("auto tiers") == configs["old"]
    Product.objects.filter(pk=products["Obsèques"]).update(is_active=True)
    assert audit_config_for_produit("obseques") == configs["vente"]


def test_a_name_match_wins_over_another_products_code(configs):
    services.product_create(data={"name": "Vie", "code": "VIE-1", "audit_config_ids": [configs["vente"]]})
    services.product_create(data={"name": "Vie Plus", "code": "vie", "audit_config_ids": [configs["qualite"]]})
    assert audit_config_for_produit("VIE") == configs["vente"]
    assert audit_config_for_produit("vie-1") == configs["vente"]


def test_one_or_two_queries(products, configs, django_assert_num_queries):
    with django_assert_num_queries(2):
        assert audit_config_for_produit("Santé Essentiel") == configs["qualite"]
    with django_assert_num_queries(1):  # no product matched: no second query
        assert audit_config_for_produit("Inconnu") is None
    with django_assert_num_queries(0):
        assert audit_config_for_produit("") is None


def test_the_batch_form_answers_many_fiches_in_two_queries(products, configs, django_assert_num_queries):
    with django_assert_num_queries(2):
        answer = audit_configs_for_produits(["Santé Essentiel", "sante-ess", "Obsèques", "Inconnu", None, "", "HAB"])
    assert answer == {
        "Santé Essentiel": configs["qualite"],
        "sante-ess": configs["qualite"],
        "Obsèques": None,
        "Inconnu": None,
        "HAB": None,
    }


@pytest.mark.parametrize(
    ("text", "folded"),
    [
        ("Santé Essentiel", "sante essentiel"),
        ("  ÉPARGNE\tRetraite  ", "epargne retraite"),
        ("Straße", "strasse"),
        ("ﬁnance", "finance"),  # NFKD: the ligature
    ],
)
def test_fold(text, folded):
    assert fold(text) == folded
