"""Audit configurations: created, edited (every edit of the content makes a new immutable version;
an audit keeps the version it ran with), deactivated, and read back in the API's shape."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from django.db import transaction
from django.db.models import Prefetch
from django.utils import timezone

from audits.models import (
    Audit,
    AuditConfig,
    AuditConfigVersion,
    AuditControlPointDefinition,
    AuditStepDefinition,
    EvidenceSpeaker,
)
from audits.services.counting import counting_changed
from core.exceptions import InvalidInput, NotFoundError
from core.formats import uuid_or_none

if TYPE_CHECKING:
    from accounts.models import User

CONTENT_FIELDS = ("name", "description", "thresholds", "steps")


def validate_content(data: Mapping[str, Any]) -> None:
    """Domain rules the serializer's field checks cannot see (each error names its field)."""
    thresholds = data["thresholds"]
    if not thresholds["excellent"] > thresholds["bon"] > thresholds["acceptable"]:
        raise InvalidInput(
            "thresholds: they must decrease: excellent > bon > acceptable.",
            details={"thresholds": ["They must decrease: excellent > bon > acceptable."]},
        )
    steps = data["steps"]
    if not steps:
        raise InvalidInput("A config needs at least one step.", details={"steps": ["This list may not be empty."]})
    for i, step in enumerate(steps):
        if not step["control_points"]:
            raise InvalidInput(
                f"steps: {i}: control_points: a step needs at least one control point.",
                details={"steps": {str(i): {"control_points": ["This list may not be empty."]}}},
            )


def _write_version(
    config: AuditConfig, data: Mapping[str, Any], user: User | None, *, draft: bool = False
) -> AuditConfigVersion:
    number = (config.versions.order_by("-version").values_list("version", flat=True).first() or 0) + 1
    version = AuditConfigVersion.objects.create(
        config=config,
        version=number,
        name=data["name"],
        description=data.get("description", ""),
        thresholds=dict(data["thresholds"]),
        created_by=user,
        is_draft=draft,
        activated_at=None if draft else timezone.now(),
        activated_by=None if draft else user,
    )
    for position, step in enumerate(data["steps"], start=1):
        definition = AuditStepDefinition.objects.create(
            config_version=version,
            position=position,
            name=step["name"],
            instructions=step.get("instructions", ""),
            weight=step["weight"],
            is_critical=step.get("is_critical", False),
            pass_ratio=step.get("pass_ratio", 1.0),
        )
        AuditControlPointDefinition.objects.bulk_create(
            AuditControlPointDefinition(
                step=definition,
                index=index,
                question=point["question"],
                evidence_hint=point.get("evidence_hint", ""),
                is_critical=point.get("is_critical", False),
                conditional=point.get("conditional", False),
                speaker=point.get("speaker", EvidenceSpeaker.AGENT),
            )
            for index, point in enumerate(step["control_points"])
        )
    if draft:  # the active version stays; the draft runs only in an evaluation
        return version
    config.current_version = version
    config.name, config.description = version.name, version.description
    config.save(update_fields=["current_version", "name", "description", "updated_at"])
    counting_changed(config_id=config.pk)
    return version


@transaction.atomic
def config_create(*, data: Mapping[str, Any], user: User | None = None) -> AuditConfig:
    validate_content(data)
    config = AuditConfig.objects.create(
        name=data["name"],
        description=data.get("description", ""),
        is_active=data.get("is_active", True),
        created_by=user,
    )
    _write_version(config, data, user)
    return config


@transaction.atomic
def config_update(*, config_id: int, patch: Mapping[str, Any], user: User | None = None) -> AuditConfig:
    """Apply ``patch`` to the current content; a changed content makes a new version."""
    config = AuditConfig.objects.select_for_update().filter(pk=config_id).first()
    if config is None:
        raise _not_found(config_id)
    current = config_content(config)
    effective = {**current, **{k: v for k, v in patch.items() if k in CONTENT_FIELDS}}
    validate_content(effective)
    if _comparable(effective) != _comparable(current):
        _write_version(config, effective, user, draft=bool(patch.get("draft")))
    if "is_active" in patch and patch["is_active"] != config.is_active:
        config.is_active = patch["is_active"]
        config.save(update_fields=["is_active", "updated_at"])
    return config


@transaction.atomic
def config_delete(*, config_id: int) -> bool:
    """Delete a config no audit used; deactivate one that audits reference. True when deleted."""
    config = AuditConfig.objects.select_for_update().filter(pk=config_id).first()
    if config is None:
        raise _not_found(config_id)
    if Audit.objects.filter(config=config).exists():
        config.is_active = False
        config.save(update_fields=["is_active", "updated_at"])
        return False
    config.current_version = None
    config.save(update_fields=["current_version"])
    config.delete()
    return True


def _not_found(config_id: object) -> NotFoundError:
    return NotFoundError(
        f"No audit config {config_id}.", code="audit_config_not_found", details={"audit_config_id": config_id}
    )


def _comparable(content: Mapping[str, Any]) -> Any:
    def step(s: Mapping[str, Any]) -> tuple:
        points = tuple(
            (
                p["question"],
                p.get("evidence_hint", ""),
                bool(p.get("is_critical", False)),
                bool(p.get("conditional", False)),
                p.get("speaker", EvidenceSpeaker.AGENT),
            )
            for p in s["control_points"]
        )
        return (
            s["name"],
            s.get("instructions", ""),
            s["weight"],
            bool(s.get("is_critical", False)),
            float(s.get("pass_ratio", 1.0)),
            points,
        )

    thresholds = content["thresholds"]
    return (
        content["name"],
        content.get("description", ""),
        tuple(float(thresholds[k]) for k in ("excellent", "bon", "acceptable")),
        tuple(step(s) for s in content["steps"]),
    )


def version_content(version: AuditConfigVersion) -> dict[str, Any]:
    steps = version.steps.prefetch_related("control_points").order_by("position")
    return {
        "name": version.name,
        "description": version.description,
        "thresholds": dict(version.thresholds),
        "steps": [
            {
                "position": s.position,
                "name": s.name,
                "instructions": s.instructions,
                "weight": s.weight,
                "is_critical": s.is_critical,
                "pass_ratio": s.pass_ratio,
                "control_points": [
                    {
                        "index": p.index,
                        "question": p.question,
                        "evidence_hint": p.evidence_hint,
                        "is_critical": p.is_critical,
                        "conditional": p.conditional,
                        "speaker": p.speaker,
                    }
                    for p in s.control_points.order_by("index")
                ],
            }
            for s in steps
        ],
    }


def config_content(config: AuditConfig) -> dict[str, Any]:
    assert config.current_version is not None
    return version_content(config.current_version)


def config_dict(config: AuditConfig) -> dict[str, Any]:
    version = config.current_version
    return {
        "id": config.pk,
        "version": version.version if version else None,
        "is_active": config.is_active,
        **(version_content(version) if version else {"name": config.name, "description": config.description}),
        "created_at": config.created_at.isoformat(),
        "updated_at": config.updated_at.isoformat(),
    }


def configs_queryset(*, include_inactive: bool = True) -> Any:
    queryset = AuditConfig.objects.select_related("current_version").filter(current_version__isnull=False)
    return queryset if include_inactive else queryset.filter(is_active=True)


def config_get(config_id: object) -> AuditConfig:
    try:
        config = configs_queryset().filter(pk=int(str(config_id))).first()
    except ValueError:
        config = None
    if config is None:
        raise _not_found(config_id)
    return config


def steps_of(version: AuditConfigVersion) -> Sequence[AuditStepDefinition]:
    return list(
        version.steps.prefetch_related(
            Prefetch("control_points", queryset=AuditControlPointDefinition.objects.order_by("index"))
        ).order_by("position")
    )


def version_get(config_id: object, number: object) -> AuditConfigVersion:
    version = (
        AuditConfigVersion.objects.select_related("config", "activated_by", "created_by")
        .filter(config_id=_int_or_none(config_id) or 0, version=_int_or_none(number) or 0)
        .first()
    )
    if version is None:
        raise NotFoundError(
            f"Audit config {config_id} has no version {number}.",
            code="audit_config_version_not_found",
            details={"audit_config_id": config_id, "version": number},
        )
    return version


def _int_or_none(value: object) -> int | None:
    try:
        return int(str(value))
    except ValueError:
        return None


@transaction.atomic
def version_activate(
    *, config_id: int, number: int, user: User | None, evaluation_id: str | None = None
) -> AuditConfigVersion:
    """Make a version the active one (a draft stops being one); who activated it and the evaluation it was
    based on are recorded. Audits made before keep their version."""
    from audits.models import Evaluation

    config = AuditConfig.objects.select_for_update().filter(pk=config_id).first()
    if config is None:
        raise _not_found(config_id)
    version = version_get(config_id, number)
    evaluation = None
    if evaluation_id is not None:
        key = uuid_or_none(evaluation_id)
        evaluation = Evaluation.objects.filter(pk=key, version=version).first() if key else None
        if evaluation is None:
            raise InvalidInput(
                f"No evaluation {evaluation_id} of version {number}.",
                code="evaluation_not_found",
                details={"evaluation_id": [f"No evaluation {evaluation_id} of this version."]},
            )
    version.is_draft = False
    version.activated_at, version.activated_by, version.activated_from = timezone.now(), user, evaluation
    version.save(update_fields=["is_draft", "activated_at", "activated_by", "activated_from"])
    config.current_version = version
    config.name, config.description = version.name, version.description
    config.save(update_fields=["current_version", "name", "description", "updated_at"])
    counting_changed(config_id=config.pk)
    return version


def version_dict(version: AuditConfigVersion) -> dict[str, Any]:
    active = version.config.current_version_id == version.pk
    return {
        "version": version.version,
        "name": version.name,
        "is_draft": version.is_draft,
        "is_active": active,
        "created_at": version.created_at.isoformat(),
        "created_by": version.created_by.email if version.created_by else None,
        "activated_at": version.activated_at.isoformat() if version.activated_at else None,
        "activated_by": version.activated_by.email if version.activated_by else None,
        "activated_from_evaluation": str(version.activated_from_id) if version.activated_from_id else None,
    }


def versions_of(config_id: object) -> list[AuditConfigVersion]:
    config_get(config_id)
    return list(
        AuditConfigVersion.objects.select_related("config", "created_by", "activated_by")
        .filter(config_id=_int_or_none(config_id))
        .order_by("-version")
    )
