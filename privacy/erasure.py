"""Erasure on request: a prospect's personal data removed or redacted everywhere we hold it.

``erase(kind, value)`` finds the person's fiches — by the CRM's fiche id, or across fiches by phone number or
e-mail (in the fiche's CRM data, its details' prospect section, its recordings' numbers and its transcripts) —
and, in one transaction:

- blanks the fiche's prospect data (the sale's columns stay: fiche id, dates, group, agent, product, status)
  and marks it erased (``FicheCache.erased_at``: the CRM refresh paths keep it erased);
- empties its details but the sale's ``information``, deletes its mail devis and transcripts, removes the
  recordings' numbers, URL and extra fields (call id, start, duration and direction stay);
- keeps its audits' verdicts, statuses and scores (the company's compliance record) but blanks their quotes
  and scrubs every free text of them (rationales, the LLM's answers, reviews, disputes, reruns, errors) with
  ``redact_text`` and the person's own values (names, phones in any written form, e-mails, address, date of
  birth: replaced by ``[EFFACÉ]``); ends the fiche's audits, reruns and transcription runs still going;
- deletes the chats about the fiche or its audits and the workflow logs naming it, blanks the bodies of
  webhook deliveries naming it (and their attempts' responses), scrubs automation and batch results;
- records an ``ErasureRequest`` (a keyed digest of the identifier, never the identifier; counts per kind of
  data);

then, after commit, deletes the fiche's timeline cache and the rendered range pages of its date from Redis.

A fiche where the phone or e-mail only appears elsewhere (another prospect's fiche naming the person in a
comment, a mail, as a spouse) is not erased: the JSON records holding the value are blanked there.

Idempotent: a second request changes nothing (its entry has zero counts). ``dry_run``: everything is done in a
transaction rolled back at the end (exact counts), runs are not ended, Redis is only counted, nothing is
recorded.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING, Any

import orjson
import phonenumbers
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import connection, transaction
from django.db.models import Q
from django.db.models.expressions import RawSQL
from django.utils import timezone
from redis.exceptions import RedisError

from audits.models import (
    TERMINAL_AUDIT_STATUSES,
    Audit,
    AuditStepResult,
    Citation,
    ControlPointResult,
    Dispute,
    Evaluation,
    HumanReview,
    RerunEvent,
    RerunStatus,
    StepStatus,
)
from audits.services.finish import audit_fail_now
from audits.services.reviews import rerun_fail
from automation.models import AutomationRunFicheResult
from batches.models import BatchItem
from chat.models import ChatConversation, ChatMessage, EntityType
from core.exceptions import InvalidInput
from core.redis import get_redis
from fiches.models import (
    DETAIL_SECTIONS,
    ERASED_FICHE_KEEPS,
    FicheCache,
    FicheCacheDetails,
    FicheCacheMailDevis,
    Recording,
    WorkflowLog,
)
from fiches.selectors import bump_cache_version
from fiches.services.cache import SALES_LIST_ONLY
from privacy.models import ErasureRequest, SubjectKind
from privacy.redaction import redact_text
from realtime.models import WebhookDelivery, WebhookDeliveryAttempt
from transcriptions.models import TERMINAL_RUN_STATUSES, Transcription, TranscriptionRun
from transcriptions.services.runs import run_finalize_now

if TYPE_CHECKING:
    from accounts.models import User

logger = logging.getLogger("privacy.erasure")

ERASED = "[EFFACÉ]"
ERASED_REASON = "cancelled: the prospect's personal data was erased"
# A phone or e-mail found on more fiches than this is refused (an agent's line or a shared mailbox typed by
# mistake would erase a whole team's sales): look with a dry run, then pass a higher ``max_fiches``.
DEFAULT_MAX_FICHES = 20

# Every kind of data an erasure counts (rows removed or changed), in this order.
COUNT_KINDS: tuple[str, ...] = (
    "fiches",
    "fiche_mentions",
    "fiche_details",
    "mail_devis",
    "recordings",
    "transcriptions",
    "transcription_runs",
    "audits",
    "audit_step_results",
    "control_points",
    "citations",
    "reviews",
    "disputes",
    "reruns",
    "evaluations",
    "runs_ended",
    "chat_conversations",
    "chat_messages",
    "webhook_deliveries",
    "webhook_attempts",
    "workflow_logs",
    "automation_results",
    "batch_items",
    "timeline_cache_keys",
    "range_cache_keys",
)
_FULL_SECTIONS = ("information", "recordings")  # what an erased fiche's details still present


class InvalidSubject(InvalidInput):
    code = "invalid_erasure_subject"


class TooManyFiches(InvalidInput):
    code = "erasure_too_many_fiches"


# --- The subject ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Subject:
    """Whom an erasure is for: the kind, the normalized value (never stored) and the SQL regexes that find it."""

    kind: SubjectKind
    normalized: str
    phone: phonenumbers.PhoneNumber | None = None

    @property
    def digest(self) -> str:
        """HMAC-SHA256 (key: ``SECRET_KEY``) of ``kind:normalized``: a repeated request is recognizable, the value
        is not recoverable."""
        message = f"{self.kind}:{self.normalized}".encode()
        return hmac.new(settings.SECRET_KEY.encode(), message, hashlib.sha256).hexdigest()

    @property
    def pattern(self) -> str:
        """A regex (Python and Postgres ARE alike) matching the value in any written form."""
        if self.phone is not None:
            return phone_pattern(self.phone)
        return email_pattern(self.normalized)


def parse_phone(value: str) -> phonenumbers.PhoneNumber | None:
    """A valid phone number written in any form (national numbers read as French), else ``None``."""
    try:
        number = phonenumbers.parse(str(value), "FR")
    except phonenumbers.NumberParseException:
        return None
    return number if phonenumbers.is_valid_number(number) else None


def parse_subject(kind: str, value: str) -> Subject:
    """The subject of an erasure; ``InvalidSubject`` for an unknown kind, an invalid phone number or e-mail."""
    try:
        subject_kind = SubjectKind(kind)
    except ValueError:
        raise InvalidSubject(f"Unknown subject kind {kind!r}: fiche, phone or email.") from None
    value = (value or "").strip()
    if not value:
        raise InvalidSubject(f"No {subject_kind} given.")
    if subject_kind == SubjectKind.FICHE:
        if len(value) > 64:
            raise InvalidSubject("A fiche id has at most 64 characters.")
        return Subject(subject_kind, value)
    if subject_kind == SubjectKind.PHONE:
        number = parse_phone(value)
        if number is None:
            raise InvalidSubject("Not a valid phone number (national numbers are read as French).")
        return Subject(subject_kind, phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164), number)
    email = value.lower()
    try:
        validate_email(email)
    except ValidationError:
        raise InvalidSubject("Not a valid e-mail address.") from None
    return Subject(subject_kind, email)


# One or two separators between the digits of a written phone number ("06 12 34 56 78", "06.12.34.56.78",
# "+33 (0)6-12…"). No quote, comma or colon: a match never spans two JSON values.
_SEP = "[ ./\t\n\u00a0-]{0,2}"


def phone_pattern(number: phonenumbers.PhoneNumber) -> str:
    """Any written form of ``number``: national (``0612345678``), international (``+33…``, ``0033…``,
    ``33…``, ``+33 (0)6…``), with or without separators; bare national significant digits (a JSON number)."""
    nsn = phonenumbers.national_significant_number(number)
    country = _SEP.join(str(number.country_code))
    metadata = phonenumbers.PhoneMetadata.metadata_for_region(phonenumbers.region_code_for_number(number) or "")
    trunk = (metadata.national_prefix if metadata is not None else None) or ""
    prefixes = [rf"(?:\+|00){_SEP}{country}(?:{_SEP}\(0\))?", country]
    if trunk:
        prefixes.append(re.escape(trunk))
    if len(nsn) >= 8:
        prefixes.append("")
    return rf"(?<![0-9])(?:{'|'.join(prefixes)}){_SEP}{_SEP.join(nsn)}(?![0-9])"


def email_pattern(email: str) -> str:
    """The e-mail (match case-insensitively), not inside a longer address."""
    return rf"(?<![A-Za-z0-9._%+-]){re.escape(email)}(?![A-Za-z0-9_-]|\.[A-Za-z0-9])"


def _fiche_id_pattern(fiche_ids: Iterable[str]) -> str:
    """A fiche id as a JSON string value (or key), or as a JSON number."""
    alternatives = []
    for fiche_id in fiche_ids:
        alternatives.append(f'"{re.escape(fiche_id)}"')
        if fiche_id.isdigit():
            alternatives.append(rf"[\[:,] *{fiche_id} *[,\]}}]")
    return "|".join(alternatives)


# --- The person's own values ----------------------------------------------------------------------------------

_ACCENTS = {
    "a": "aàâäáãå",
    "c": "cç",
    "e": "eéèêë",
    "i": "iîïíì",
    "n": "nñ",
    "o": "oôöóòõø",
    "u": "uùûüú",
    "y": "yÿý",
}
_EMAIL = re.compile(r"[^@\s\"'<>]+@[^@\s\"'<>]+\.[A-Za-z]{2,}")


def _folded(text: str) -> str:
    """A regex matching ``text`` whatever its case and accents, its spaces and hyphens interchangeable."""
    parts = []
    for char in text:
        base = unicodedata.normalize("NFD", char)[0].lower()
        if char in " -'’":
            parts.append(r"[\s'’-]+")
        elif base in _ACCENTS:
            variants = _ACCENTS[base]
            parts.append(f"[{variants}{variants.upper()}]")
        else:
            parts.append(re.escape(char))
    return "".join(parts)


def _date_forms(value: str) -> set[str]:
    """``1986-04-12`` → itself, ``12/04/1986``, ``12-04-1986``, ``12.04.1986``."""
    forms = {value}
    try:
        day = date.fromisoformat(value[:10])
    except ValueError:
        return forms
    forms |= {day.isoformat(), *(f"{day:%d}{sep}{day:%m}{sep}{day:%Y}" for sep in "/-.")}
    return forms


@dataclass
class Person:
    """The values that identify the person, gathered from their fiches before they are blanked: what the free
    texts of their audits are scrubbed of (besides what ``redact_text`` finds on its own)."""

    names: set[str] = field(default_factory=set)
    emails: set[str] = field(default_factory=set)
    phones: dict[str, phonenumbers.PhoneNumber] = field(default_factory=dict)
    addresses: set[str] = field(default_factory=set)
    dates: set[str] = field(default_factory=set)
    _compiled: re.Pattern[str] | None = None

    def add_phone(self, value: Any) -> None:
        number = parse_phone(str(value))
        if number is not None:
            self.phones[phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)] = number
            self._compiled = None

    def add_email(self, value: Any) -> None:
        for found in _EMAIL.findall(str(value)):
            self.emails.add(found.strip().lower())
            self._compiled = None

    def add_record(self, record: Any) -> None:
        """A CRM record of a person (``prospect``, ``conjoint``, an ``enfants`` item): its names, phones,
        e-mails, address and dates of birth, by key."""
        if isinstance(record, list):
            for item in record:
                self.add_record(item)
            return
        if not isinstance(record, dict):
            return
        for key, value in record.items():
            if isinstance(value, (dict, list)):
                self.add_record(value)
                continue
            if not isinstance(value, (str, int)) or isinstance(value, bool) or str(value).strip() == "":
                continue
            text, name = str(value).strip(), key.lower()
            if "mail" in name:
                self.add_email(text)
            elif any(k in name for k in ("tel", "phone", "portable", "mobile", "gsm", "fixe", "fax")):
                self.add_phone(text)
            elif "naissance" in name or "birth" in name:
                self.dates |= _date_forms(text)
            elif any(k in name for k in ("adresse", "address", "rue", "voie", "complement")):
                self.add_address(text)
            elif "nom" in name or "name" in name:
                self.add_name(text)
        self._compiled = None

    def add_name(self, value: str | None) -> None:
        value = (value or "").strip()
        if len(value) >= 2:
            self.names.add(value)
            self.names |= {part for part in re.split(r"[\s]+", value) if len(part) >= 3}
            self._compiled = None

    def add_address(self, value: str) -> None:
        self.addresses.add(value)
        street = re.sub(r"^\s*\d+\s*(?:bis|ter|[a-zA-Z](?![a-zA-Z]))?[\s,]*", "", value)
        if len(street) >= 6 and street != value:
            self.addresses.add(street)
        self._compiled = None

    def pattern(self) -> re.Pattern[str] | None:
        if self._compiled is None:
            alternatives = [phone_pattern(n) for n in self.phones.values()]
            alternatives += [email_pattern(e) for e in sorted(self.emails)]
            words = sorted(self.names | self.addresses | self.dates, key=len, reverse=True)  # longest first
            alternatives += [rf"(?<!\w){_folded(w)}(?!\w)" for w in words]
            self._compiled = re.compile("|".join(alternatives), re.IGNORECASE) if alternatives else None
        return self._compiled

    def scrub(self, text: str | None) -> str | None:
        """``text`` without the person's values (``[EFFACÉ]``) nor what ``redact_text`` finds."""
        if not text:
            return text
        pattern = self.pattern()
        if pattern is not None:
            text = pattern.sub(ERASED, text)
        return redact_text(text)

    def scrub_json(self, value: Any) -> Any:
        """Every string of a JSON value scrubbed (keys kept)."""
        return _map_strings(value, self.scrub)


def _map_strings(value: Any, fn: Callable[[str], Any]) -> Any:
    if isinstance(value, str):
        return fn(value)
    if isinstance(value, dict):
        return {k: _map_strings(v, fn) for k, v in value.items()}
    if isinstance(value, list):
        return [_map_strings(v, fn) for v in value]
    return value


_QUOTE_LISTS = ("quotes", "citations", "rejected")
_QUOTE_FIELDS = ("text", "quote", "matched_text", "excerpt")


def _blank_quotes(value: Any) -> Any:
    """An LLM answer with the text of its quotes blanked (``quotes: [{text, speaker}]`` and the like)."""
    if isinstance(value, list):
        return [_blank_quotes(v) for v in value]
    if not isinstance(value, dict):
        return value
    out = {}
    for key, item in value.items():
        if key in _QUOTE_LISTS and isinstance(item, list):
            out[key] = [
                {k: ("" if k in _QUOTE_FIELDS and isinstance(v, str) else v) for k, v in q.items()}
                if isinstance(q, dict)
                else ("" if isinstance(q, str) else q)
                for q in item
            ]
        else:
            out[key] = _blank_quotes(item)
    return out


def _blank_records(value: Any, matcher: re.Pattern[str]) -> Any:
    """A JSON value where each object holding a match (a record of the person: a spouse, a mail to them) has its
    values blanked (``id`` kept), and any other string the match is cut out of."""
    if isinstance(value, list):
        return [_blank_records(v, matcher) for v in value]
    if isinstance(value, str):
        return matcher.sub(ERASED, value)
    if not isinstance(value, dict):
        return value
    if any(not isinstance(v, (dict, list, bool)) and v is not None and matcher.search(str(v)) for v in value.values()):
        return {k: (v if k == "id" else _blank_all(v)) for k, v in value.items()}
    return {k: _blank_records(v, matcher) for k, v in value.items()}


def _blank_all(value: Any) -> Any:
    if isinstance(value, list):
        return [_blank_all(v) for v in value]
    if isinstance(value, dict):
        return {k: _blank_all(v) for k, v in value.items()}
    if isinstance(value, str):
        return ERASED if value else value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return None
    return value


# --- Finding the fiches --------------------------------------------------------------------------------------


def _ids(sql: str, params: list[Any]) -> set[int]:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return {row[0] for row in cursor.fetchall()}


_OTHER_SECTIONS = [s for s in DETAIL_SECTIONS if s not in ("information", "prospect")]


def find_fiches(subject: Subject) -> tuple[set[int], set[int]]:
    """``(person's fiches, fiches that only mention the person)`` as ``FicheCache`` pks.

    The person's: the fiche asked for; or the fiches whose CRM data (``raw_data``), details' prospect or
    information, recordings' numbers or transcripts hold the phone (any written form) or the e-mail. Mentions:
    the value appears only in another section of the details (a spouse, a comment, a mail) or the mail devis.
    The regexes run on each value's JSON text and cannot span two JSON values (see ``phone_pattern``)."""
    if subject.kind == SubjectKind.FICHE:
        return set(FicheCache.objects.filter(fiche_id=subject.normalized).values_list("pk", flat=True)), set()
    op = "~" if subject.kind == SubjectKind.PHONE else "~*"
    p = [subject.pattern]
    own = _ids(f"SELECT id FROM fiche_cache WHERE raw_data::text {op} %s", p)
    own |= _ids(
        f"SELECT fiche_id FROM fiche_cache_details WHERE prospect::text {op} %s OR information::text {op} %s", p * 2
    )
    own |= _ids(f"SELECT fiche_id FROM recordings WHERE from_number {op} %s OR to_number {op} %s", p * 2)
    own |= _ids(f"SELECT fiche_id FROM transcriptions WHERE text {op} %s", p)
    others = " || '|' || ".join(f"coalesce({s}::text, '')" for s in _OTHER_SECTIONS)
    mentions = _ids(f"SELECT fiche_id FROM fiche_cache_details WHERE ({others}) {op} %s", p)
    mentions |= _ids(f"SELECT fiche_id FROM fiche_cache_mail_devis WHERE content::text {op} %s", p)
    return own, mentions - own


# --- The erasure ----------------------------------------------------------------------------------------------


@dataclass
class ErasureResult:
    """``request``: the recorded entry (``None`` on a dry run); ``fiche_ids``: the person's fiches, erased;
    ``mentioning``: other prospects' fiches where records naming the person were blanked; ``counts``: rows
    removed or changed per kind of data (would be, on a dry run)."""

    request: ErasureRequest | None
    fiche_ids: list[str]
    mentioning: list[str]
    counts: dict[str, int]
    dry_run: bool

    @property
    def found(self) -> bool:
        return bool(self.fiche_ids or self.mentioning)

    @property
    def changed(self) -> int:
        return sum(self.counts.values())


class _Eraser:
    def __init__(self, person: Person, *, dry_run: bool):
        self.person = person
        self.dry_run = dry_run
        self.counts = dict.fromkeys(COUNT_KINDS, 0)
        self.now = timezone.now()

    def count(self, kind: str, n: int | bool = 1) -> None:
        self.counts[kind] += int(n)

    def scrubbed(self, rows: Iterable[Any], fields: dict[str, Callable[[Any], Any]]) -> list[Any]:
        """The rows whose fields ``fields`` change (set on them) when scrubbed."""
        changed = []
        for row in rows:
            dirty = False
            for name, fn in fields.items():
                before = getattr(row, name)
                after = fn(before)
                if after != before:
                    setattr(row, name, after)
                    dirty = True
            if dirty:
                changed.append(row)
        return changed

    def text(self, value: str | None) -> str | None:
        return self.person.scrub(value)

    def json(self, value: Any) -> Any:
        return self.person.scrub_json(value)

    # The fiche itself ---------------------------------------------------------------------------------------

    def fiche(self, fiche: FicheCache) -> None:
        raw = fiche.raw_data or {}
        kept = {k: v for k, v in raw.items() if k in ERASED_FICHE_KEEPS or k == SALES_LIST_ONLY}
        changes: dict[str, Any] = {}
        if fiche.prospect_nom is not None or fiche.prospect_prenom is not None:
            changes |= {"prospect_nom": None, "prospect_prenom": None}
        if kept != raw:
            changes["raw_data"] = kept
        if fiche.erased_at is None:
            changes["erased_at"] = self.now
        if changes:
            FicheCache.objects.filter(pk=fiche.pk).update(**changes, updated_at=self.now)
            self.count("fiches")
        details = FicheCacheDetails.objects.filter(fiche=fiche).first()
        if details is not None:
            blank: dict[str, Any] = {section: None for section in DETAIL_SECTIONS if section != "information"}
            blank["information"] = {k: v for k, v in (details.information or {}).items() if k in ERASED_FICHE_KEEPS}
            blank["present_sections"] = [s for s in details.present_sections if s in _FULL_SECTIONS]
            if any(getattr(details, k) != v for k, v in blank.items()):
                FicheCacheDetails.objects.filter(pk=details.pk).update(**blank, updated_at=self.now)
                self.count("fiche_details")
        self.count("mail_devis", FicheCacheMailDevis.objects.filter(fiche=fiche).delete()[0])
        self.count(
            "recordings",
            Recording.objects.filter(fiche=fiche)
            .filter(
                Q(from_number__isnull=False)
                | Q(to_number__isnull=False)
                | Q(recording_url__isnull=False)
                | ~Q(raw_data={})
            )
            .update(from_number=None, to_number=None, recording_url=None, raw_data={}, updated_at=self.now),
        )

    def mentions(self, fiche: FicheCache, matcher: re.Pattern[str]) -> None:
        """Another prospect's fiche naming the person: the records holding the value are blanked."""
        changed = False
        details = FicheCacheDetails.objects.filter(fiche=fiche).first()
        if details is not None:
            updates = {}
            for section in _OTHER_SECTIONS:
                before = getattr(details, section)
                after = _blank_records(before, matcher)
                if after != before:
                    updates[section] = after
            if updates:
                FicheCacheDetails.objects.filter(pk=details.pk).update(**updates, updated_at=self.now)
                changed = True
        mail = FicheCacheMailDevis.objects.filter(fiche=fiche).first()
        if mail is not None:
            after = _blank_records(mail.content, matcher)
            if after != mail.content:
                FicheCacheMailDevis.objects.filter(pk=mail.pk).update(content=after, updated_at=self.now)
                changed = True
        self.count("fiche_mentions", changed)

    # Transcripts ---------------------------------------------------------------------------------------------

    def transcriptions(self, fiche: FicheCache) -> None:
        active = TranscriptionRun.objects.filter(fiche=fiche).exclude(status__in=TERMINAL_RUN_STATUSES)
        for run_id in active.values_list("pk", flat=True):
            if self.dry_run or run_finalize_now(run_id=str(run_id), reason=ERASED_REASON):
                self.count("runs_ended")
        runs = self.scrubbed(
            TranscriptionRun.objects.filter(fiche=fiche).exclude(error=None).exclude(error=""), {"error": self.text}
        )
        TranscriptionRun.objects.bulk_update(runs, ["error"])
        self.count("transcription_runs", len(runs))
        self.count(
            "transcriptions", Transcription.objects.filter(fiche=fiche).delete()[1].get(Transcription._meta.label, 0)
        )

    # Audits ---------------------------------------------------------------------------------------------------

    def audits(self, fiche: FicheCache) -> list[str]:
        """Scrub the fiche's audits (verdicts and scores untouched); end those still going. Their ids."""
        audits = list(Audit.objects.filter(fiche=fiche))
        for audit in audits:
            if audit.status in TERMINAL_AUDIT_STATUSES:
                continue
            if self.dry_run or audit_fail_now(audit_id=str(audit.pk), reason=ERASED_REASON, phase="erasure"):
                self.count("runs_ended")
        AuditStepResult.objects.filter(audit__fiche=fiche, status__in=[StepStatus.PENDING, StepStatus.RUNNING]).update(
            status=StepStatus.FAILED, claim_token=None, claimed_at=None, error=ERASED_REASON
        )
        reruns = RerunEvent.objects.filter(audit__fiche=fiche)
        for rerun_id in reruns.filter(status__in=[RerunStatus.PENDING, RerunStatus.RUNNING]).values_list(
            "pk", flat=True
        ):
            if not self.dry_run:
                rerun_fail(rerun_id=str(rerun_id), error=ERASED_REASON)
            self.count("runs_ended")
        reruns.exclude(claim_token=None).update(claim_token=None)

        audits = list(Audit.objects.filter(fiche=fiche))
        rows = self.scrubbed(audits, {"error": self.text, "critical_issues": self.json})
        Audit.objects.bulk_update(rows, ["error", "critical_issues"])
        self.count("audits", len(rows))

        steps = self.scrubbed(
            AuditStepResult.objects.filter(audit__fiche=fiche),
            {"raw_result": lambda v: self.json(_blank_quotes(v)), "error": self.text},
        )
        AuditStepResult.objects.bulk_update(steps, ["raw_result", "error"])
        self.count("audit_step_results", len(steps))

        points = self.scrubbed(
            ControlPointResult.objects.filter(step_result__audit__fiche=fiche).exclude(rationale=""),
            {"rationale": self.text},
        )
        ControlPointResult.objects.bulk_update(points, ["rationale"])
        self.count("control_points", len(points))

        self.count(
            "citations",
            Citation.objects.filter(control_point__step_result__audit__fiche=fiche)
            .exclude(quote="", text="")
            .update(quote="", text=""),
        )

        reviews = self.scrubbed(HumanReview.objects.filter(step_result__audit__fiche=fiche), {"comment": self.text})
        HumanReview.objects.bulk_update(reviews, ["comment"])
        self.count("reviews", len(reviews))

        disputes = self.scrubbed(
            Dispute.objects.filter(audit__fiche=fiche), {"comment": self.text, "resolution_comment": self.text}
        )
        Dispute.objects.bulk_update(disputes, ["comment", "resolution_comment"])
        self.count("disputes", len(disputes))

        rerun_fields = ["instructions", "error", "original", "rerun", "comparison"]
        rerun_rows = self.scrubbed(
            RerunEvent.objects.filter(audit__fiche=fiche),
            {"instructions": self.text, "error": self.text, **dict.fromkeys(rerun_fields[2:], self.json)},
        )
        RerunEvent.objects.bulk_update(rerun_rows, rerun_fields)
        self.count("reruns", len(rerun_rows))

        def result(value: Any) -> Any:
            if isinstance(value, dict) and isinstance(value.get("changed"), list):
                value = {**value, "changed": [_no_quotes(c, fiche.fiche_id) for c in value["changed"]]}
            return self.json(value)

        evaluations = self.scrubbed(
            Evaluation.objects.filter(fiche_ids__contains=[fiche.fiche_id]), {"result": result, "error": self.text}
        )
        Evaluation.objects.bulk_update(evaluations, ["result", "error"])
        self.count("evaluations", len(evaluations))
        return [str(a.pk) for a in audits]

    # Chats, webhooks, logs, automation -------------------------------------------------------------------------

    def chats(self, fiche: FicheCache, audit_ids: list[str]) -> None:
        conversations = ChatConversation.objects.filter(
            Q(entity_type=EntityType.FICHE, entity_id=fiche.fiche_id)
            | Q(entity_type=EntityType.AUDIT, entity_id__in=audit_ids)
        )
        deleted = conversations.delete()[1]
        self.count("chat_conversations", deleted.get(ChatConversation._meta.label, 0))
        self.count("chat_messages", deleted.get(ChatMessage._meta.label, 0))

    def outputs(self, fiche_ids: list[str]) -> None:
        """Webhook bodies and workflow logs naming the fiches (their id as a JSON value) or the person's phone or
        e-mail (not their name: too many false matches in other sales' messages)."""
        regexes = [(_fiche_id_pattern(fiche_ids), "~")] if fiche_ids else []
        regexes += [(phone_pattern(number), "~") for number in self.person.phones.values()]
        regexes += [(email_pattern(email), "~*") for email in sorted(self.person.emails)]
        if not regexes:
            return

        def naming(table: str, column: str) -> RawSQL:
            where = " OR ".join(f"{column} {op} %s" for _, op in regexes)
            return RawSQL(f"SELECT id FROM {table} WHERE {where}", [r for r, _ in regexes])

        deliveries = list(WebhookDelivery.objects.filter(pk__in=naming("webhook_deliveries", "payload")))
        for delivery in deliveries:
            delivery.payload = _blanked_message(delivery.payload)
            delivery.last_error = self.text(delivery.last_error)
        WebhookDelivery.objects.bulk_update(deliveries, ["payload", "last_error"])
        self.count("webhook_deliveries", len(deliveries))
        attempts = WebhookDeliveryAttempt.objects.filter(
            Q(delivery__in=[d.pk for d in deliveries]) | Q(pk__in=naming("webhook_delivery_attempts", "response_body"))
        )
        rows = self.scrubbed(attempts, {"response_body": lambda v: "", "error": self.text})
        WebhookDeliveryAttempt.objects.bulk_update(rows, ["response_body", "error"])
        self.count("webhook_attempts", len(rows))
        logs = WorkflowLog.objects.filter(pk__in=naming("workflow_logs", "data::text"))
        self.count("workflow_logs", logs.delete()[0])

    def results(self, fiche: FicheCache) -> None:
        rows = self.scrubbed(
            AutomationRunFicheResult.objects.filter(fiche_id=fiche.fiche_id), {"reason": self.text, "error": self.text}
        )
        AutomationRunFicheResult.objects.bulk_update(rows, ["reason", "error"])
        self.count("automation_results", len(rows))
        items = self.scrubbed(BatchItem.objects.filter(fiche_id=fiche.fiche_id), {"error": self.text})
        BatchItem.objects.bulk_update(items, ["error"])
        self.count("batch_items", len(items))


def _no_quotes(entry: Any, fiche_id: str) -> Any:
    """An evaluation's changed verdict of the fiche without its quotes."""
    if not isinstance(entry, dict) or entry.get("fiche_id") != fiche_id:
        return entry
    return {k: ({**v, "quotes": []} if isinstance(v, dict) and "quotes" in v else v) for k, v in entry.items()}


def _blanked_message(payload: str) -> str:
    """A webhook body reduced to its envelope: ``{"type", "timestamp", "data": {"redacted": true}}``."""
    try:
        message = orjson.loads(payload)
    except orjson.JSONDecodeError:
        message = {}
    envelope = {k: message[k] for k in ("type", "timestamp") if isinstance(message, dict) and k in message}
    return orjson.dumps({**envelope, "data": {"redacted": True}}).decode()


def _collect(person: Person, fiches: list[FicheCache]) -> None:
    """The person's values, from their fiches (columns, CRM data, details' person records)."""
    details = {d.fiche_id: d for d in FicheCacheDetails.objects.filter(fiche__in=fiches)}
    for fiche in fiches:
        person.add_name(fiche.prospect_nom)
        person.add_name(fiche.prospect_prenom)
        raw = fiche.raw_data or {}
        person.add_record(raw.get("prospect"))
        row = details.get(fiche.pk)
        if row is not None:
            for section in ("prospect", "conjoint", "enfants"):
                person.add_record(getattr(row, section))


def _glob(text: str) -> str:
    return re.sub(r"([\[\]*?\\])", r"\\\1", text)


def clear_redis(fiches: list[tuple[str, date]], *, dry_run: bool = False) -> dict[str, int]:
    """Delete the fiches' timeline cache and the rendered range pages covering their dates (count only on a dry
    run); bump their dates' versions. Redis down: logged (the timeline expires within
    ``RETENTION_TIMELINE_CACHE_SECONDS``, a range page within ``RANGE_RESPONSE_CACHE_SECONDS``)."""
    counts = {"timeline_cache_keys": 0, "range_cache_keys": 0}
    if not fiches:
        return counts
    days = {day for _, day in fiches}
    try:
        client = get_redis()
        timeline = [k for fiche_id, _ in fiches for k in client.scan_iter(match=f"timeline:{_glob(fiche_id)}:*")]
        ranges = []
        for key in client.scan_iter(match="fiche-range-json:*"):
            parts = (key.decode() if isinstance(key, bytes) else key).split(":")
            try:
                start, end = date.fromisoformat(parts[1]), date.fromisoformat(parts[2])
            except (IndexError, ValueError):
                continue
            if any(start <= day <= end for day in days):
                ranges.append(key)
        if not dry_run:
            for batch in (timeline, ranges):
                if batch:
                    client.delete(*batch)
        counts["timeline_cache_keys"], counts["range_cache_keys"] = len(timeline), len(ranges)
    except RedisError:
        logger.warning("erasure_redis_unavailable", extra={"fiches": len(fiches)})
    if not dry_run:
        bump_cache_version(days)
    return counts


def erase(
    subject_kind: str,
    value: str,
    *,
    user: User | None = None,
    via: str = "command",
    reason: str = "",
    dry_run: bool = False,
    max_fiches: int | None = DEFAULT_MAX_FICHES,
) -> ErasureResult:
    """Erase the personal data of the person ``value`` identifies (``subject_kind``: fiche, phone or email).

    Raises ``InvalidSubject`` (bad kind, phone or e-mail) and ``TooManyFiches`` (more than ``max_fiches`` of
    the person's fiches: ``None`` for no limit). Nothing found is not an error: the entry has zero counts."""
    subject = parse_subject(subject_kind, value)
    person = Person()
    if subject.phone is not None:
        person.add_phone(subject.normalized)
    elif subject.kind == SubjectKind.EMAIL:
        person.emails.add(subject.normalized)
    with transaction.atomic():
        own, mentioning = find_fiches(subject)
        if max_fiches is not None and len(own) > max_fiches:
            raise TooManyFiches(
                f"{len(own)} fiches hold this {subject.kind} (more than {max_fiches}): check with a dry run.",
                details={"fiches": len(own), "max_fiches": max_fiches},
            )
        ids = sorted(own | mentioning)
        days = sorted(set(FicheCache.objects.filter(pk__in=ids).values_list("sales_date", flat=True)))
        with connection.cursor() as cursor:  # the dates' fetch lock first, as the sales-list cache writes take it
            cursor.execute(
                "SELECT sales_date FROM fiche_sales_dates WHERE sales_date = ANY(%s) ORDER BY sales_date FOR UPDATE",
                [days],
            )
        fiches = list(FicheCache.objects.select_for_update().filter(pk__in=ids).order_by("pk"))
        erased = [f for f in fiches if f.pk in own]
        _collect(person, erased)
        eraser = _Eraser(person, dry_run=dry_run)
        matcher = re.compile(subject.pattern, re.IGNORECASE) if subject.kind != SubjectKind.FICHE else None
        for fiche in fiches:
            if fiche.pk in own:
                eraser.fiche(fiche)
                eraser.transcriptions(fiche)
                eraser.chats(fiche, eraser.audits(fiche))
                eraser.results(fiche)
            elif matcher is not None:
                eraser.mentions(fiche, matcher)
        eraser.outputs([f.fiche_id for f in erased])
        fiche_ids = sorted(f.fiche_id for f in erased)
        mentions = sorted(f.fiche_id for f in fiches if f.pk not in own)
        request = None
        if dry_run:
            transaction.set_rollback(True)
        else:
            request = ErasureRequest.objects.create(
                subject_kind=subject.kind,
                subject_digest=subject.digest,
                fiche_ids=fiche_ids,
                counts=eraser.counts,
                reason=person.scrub(reason.strip()) or "",
                via=via,
                requested_by=user,
            )
    result = ErasureResult(request, fiche_ids, mentions, eraser.counts, dry_run)
    cached = [(f.fiche_id, f.sales_date) for f in erased]
    if dry_run:
        result.counts |= clear_redis(cached, dry_run=True)
    else:
        transaction.on_commit(lambda: _after_commit(result, cached))
    logger.info(
        "erasure_done" if not dry_run else "erasure_dry_run",
        extra={
            "erasure_id": str(request.pk) if request else None,
            "subject_kind": str(subject.kind),
            "fiches": len(fiche_ids),
            "mentioning": len(mentions),
            "changed": result.changed,
        },
    )
    return result


def _after_commit(result: ErasureResult, cached: list[tuple[str, date]]) -> None:
    """Redis, once the erasure is committed (a reader cannot cache the old data again), then the entry's counts
    and completion."""
    result.counts |= clear_redis(cached)
    request = result.request
    assert request is not None
    request.counts, request.completed_at = result.counts, timezone.now()
    ErasureRequest.objects.filter(pk=request.pk).update(counts=request.counts, completed_at=request.completed_at)
