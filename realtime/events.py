"""The realtime contract (../shared/seeds/003): every event with its required payload fields, the
channel routing rules, channel-name validation and payload truncation.

**Nothing through a side door.** A channel is authorized by one app's rule (``realtime.registry``): the
fiche channel by ``fiches.read``, the audit channel by ``audits.read``, the global channel for any
authenticated user. Each event names the permission key its full payload needs (``EventSpec.reader``);
a channel whose authorization does not imply that key gets a **notify-only copy**
(``notify_only``: identifiers and status, ``"redacted": true``; Pusher is notify → refetch, and the
refetch goes through the API's own grants), the full payload stays on the entity's own channel. No
payload ever carries a URL or a secret (``scrub``: signed recording URLs never go out through Pusher)."""

from __future__ import annotations

import re
from dataclasses import dataclass

import orjson

GLOBAL_CHANNEL = "private-global"
MAX_CHANNELS_PER_TRIGGER = 100
MAX_CHANNEL_LENGTH = 164
MAX_PAYLOAD_BYTES = 10 * 1024  # Pusher's documented limit (the Python library checks 30 KB)
_CHANNEL_RE = re.compile(r"\A[-a-zA-Z0-9_=@,.;]+\Z")

AUDIT, FICHE, JOB, GLOBAL, TRANSCRIPTION = "audit", "fiche", "job", "global", "transcription"
REVIEW_QUEUE = "review_queue"  # private-review-queue-{queue_id}
USER_CHANNEL_PREFIX = "private-user-"  # one user's own channel: full copies of what concerns them


@dataclass(frozen=True)
class EventSpec:
    required: tuple[str, ...]
    channels: tuple[str, ...]  # channel kinds; the contract's per-event list wins over the generic rules
    rerun_channels: tuple[str, ...] | None = None  # step reruns (payload has rerun_id) go elsewhere
    reader: str | None = "audits"  # the permission key the full payload needs (None: any subscriber)


_AF = (AUDIT, FICHE)
_FT = (FICHE, TRANSCRIPTION)  # transcription events: the fiche (seed) and the fiche's transcription channel
_TR = "transcriptions"
_JOB_FIELDS = (
    "jobId",
    "status",
    "startDate",
    "endDate",
    "progress",
    "completedDays",
    "totalDays",
    "totalFiches",
    "datesCompleted",
    "datesRemaining",
    "datesFailed",
)

EVENTS: dict[str, EventSpec] = {
    # audits
    "audit.started": EventSpec(
        ("audit_id", "fiche_id", "audit_config_id", "audit_config_name", "total_steps", "started_at", "status"), _AF
    ),
    "audit.fiche_fetch_started": EventSpec(("fiche_id", "from_cache", "status"), (FICHE,), reader="fiches"),
    "audit.fiche_fetch_completed": EventSpec(
        ("fiche_id", "recordings_count", "prospect_name", "from_cache", "status"), (FICHE,), reader="fiches"
    ),
    "audit.config_loaded": EventSpec(
        ("config_id", "config_name", "steps_count", "status"), (GLOBAL,), reader="audit-configs"
    ),
    "audit.transcription_check": EventSpec(
        ("fiche_id", "total_recordings", "transcribed", "needs_transcription", "status"), (FICHE,)
    ),
    "audit.timeline_generated": EventSpec(("fiche_id", "recordings_count", "total_chunks", "status"), (FICHE,)),
    "audit.analysis_started": EventSpec(("audit_id", "fiche_id", "total_steps", "model", "status"), _AF),
    "audit.step_started": EventSpec(("audit_id", "step_position", "status"), _AF, rerun_channels=(AUDIT,)),
    "audit.step_completed": EventSpec(("audit_id", "step_position", "status"), _AF, rerun_channels=(AUDIT,)),
    "audit.step_failed": EventSpec(("audit_id", "fiche_id", "step_position", "step_name", "error", "status"), _AF),
    "audit.progress": EventSpec(
        (
            "audit_id",
            "fiche_id",
            "completed_steps",
            "total_steps",
            "failed_steps",
            "current_phase",
            "progress_percentage",
            "status",
        ),
        _AF,
    ),
    "audit.compliance_calculated": EventSpec(
        (
            "audit_id",
            "fiche_id",
            "overall_score",
            "score_percentage",
            "niveau",
            "is_compliant",
            "critical_issues",
            "status",
        ),
        _AF,
    ),
    "audit.completed": EventSpec(
        (
            "audit_id",
            "fiche_id",
            "overall_score",
            "score_percentage",
            "niveau",
            "is_compliant",
            "successful_steps",
            "failed_steps",
            "total_tokens",
            "duration_seconds",
            "completed_at",
            "status",
        ),
        _AF,
    ),
    "audit.failed": EventSpec(("audit_id", "fiche_id", "error", "failed_at", "status"), _AF),
    # the QA loop: reviews, disputes, trust per control point, review queues
    "audit.reviewed": EventSpec(
        ("audit_id", "step_position", "control_point_indexes", "review_status", "niveau", "status"), (AUDIT,)
    ),
    "audit.dispute_opened": EventSpec(
        ("audit_id", "dispute_id", "step_position", "control_point_index", "status"), (AUDIT,)
    ),
    "audit.dispute_resolved": EventSpec(
        ("audit_id", "dispute_id", "step_position", "control_point_index", "verdict_after", "status"), (AUDIT,)
    ),
    # Evaluations of a config version: the requester's (full on their user channel, ids on the global one).
    "audit.evaluation_progress": EventSpec(
        ("evaluation_id", "audit_config_id", "completed_audits", "failed_audits", "total_audits", "status"),
        (GLOBAL,),
        reader="evaluations",
    ),
    "audit.evaluation_completed": EventSpec(
        (
            "evaluation_id",
            "audit_config_id",
            "version",
            "completed_audits",
            "failed_audits",
            "changed_points",
            "status",
        ),
        (GLOBAL,),
        reader="evaluations",
    ),
    # A config's control point: its trust figures are config data (audit-configs readers); others get ids + state.
    "audit.trust_changed": EventSpec(
        ("config_id", "step_position", "control_point_index", "kappa", "sample_size", "status"),
        (GLOBAL,),
        reader="audit-configs",
    ),
    # Whole-queue counts: the queue's channel admits only users whose audits write scope holds the whole queue.
    "review_queue.progress": EventSpec(
        ("queue_id", "waiting", "claimed", "done", "median_review_seconds", "status"), (REVIEW_QUEUE,), reader=None
    ),
    # transcriptions
    "transcription.started": EventSpec(
        ("fiche_id", "total_recordings", "priority", "started_at", "status"), _FT, reader=_TR
    ),
    "transcription.status_check": EventSpec(
        ("fiche_id", "total_recordings", "already_transcribed", "needs_transcription", "is_complete", "status"),
        _FT,
        reader=_TR,
    ),
    "transcription.recording_started": EventSpec(
        ("fiche_id", "call_id", "recording_index", "total_to_transcribe", "status"), _FT, reader=_TR
    ),
    "transcription.recording_completed": EventSpec(
        ("fiche_id", "call_id", "transcription_id", "recording_index", "total_to_transcribe", "status"), _FT, reader=_TR
    ),
    "transcription.recording_failed": EventSpec(
        ("fiche_id", "call_id", "error", "recording_index", "total_to_transcribe", "status"), _FT, reader=_TR
    ),
    "transcription.progress": EventSpec(
        ("fiche_id", "total_recordings", "transcribed", "pending", "failed", "progress_percentage", "status"),
        _FT,
        reader=_TR,
    ),
    "transcription.completed": EventSpec(
        ("fiche_id", "total_recordings", "transcribed", "failed", "duration_seconds", "completed_at", "status"),
        _FT,
        reader=_TR,
    ),
    "transcription.failed": EventSpec(("fiche_id", "error", "failed_at", "status"), _FT, reader=_TR),
    # batches and notifications
    # A batch is its requester's: the global copy is notify-only, the full one goes to their user channel.
    "batch.progress": EventSpec(
        ("batch_id", "operation_type", "total", "completed", "failed", "progress_percentage"),
        (GLOBAL,),
        reader="batches",
    ),
    "batch.completed": EventSpec(
        ("batch_id", "operation_type", "total", "completed", "failed", "duration_ms"), (GLOBAL,), reader="batches"
    ),
    # A toast for everyone: its text must be generic (what concerns one user goes to their user channel).
    "notification": EventSpec(("type", "message", "duration"), (GLOBAL,), reader=None),
    # Daily budgets (costs): the global budget's on the global channel, where it is notify-only (budget_id and
    # status: its figures are for whom GET /api/analytics/budgets shows them); a user's own in full on their
    # user channel (publish(..., user_id=)).
    "budget.exhausted": EventSpec(("budget_id", "kind", "scope", "day", "mode", "resets_at", "status"), (GLOBAL,)),
    "budget.resumed": EventSpec(("budget_id", "kind", "scope", "day", "status"), (GLOBAL,)),
    # progressive fetch jobs
    "fiches.progressive_fetch.created": EventSpec(_JOB_FIELDS, (JOB,), reader="fiches"),
    "fiches.progressive_fetch.progress": EventSpec((*_JOB_FIELDS, "latestDate"), (JOB,), reader="fiches"),
    "fiches.progressive_fetch.complete": EventSpec(_JOB_FIELDS, (JOB,), reader="fiches"),
    "fiches.progressive_fetch.failed": EventSpec(_JOB_FIELDS, (JOB,), reader="fiches"),
}

# Automation runs (phase 2) publish `automation.run.*` events, each carrying `runId`, on their own
# channel; their names are defined with the automation app.
AUTOMATION_RUN_PREFIX = "automation.run."


class InvalidEvent(ValueError):
    """An unknown event, a payload missing a required field, or an invalid channel."""


def validate_channel(channel: str) -> str:
    if not isinstance(channel, str) or not _CHANNEL_RE.match(channel):
        raise InvalidEvent(f"invalid channel name {channel!r}")
    if len(channel) > MAX_CHANNEL_LENGTH:
        raise InvalidEvent(f"channel name longer than {MAX_CHANNEL_LENGTH} characters: {channel[:40]}...")
    return channel


def validate_event(event: str, payload: dict) -> None:
    if not isinstance(payload, dict):
        raise InvalidEvent(f"{event}: payload must be an object")
    if event.startswith(AUTOMATION_RUN_PREFIX):
        required: tuple[str, ...] = ("runId",)
    elif event in EVENTS:
        required = EVENTS[event].required
    else:
        raise InvalidEvent(f"unknown realtime event {event!r}")
    missing = [name for name in required if name not in payload]
    if missing:
        raise InvalidEvent(f"{event}: payload is missing {', '.join(missing)}")


def reader_of(event: str) -> str | None:
    """The permission key a subscriber needs to receive the event's full payload."""
    if event.startswith(AUTOMATION_RUN_PREFIX):
        return "automation"
    spec = EVENTS.get(event)
    return spec.reader if spec is not None else None


def channels_for(event: str, payload: dict, *, user_id: object = None) -> list[str]:
    """The channels of an event, per the contract: the event's own channel list, else the generic
    rules (audit_id → audit, fiche_id → fiche, jobId → job, otherwise global); plus the user channel
    of ``user_id`` (the one user the event concerns) when given."""
    if event.startswith(AUTOMATION_RUN_PREFIX):
        return [validate_channel(f"private-job-automation-run-{payload['runId']}")]
    spec = EVENTS.get(event)
    if spec is not None:
        kinds = spec.rerun_channels if (spec.rerun_channels and "rerun_id" in payload) else spec.channels
    elif event.startswith("batch.") or event == "notification":
        kinds = (GLOBAL,)
    else:
        kinds = tuple(k for k, field in ((AUDIT, "audit_id"), (FICHE, "fiche_id"), (JOB, "jobId")) if field in payload)
    channels = []
    for kind in kinds:
        if kind == AUDIT and "audit_id" in payload:
            channels.append(f"private-audit-{payload['audit_id']}")
        elif kind == FICHE and "fiche_id" in payload:
            channels.append(f"private-fiche-{payload['fiche_id']}")
        elif kind == JOB and "jobId" in payload:
            channels.append(f"private-job-{payload['jobId']}")
        elif kind == TRANSCRIPTION and "fiche_id" in payload:
            channels.append(f"private-transcription-{payload['fiche_id']}")
        elif kind == REVIEW_QUEUE and "queue_id" in payload:
            channels.append(f"private-review-queue-{payload['queue_id']}")
        elif kind == GLOBAL:
            channels.append(GLOBAL_CHANNEL)
    channels = channels or [GLOBAL_CHANNEL]
    if user_id is not None:
        channels.append(f"{USER_CHANNEL_PREFIX}{user_id}")
    if len(channels) > MAX_CHANNELS_PER_TRIGGER:
        raise InvalidEvent(f"{event}: more than {MAX_CHANNELS_PER_TRIGGER} channels")
    return [validate_channel(c) for c in dict.fromkeys(channels)]


# --- What a channel may carry ----------------------------------------------------------------

_UNSAFE_KEY = re.compile(r"(?i)(url|uri|secret|token|password|signature)$")
_NOTIFY_KEYS = ("_id", "Id")


def scrub(payload: dict) -> dict:
    """The payload without any URL or secret field (a signed recording URL is a bearer credential)."""
    return {k: v for k, v in payload.items() if not _UNSAFE_KEY.search(k)}


def notify_only(payload: dict) -> dict:
    """What any subscriber of a channel may see of an event meant for narrower readers: its identifiers
    and status (``"redacted": true`` says the rest is to be fetched through the API)."""
    kept = {
        k: v
        for k, v in payload.items()
        if (k == "status" or k.endswith(_NOTIFY_KEYS)) and (v is None or isinstance(v, (str, int, float, bool)))
    }
    kept["redacted"] = True
    return kept


# --- Truncation -----------------------------------------------------------------------------

_KEEP_SUFFIXES = ("_id", "Id", "_ids")
_KEEP_NAMES = {"status", "progress", "type", "truncated"}


def _size(value) -> int:
    return len(orjson.dumps(value))


def _essential(key: str, value) -> bool:
    """Identifiers, status and counters are kept whatever happens."""
    if key in _KEEP_NAMES or key.endswith(_KEEP_SUFFIXES):
        return not isinstance(value, (list, dict)) or _size(value) < 256
    return isinstance(value, (int, float, bool)) or value is None


def encode_payload(payload: dict, *, limit: int = MAX_PAYLOAD_BYTES) -> str:
    """The payload as JSON of at most ``limit`` UTF-8 bytes. Oversized payloads are truncated:
    the largest arrays and strings are shortened first, then non-essential fields dropped;
    identifiers and counters stay, and ``truncated: true`` is set."""
    encoded = orjson.dumps(payload)
    if len(encoded) <= limit:
        return encoded.decode()
    data = dict(payload)
    data["truncated"] = True
    for _ in range(200):
        encoded = orjson.dumps(data)
        if len(encoded) <= limit:
            return encoded.decode()
        candidates = [(k, v) for k, v in data.items() if not _essential(k, v) and isinstance(v, (list, str, dict))]
        if not candidates:
            break
        key, value = max(candidates, key=lambda kv: _size(kv[1]))
        if isinstance(value, list) and len(value) > 1:
            data[key] = value[: len(value) // 2]
        elif isinstance(value, str) and len(value) > 64:
            data[key] = value[: len(value) // 2] + "…"
        else:
            del data[key]
    # Still too big: keep only the essential scalar fields.
    data = {k: v for k, v in data.items() if _essential(k, v) and not isinstance(v, (list, dict))}
    data["truncated"] = True
    encoded = orjson.dumps(data)
    if len(encoded) > limit:
        raise InvalidEvent(f"payload cannot be truncated under {limit} bytes")
    return encoded.decode()
