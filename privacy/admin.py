"""The ops console for personal data: the erasure log and the purge reports (read-only), erasure by phone or
e-mail (the erasure log's "add" page), and the fiche list's action "Erase the prospect's personal data"
(``fiches.admin`` lists it). Erasing needs the ``users`` write grant, whatever the Django
permissions: being a superuser is not enough."""

from __future__ import annotations

from typing import Any, cast

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from accounts.grants import has_grant
from accounts.models import User
from core.admin_views import ReadOnlyAdminMixin
from fiches.models import FicheCache
from privacy.erasure import InvalidSubject, TooManyFiches, erase
from privacy.models import ErasureRequest, PurgeReport, SubjectKind

REFUSED = "Erasing personal data needs the users write grant (users.write); nothing was erased."


def may_erase(request: HttpRequest) -> bool:
    """The ``users`` write grant: who may erase a person's data."""
    return has_grant(cast(User, request.user), "users", "write")


def _counts_html(counts: dict[str, int]) -> str:
    shown = [(name, n) for name, n in (counts or {}).items() if n]
    if not shown:
        return "nothing (already erased, or nothing found)"
    return format_html_join(", ", "{}: {}", shown)


@admin.action(description="Erase the prospect's personal data")
def erase_prospect_data(
    modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet[FicheCache]
) -> HttpResponse | None:
    """On the fiche list: a confirmation page (with a reason), then one erasure per fiche selected (by its id).
    Verdicts and scores of the audits stay; everything else of the person goes (``privacy.erasure``)."""
    if not may_erase(request):
        modeladmin.message_user(request, REFUSED, messages.ERROR)
        return None
    fiches = list(queryset.order_by("fiche_id"))
    if request.POST.get("confirm") != "yes":
        context = {
            **modeladmin.admin_site.each_context(request),
            "opts": modeladmin.model._meta,
            "title": "Erase the prospects' personal data?",
            "fiches": fiches,
            "action_checkbox_name": ACTION_CHECKBOX_NAME,
        }
        return TemplateResponse(request, "admin/privacy/erase_confirmation.html", context)
    reason = request.POST.get("reason", "")
    done = []
    for fiche in fiches:
        result = erase(SubjectKind.FICHE, fiche.fiche_id, user=cast(User, request.user), via="admin", reason=reason)
        done.append((fiche.fiche_id, result))
    changed = sum(1 for _, result in done if result.changed)
    modeladmin.message_user(
        request,
        format_html(
            "Erased the personal data of {} fiche(s) ({} already erased): {}",
            changed,
            len(done) - changed,
            format_html_join(
                ", ",
                '<a href="{}">{}</a>',
                (
                    (reverse("admin:privacy_erasurerequest_change", args=[r.request.pk]), fiche_id)
                    for fiche_id, r in done
                    if r.request is not None
                ),
            ),
        ),
        messages.SUCCESS,
    )
    return None


class EraseForm(forms.Form):
    subject_kind = forms.ChoiceField(
        label="By",
        choices=[(SubjectKind.PHONE, "phone number"), (SubjectKind.EMAIL, "e-mail"), (SubjectKind.FICHE, "fiche id")],
    )
    value = forms.CharField(max_length=255, help_text="Any written form of a phone number; e-mails ignore case.")
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), required=False)
    dry_run = forms.BooleanField(required=False, initial=True, help_text="Count what would be erased; change nothing.")


@admin.register(ErasureRequest)
class ErasureRequestAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """The erasure log (no personal data: a keyed digest of the identifier). Its "add" page erases by phone or
    e-mail (users.write only)."""

    list_display = ("id", "subject_kind", "via", "requested_by", "fiche_count", "changed", "created_at", "completed_at")
    list_filter = ("subject_kind", "via")
    search_fields = ("id", "fiche_ids", "subject_digest")
    list_select_related = ("requested_by",)
    fields = (
        "id",
        "subject_kind",
        "subject_digest",
        "fiche_ids",
        "counts_shown",
        "reason",
        "via",
        "requested_by",
        "created_at",
        "completed_at",
    )
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return may_erase(request)

    @admin.display(description="fiches")
    def fiche_count(self, obj: ErasureRequest) -> int:
        return len(obj.fiche_ids)

    @admin.display(description="rows changed")
    def changed(self, obj: ErasureRequest) -> int:
        return sum((obj.counts or {}).values())

    @admin.display(description="counts")
    def counts_shown(self, obj: ErasureRequest) -> str:
        return _counts_html(obj.counts)

    def add_view(
        self, request: HttpRequest, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        if not self.has_add_permission(request):
            raise PermissionDenied(REFUSED)
        form = EraseForm(request.POST or None)
        outcome = None
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            try:
                result = erase(
                    data["subject_kind"],
                    data["value"],
                    user=cast(User, request.user),
                    via="admin",
                    reason=data["reason"],
                    dry_run=data["dry_run"],
                )
            except (InvalidSubject, TooManyFiches) as exc:
                form.add_error("value", exc.message)
            else:
                if result.request is not None:
                    self.message_user(
                        request,
                        format_html(
                            "Erasure recorded: {} fiche(s), {}", len(result.fiche_ids), _counts_html(result.counts)
                        ),
                        messages.SUCCESS,
                    )
                    return HttpResponseRedirect(
                        reverse("admin:privacy_erasurerequest_change", args=[result.request.pk])
                    )
                outcome = {
                    "fiche_ids": result.fiche_ids,
                    "mentioning": result.mentioning,
                    "counts": _counts_html(result.counts),
                }
        context = {
            **self.admin_site.each_context(request),
            **(extra_context or {}),
            "opts": self.opts,
            "title": "Erase a person's data by phone number or e-mail",
            "form": form,
            "outcome": outcome,
        }
        return TemplateResponse(request, "admin/privacy/erasurerequest/erase_form.html", context)


@admin.register(PurgeReport)
class PurgeReportAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("started_at", "finished_at", "complete", "purged_shown", "error")
    list_filter = ("complete",)
    readonly_fields = ("started_at", "finished_at", "complete", "purged_shown", "error")
    fields = readonly_fields

    @admin.display(description="purged")
    def purged_shown(self, obj: PurgeReport) -> str:
        return _counts_html(obj.purged)
