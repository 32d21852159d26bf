"""Writes of products. Each service owns its transaction; product writes are serialized by one
transaction-scoped advisory lock, so the uniqueness check (case- and accent-insensitive, as the
product lookup compares) cannot race; the case-insensitive unique constraints are the fence."""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from django.db import IntegrityError, connection, transaction

from audits.models import AuditConfig
from core.exceptions import ConflictError, InvalidInput
from products.models import CODE_PATTERN, Product, ProductAuditConfig
from products.selectors import product_conflict, product_not_found

if TYPE_CHECKING:
    from accounts.models import User

logger = logging.getLogger(__name__)

FIELDS = ("name", "code", "description", "is_active")
MAX_LENGTHS = {"name": 200, "code": 64}
CONSTRAINT_FIELDS = {"product_name_unique_ci": "name", "product_code_unique_ci": "code"}


def _invalid(field: str, message: str) -> InvalidInput:
    return InvalidInput(f"{field}: {message}", details={field: [message]})


def _clean_text(field: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _invalid(field, "This field may not be blank.")
    value = value.strip()
    if len(value) > MAX_LENGTHS[field]:
        raise _invalid(field, f"Ensure this field has no more than {MAX_LENGTHS[field]} characters.")
    if field == "code" and not re.match(CODE_PATTERN, value):
        raise _invalid(field, "Letters, digits, '-' and '_' only, starting with a letter or a digit.")
    return value


def _clean_config_ids(raw: Any) -> list[int]:
    """The ids in order; each once; every one an existing audit config (inactive ones are kept)."""
    if not isinstance(raw, Sequence) or isinstance(raw, str | bytes):
        raise _invalid("audit_config_ids", "Expected a list of audit config ids.")
    if not all(isinstance(i, int) and not isinstance(i, bool) for i in raw):
        raise _invalid("audit_config_ids", "Expected a list of integers.")
    ids = list(raw)
    duplicates = sorted(i for i, n in Counter(ids).items() if n > 1)
    if duplicates:
        raise InvalidInput(
            f"audit_config_ids: each audit config may appear once (repeated: {', '.join(map(str, duplicates))}).",
            details={"audit_config_ids": ["Each audit config may appear once."], "duplicate_ids": duplicates},
        )
    known = set(AuditConfig.objects.filter(pk__in=ids).values_list("pk", flat=True))
    unknown = [i for i in ids if i not in known]
    if unknown:
        raise InvalidInput(
            f"audit_config_ids: unknown audit config id(s): {', '.join(map(str, unknown))}.",
            details={"audit_config_ids": ["Unknown audit config id(s)."], "unknown_ids": unknown},
        )
    return ids


def _lock_product_writes() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", ["products:write"])


def _exists(field: str, value: str, other_id: int | None) -> ConflictError:
    message = f"A product with this {field} already exists."
    return ConflictError(
        f"{field}: {message}",
        code="product_exists",
        details={field: [message], "field": field, "value": value, "product_id": other_id},
    )


def _check_unique(product: Product) -> None:
    conflict = product_conflict(name=product.name, code=product.code, exclude_id=product.pk)
    if conflict is not None:
        field, other_id = conflict
        raise _exists(field, getattr(product, field), other_id)


def _save(product: Product, update_fields: list[str] | None = None) -> None:
    """Save in a savepoint: a unique constraint caught here (a write outside the services) is a 409
    and leaves the outer transaction usable."""
    try:
        with transaction.atomic():
            product.save(update_fields=update_fields)
    except IntegrityError as exc:
        constraint = getattr(getattr(exc.__cause__, "diag", None), "constraint_name", None)
        field = CONSTRAINT_FIELDS.get(str(constraint))
        if field is None:
            raise
        raise _exists(field, getattr(product, field), None) from exc


def _replace_configs(product: Product, config_ids: list[int]) -> None:
    ProductAuditConfig.objects.filter(product=product).delete()
    ProductAuditConfig.objects.bulk_create(
        ProductAuditConfig(product=product, audit_config_id=config_id, position=position)
        for position, config_id in enumerate(config_ids, start=1)
    )


@transaction.atomic
def product_create(*, data: Mapping[str, Any], user: User | None = None) -> Product:
    """A product from ``{name, code, description?, is_active?, audit_config_ids?}``."""
    product = Product(
        name=_clean_text("name", data.get("name")),
        code=_clean_text("code", data.get("code")),
        description=str(data.get("description") or ""),
        is_active=bool(data.get("is_active", True)),
    )
    config_ids = _clean_config_ids(data.get("audit_config_ids", []))
    _lock_product_writes()
    _check_unique(product)
    _save(product)
    _replace_configs(product, config_ids)
    logger.info(
        "product_created", extra={"product_id": product.pk, "code": product.code, "user_id": user.pk if user else None}
    )
    return product


@transaction.atomic
def product_update(*, product_id: int, patch: Mapping[str, Any], user: User | None = None) -> Product:
    """Apply a PATCH: any subset of the fields; ``audit_config_ids`` replaces the whole list."""
    cleaned: dict[str, Any] = {}
    for field in ("name", "code"):
        if field in patch:
            cleaned[field] = _clean_text(field, patch[field])
    if "description" in patch:
        cleaned["description"] = str(patch["description"] or "")
    if "is_active" in patch:
        cleaned["is_active"] = bool(patch["is_active"])
    config_ids = _clean_config_ids(patch["audit_config_ids"]) if "audit_config_ids" in patch else None

    _lock_product_writes()
    product = Product.objects.select_for_update().filter(pk=product_id).first()
    if product is None:
        raise product_not_found(product_id)
    changed = [field for field, value in cleaned.items() if getattr(product, field) != value]
    for field in changed:
        setattr(product, field, cleaned[field])
    if "name" in changed or "code" in changed:
        _check_unique(product)
    configs_changed = config_ids is not None and config_ids != list(
        product.config_links.order_by("position", "id").values_list("audit_config_id", flat=True)
    )
    if configs_changed:
        assert config_ids is not None
        _replace_configs(product, config_ids)
    if changed or configs_changed:
        _save(product, update_fields=[*changed, "updated_at"])
        logger.info(
            "product_updated",
            extra={
                "product_id": product.pk,
                "fields": ",".join(changed + (["audit_config_ids"] if configs_changed else [])),
                "user_id": user.pk if user else None,
            },
        )
    return product


@transaction.atomic
def product_delete(*, product_id: int, user: User | None = None) -> None:
    deleted, _ = Product.objects.filter(pk=product_id).delete()
    if not deleted:
        raise product_not_found(product_id)
    logger.info("product_deleted", extra={"product_id": product_id, "user_id": user.pk if user else None})
