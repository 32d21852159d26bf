"""Reads of products: the API's querysets and dicts, and the product → audit config lookup that
batch audits and automation use when they are given no config."""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from typing import Any

from django.db.models import Prefetch, Q, QuerySet

from core.exceptions import NotFoundError
from products.models import Product, ProductAuditConfig


def fold(text: str) -> str:
    """``text`` compared case- and accent-insensitively: NFKD, combining marks dropped, casefolded,
    spaces stripped and runs of whitespace made one space (``" Santé  Essentiel"`` → ``"sante essentiel"``)."""
    decomposed = unicodedata.normalize("NFKD", text)
    return " ".join("".join(c for c in decomposed if not unicodedata.combining(c)).casefold().split())


# --- The API's reads ----------------------------------------------------------------------------------------------


def products_queryset(*, is_active: bool | None = None, q: str | None = None) -> QuerySet[Product]:
    """Products by name with their config links prefetched in position order (two queries a page).
    ``q`` keeps those whose name or code contains it (case-insensitively)."""
    queryset = Product.objects.prefetch_related(
        Prefetch("config_links", queryset=ProductAuditConfig.objects.order_by("position", "id"))
    ).order_by("name", "id")
    if is_active is not None:
        queryset = queryset.filter(is_active=is_active)
    if q and q.strip():
        queryset = queryset.filter(Q(name__icontains=q.strip()) | Q(code__icontains=q.strip()))
    return queryset


def product_not_found(product_id: object) -> NotFoundError:
    return NotFoundError(f"No product {product_id}.", code="product_not_found", details={"product_id": product_id})


def product_get(product_id: int) -> Product:
    product = products_queryset().filter(pk=product_id).first()
    if product is None:
        raise product_not_found(product_id)
    return product


def audit_config_ids_of(product: Product) -> list[int]:
    """The product's audit config ids in position order (uses the prefetch when there is one)."""
    return [
        link.audit_config_id for link in sorted(product.config_links.all(), key=lambda link: (link.position, link.pk))
    ]


def product_dict(product: Product) -> dict[str, Any]:
    return {
        "id": product.pk,
        "name": product.name,
        "code": product.code,
        "description": product.description,
        "is_active": product.is_active,
        "audit_config_ids": audit_config_ids_of(product),
        "created_at": product.created_at.isoformat(),
        "updated_at": product.updated_at.isoformat(),
    }


def product_conflict(*, name: str, code: str, exclude_id: int | None = None) -> tuple[str, int] | None:
    """``("name"|"code", other_product_id)`` when another product has the same name or code compared
    case- and accent-insensitively (the way ``audit_config_for_produit`` compares), else None."""
    name_key, code_key = fold(name), fold(code)
    others = Product.objects.exclude(pk=exclude_id) if exclude_id is not None else Product.objects.all()
    for other_id, other_name, other_code in others.order_by("id").values_list("id", "name", "code"):
        if fold(other_name) == name_key:
            return "name", other_id
        if fold(other_code) == code_key:
            return "code", other_id
    return None


# --- The product → audit config lookup ------------------------------------------------------------------------------


def audit_configs_for_produits(produits: Iterable[str | None]) -> dict[str, int | None]:
    """``audit_config_for_produit`` for many fiches in two queries: ``{produit: config id or None}``
    for each non-empty ``produit`` given."""
    keys = {produit: fold(produit) for produit in produits if produit and fold(produit)}
    if not keys:
        return {}
    by_name: dict[str, int] = {}
    by_code: dict[str, int] = {}
    active = Product.objects.filter(is_active=True).order_by("id").values_list("id", "name", "code")
    for product_id, name, code in active:
        by_name.setdefault(fold(name), product_id)
        by_code.setdefault(fold(code), product_id)
    product_of = {produit: by_name.get(key) or by_code.get(key) for produit, key in keys.items()}
    matched = {product_id for product_id in product_of.values() if product_id is not None}
    first_config: dict[int, int] = {}
    if matched:
        links = (
            ProductAuditConfig.objects.filter(product_id__in=matched, audit_config__is_active=True)
            .order_by("product_id", "position", "id")
            .values_list("product_id", "audit_config_id")
        )
        for product_id, config_id in links:
            first_config.setdefault(product_id, config_id)
    return {produit: first_config.get(pid) if pid else None for produit, pid in product_of.items()}


def audit_config_for_produit(produit: str | None) -> int | None:
    """The audit config for a fiche whose product (the CRM's ``produit``) is ``produit``: the first
    active config, by position, of the active product whose name (else code) equals ``produit``
    case- and accent-insensitively; None when there is no such product or config (or no ``produit``)."""
    if not produit:
        return None
    return audit_configs_for_produits([produit]).get(produit)
