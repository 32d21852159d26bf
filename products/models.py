"""Insurance products sold by the call centre (the CRM's ``produit``), each with the ordered audit
configs that audit its sales: when automation or a batch names no config, the fiche's product picks
the first active one (``products.selectors.audit_config_for_produit``)."""

from __future__ import annotations

from django.core.validators import RegexValidator
from django.db import models
from django.db.models.functions import Lower

CODE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]*\Z"
code_validator = RegexValidator(CODE_PATTERN, "Letters, digits, '-' and '_', starting with a letter or a digit.")


class Product(models.Model):
    name = models.CharField(max_length=200)
    code = models.CharField(max_length=64, validators=[code_validator], help_text="A short slug-like identifier.")
    description = models.TextField(blank=True, default="")
    is_active = models.BooleanField(default=True)
    audit_configs = models.ManyToManyField(
        "audits.AuditConfig", through="ProductAuditConfig", related_name="products", blank=True
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "products"
        ordering = ["name", "id"]
        constraints = [
            models.UniqueConstraint(Lower("name"), name="product_name_unique_ci"),
            models.UniqueConstraint(Lower("code"), name="product_code_unique_ci"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.code})"


class ProductAuditConfig(models.Model):
    """One audit config of a product, at its ``position`` (from 1) in the product's list. The services
    write positions 1..n; positions are not unique so that the admin's inline can reorder them (ties
    order by id)."""

    product = models.ForeignKey(Product, on_delete=models.CASCADE, related_name="config_links")
    audit_config = models.ForeignKey("audits.AuditConfig", on_delete=models.CASCADE, related_name="product_links")
    position = models.PositiveIntegerField(help_text="From 1; the first active config is the product's.")

    class Meta:
        db_table = "product_audit_configs"
        ordering = ["product_id", "position", "id"]
        constraints = [
            models.UniqueConstraint(fields=["product", "audit_config"], name="product_audit_config_once"),
        ]

    def __str__(self) -> str:
        return f"{self.position}. {self.audit_config_id}"
