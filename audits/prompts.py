"""Versioned French prompts of the audit steps and the structured answer the LLM must give.

The LLM judges each control point of one audit step from the call transcripts, quote first: it copies the
words of the call word for word, then gives ``pass`` / ``fail`` / ``not_applicable``. It never computes
scores (weights and criticality are applied by our code).

Messages of ``build_step_messages`` (``PROMPT_VERSION`` names this layout; bump it with any change):

1. ``system``: the audit rules (``SYSTEM_RULES``), plus ``TOOLS_RULES`` in tools mode.
2. ``user``: Markdown sections, in this order, each starting with a line of its exact marker::

       # Étape <position> : <name>[ (étape critique)]
       ## Consignes de l'étape          (only when the step has instructions)
       <instructions>
       ## Consignes du relecteur        (only with reviewer_instructions)
       <reviewer instructions>
       ## Points de contrôle
       [<index>] <question> — Indice : <evidence_hint> — Preuve : paroles de l'agent (conditionnel) (critique)
       ## Fiche
       <fiche_context>
       ## Transcription                 (prompt mode only; absent in tools mode)
       <timeline text>
       ## Recherche                     (tools mode only)
       <how to use the tools>

   Control point lines: ``[<index>] <question>``, then `` — Indice : <hint>`` when the hint is not empty
   (an em dash between single spaces), then `` — Preuve : paroles de l'agent`` (``du client``, ``de l'agent
   ou du client``: whose words prove the point), then `` (conditionnel)`` for a conditional point (the only
   kind that may be ``not_applicable``) and `` (critique)`` for a critical point; whitespace inside the
   question and hint is collapsed so each point is exactly one line. ``CONTROL_POINT_LINE`` parses one line
   (the simulator's judge uses it).

The timeline text (produced by the transcription component; a contract) is one header line per recording,
``### Appel <call_id> …``, then one line per speaker turn, ``[mm:ss] Agent: <text>`` or
``[mm:ss] Client: <text>`` (minutes may exceed 59). ``TIMELINE_TURN_LINE`` parses one turn line.

``prompt_hash(messages)`` is the sha256 of the canonical JSON (sorted keys, no spaces, UTF-8) of
``PROMPT_VERSION`` and the role and content of the ``system`` and ``user`` messages: what the step was asked,
stored with each step result (assistant and tool messages of later rounds are not part of it).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import pydantic

PROMPT_VERSION = "audit-step-fr-2026-12"

POINTS_MARKER = "## Points de contrôle"
TRANSCRIPT_MARKER = "## Transcription"
FICHE_MARKER = "## Fiche"
STEP_INSTRUCTIONS_MARKER = "## Consignes de l'étape"
REVIEWER_MARKER = "## Consignes du relecteur"
TOOLS_MARKER = "## Recherche"
HINT_SEPARATOR = " — Indice : "
SPEAKER_SEPARATOR = " — Preuve : "
CONDITIONAL_SUFFIX = " (conditionnel)"
CRITICAL_SUFFIX = " (critique)"
SPEAKER_WORDS = {"agent": "paroles de l'agent", "client": "paroles du client", "any": "paroles de l'agent ou du client"}
_SPEAKER_BY_WORDS = {words: speaker for speaker, words in SPEAKER_WORDS.items()}

CONTROL_POINT_LINE = re.compile(
    r"^\[(?P<index>\d+)\] (?P<question>.+?)(?: — Indice : (?P<hint>.*?))?"
    r"(?: — Preuve : (?P<speaker>paroles de l'agent ou du client|paroles de l'agent|paroles du client))?"
    r"(?P<conditional> \(conditionnel\))?(?P<critical> \(critique\))?$"
)
TIMELINE_CALL_HEADER = re.compile(r"^### Appel (?P<call_id>\S+)")
TIMELINE_TURN_LINE = re.compile(r"^\[(?P<minutes>\d+):(?P<seconds>[0-5]\d)\] (?P<speaker>Agent|Client): (?P<text>.*)$")

SYSTEM_RULES = """\
Vous êtes auditeur qualité et conformité d'un centre d'appels qui vend des assurances par téléphone en France.
Vous évaluez une étape d'audit d'une vente à partir des appels enregistrés.

Règles :
1. Citez d'abord, jugez ensuite : copiez mot pour mot les paroles de l'appel ; pas de citation, pas de conformité.
2. Une citation est un extrait exact d'une réplique (au moins quatre mots, sans l'horodatage ni le nom du \
locuteur) ; indiquez qui parle : "agent" ou "client".
3. Donnez exactement une réponse par point de contrôle listé, avec son numéro dans "index".
4. "pass" : les citations prouvent que le point est respecté. "fail" : le point manque ou est contredit ; \
citez la réplique qui le contredit s'il y en a une. Une phrase négative (« vous n'avez pas de délai de \
rétractation », « aucun droit ») contredit le point.
5. "not_applicable" uniquement pour un point marqué (conditionnel) dont la condition ne se présente pas dans \
l'appel ; expliquez pourquoi dans "rationale". Sur tout autre point, "not_applicable" est refusé.
6. « Preuve : paroles de l'agent » : seules les paroles de l'agent prouvent le point (une phrase du client ne le \
prouve pas) ; « paroles du client » : seules celles du client.
7. "rationale" : une ou deux phrases en français qui justifient le statut à partir des citations.
8. Ne calculez ni note ni score. Répondez uniquement avec l'objet JSON demandé."""

TOOLS_RULES = """\
La transcription n'est pas dans le message : appelez searchTranscript avec les mots-clés de chaque point, puis \
getTranscriptChunks pour lire les passages utiles, puis répondez. Citez uniquement le texte renvoyé par \
getTranscriptChunks. Faites peu d'appels."""

TOOLS_SECTION = "Transcription non fournie : utilisez searchTranscript puis getTranscriptChunks avant de répondre."


# --- Structured answer ----------------------------------------------------------------------------------------


class QuoteOut(pydantic.BaseModel):
    """A verbatim excerpt of one turn of the call, and who said it."""

    model_config = pydantic.ConfigDict(extra="forbid")

    text: str
    speaker: Literal["agent", "client"] | None


class ControlPointAnswer(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")

    index: int
    status: Literal["pass", "fail", "not_applicable"]
    quotes: list[QuoteOut]
    rationale: str


class StepAnswer(pydantic.BaseModel):
    """The LLM's answer for one step: one entry per control point it was shown."""

    model_config = pydantic.ConfigDict(extra="forbid")

    control_points: list[ControlPointAnswer]


STEP_ANSWER_SCHEMA_NAME = "step_answer"


# --- Step description -----------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ControlPointSpec:
    index: int
    question: str
    evidence_hint: str
    is_critical: bool
    speaker: str = "agent"  # whose words prove it: agent, client or any
    conditional: bool = False  # the only kind of point that may be not_applicable


@dataclasses.dataclass(frozen=True)
class StepSpec:
    """One audit step as the prompt needs it; ``control_points`` accepts plain 4-tuples too."""

    position: int
    name: str
    instructions: str
    weight: int
    is_critical: bool
    control_points: Sequence[ControlPointSpec]

    def __post_init__(self) -> None:
        points = tuple(
            point if isinstance(point, ControlPointSpec) else ControlPointSpec(*point) for point in self.control_points
        )
        indices = [point.index for point in points]
        if len(set(indices)) != len(indices):
            raise ValueError(f"step {self.position}: duplicate control point indices {indices}")
        object.__setattr__(self, "control_points", points)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def render_control_point(point: ControlPointSpec) -> str:
    line = f"[{point.index}] {_one_line(point.question)}"
    hint = _one_line(point.evidence_hint or "")
    if hint:
        line += f"{HINT_SEPARATOR}{hint}"
    line += f"{SPEAKER_SEPARATOR}{SPEAKER_WORDS.get(point.speaker, SPEAKER_WORDS['agent'])}"
    if point.conditional:
        line += CONDITIONAL_SUFFIX
    if point.is_critical:
        line += CRITICAL_SUFFIX
    return line


def build_step_messages(
    *,
    step: StepSpec,
    fiche_context: str,
    timeline_text: str | None,
    use_tools: bool,
    reviewer_instructions: str | None = None,
    only_control_point: int | None = None,
) -> list[dict[str, Any]]:
    """The ``system`` and ``user`` messages asking the LLM to judge ``step`` (one point with ``only_control_point``).

    Prompt mode (``use_tools=False``) puts ``timeline_text`` in a ``## Transcription`` section; tools mode leaves
    the transcript out and tells the model to use the tools. ValueError for an unknown ``only_control_point`` or
    a prompt-mode call without a timeline.
    """
    points = list(step.control_points)
    if only_control_point is not None:
        points = [point for point in points if point.index == only_control_point]
        if not points:
            raise ValueError(f"step {step.position} has no control point {only_control_point}")
    if not use_tools and timeline_text is None:
        raise ValueError("prompt mode needs the timeline text")

    title = f"# Étape {step.position} : {_one_line(step.name)}"
    if step.is_critical:
        title += " (étape critique)"
    sections = [title]
    if step.instructions.strip():
        sections.append(f"{STEP_INSTRUCTIONS_MARKER}\n{step.instructions.strip()}")
    if reviewer_instructions and reviewer_instructions.strip():
        sections.append(f"{REVIEWER_MARKER}\n{reviewer_instructions.strip()}")
    sections.append(POINTS_MARKER + "\n" + "\n".join(render_control_point(point) for point in points))
    sections.append(f"{FICHE_MARKER}\n{fiche_context.strip() or '(aucune information)'}")
    if use_tools:
        sections.append(f"{TOOLS_MARKER}\n{TOOLS_SECTION}")
    else:
        sections.append(f"{TRANSCRIPT_MARKER}\n{(timeline_text or '').strip() or '(transcription vide)'}")

    system = SYSTEM_RULES + ("\n\n" + TOOLS_RULES if use_tools else "")
    return [{"role": "system", "content": system}, {"role": "user", "content": "\n\n".join(sections)}]


def parse_control_points(text: str) -> list[ControlPointSpec]:
    """The control points listed in a ``## Points de contrôle`` section of ``text`` (empty when there is none)."""
    body = section(text, POINTS_MARKER)
    if body is None:
        return []
    points = []
    for line in body.splitlines():
        match = CONTROL_POINT_LINE.match(line.strip())
        if match:
            points.append(
                ControlPointSpec(
                    int(match["index"]),
                    match["question"],
                    match["hint"] or "",
                    bool(match["critical"]),
                    _SPEAKER_BY_WORDS.get(match["speaker"] or "", "agent"),
                    bool(match["conditional"]),
                )
            )
    return points


def section(text: str, marker: str) -> str | None:
    """The body of the ``marker`` section of ``text`` (up to the next ``## `` heading), or None."""
    lines = text.splitlines()
    try:
        start = lines.index(marker)
    except ValueError:
        return None
    body = []
    for line in lines[start + 1 :]:
        if line.startswith("## "):
            break
        body.append(line)
    return "\n".join(body)


def prompt_hash(messages: Iterable[dict[str, Any]]) -> str:
    """sha256 (hex) of the canonical JSON of ``PROMPT_VERSION`` and the system and user messages."""
    parts = [
        {"role": message["role"], "content": message.get("content")}
        for message in messages
        if message.get("role") in ("system", "user")
    ]
    canonical = json.dumps(
        {"version": PROMPT_VERSION, "messages": parts}, sort_keys=True, ensure_ascii=False, separators=(",", ":")
    )
    return hashlib.sha256(canonical.encode()).hexdigest()
