"""A fiche's conversation from its recordings' diarized words: pure functions, no ORM, no I/O.

Input words are the speech-to-text words (``SttResult.words``: dicts with ``text``, ``start``, ``end``,
``type`` ``word``/``spacing``, ``speaker_id``). The pipeline:

1. ``map_speakers(words, ...)`` labels each diarization speaker ``agent`` or ``client``;
2. ``build_turns(recordings)`` merges consecutive words of one speaker into turns
   ``{"call_id", "speaker", "start", "end", "text"}`` (seconds from the recording's start);
3. ``chunk_turns(turns)`` groups turns into search chunks that never span two recordings;
4. ``render_turn`` / ``render_timeline`` write the text the LLM reads.

**Text contract** (parsed by other components, e.g. the LLM simulator; keep it exact):

- a turn line is ``[mm:ss] Agent: text`` or ``[mm:ss] Client: text``: minutes zero-padded to at least two
  digits and never wrapped at 60 (``[75:02]``), seconds floored; see ``TURN_LINE_RE``;
- a recording starts with a header line ``### Appel <call_id>``, followed, when known, by
  `` — YYYY-MM-DD HH:MM`` (the start as given, not converted) and `` — appel sortant`` / `` — appel entrant``;
  see ``HEADER_RE``. One blank line separates two recordings.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any

AGENT = "agent"
CLIENT = "client"
SPEAKER_LABELS: dict[str, str] = {AGENT: "Agent", CLIENT: "Client"}
DIRECTION_LABELS: dict[str, str] = {"outbound": "appel sortant", "inbound": "appel entrant"}
TURN_LINE_RE = re.compile(r"^\[(?P<minutes>\d{2,}):(?P<seconds>[0-5]\d)\] (?P<speaker>Agent|Client): (?P<text>.*)$")
HEADER_RE = re.compile(
    r"^### Appel (?P<call_id>\S+)(?: — (?P<started_at>\d{4}-\d{2}-\d{2} \d{2}:\d{2}))?"
    r"(?: — (?P<direction>.+))?$"
)
HEADER_SEPARATOR = " — "

# A self-introduction counts wherever it occurs; the weaker cues only early in the call, where the agent
# introduces themself (a client may say "je suis assurée chez ..." later on).
SELF_INTRODUCTION_WINDOW_SECONDS = 45.0
_STRONG_INTRO = re.compile(r"\b(?:je m appelle|mon nom est|mon nom c est|a l appareil|je me presente|cabinet \w+)\b")
_WEAK_INTRO = re.compile(
    r"(?:\bje suis \w+(?: \w+)? (?:de|du|des|d|chez|pour)\b|^(?:\w+ ){0,3}ici \w+|\bmoi c est \w+)"
)
# What a callee says on picking up an outbound call before anything else.
_PICKUP_WORDS = frozenset({"allo", "oui", "bonjour", "j", "ecoute", "hello"})


# --- Normalization ----------------------------------------------------------------------------------


def normalize_text(text: str) -> str:
    """Lowercase, accents removed, every run of non-alphanumeric characters (apostrophes too) one space."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    stripped = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return " ".join(re.sub(r"[^0-9a-z]+", " ", stripped).split())


# --- Speakers ---------------------------------------------------------------------------------------


def _speaker_runs(words: Sequence[Mapping[str, Any]]) -> Iterator[tuple[str, float, str]]:
    """``(speaker_id, start, normalized text)`` of each run of consecutive words of one speaker, lazily."""
    speaker: str | None = None
    start = 0.0
    texts: list[str] = []
    for word in words:
        if word.get("type", "word") != "word" or word.get("speaker_id") is None:
            continue
        if str(word["speaker_id"]) != speaker:
            if speaker is not None:
                yield speaker, start, normalize_text(" ".join(texts))
            speaker, start, texts = str(word["speaker_id"]), float(word.get("start") or 0.0), []
        texts.append(str(word.get("text", "")))
    if speaker is not None:
        yield speaker, start, normalize_text(" ".join(texts))


def _introduces_self(text: str, start: float, names: Sequence[str], first_name: str | None) -> bool:
    """Whether a run (normalized ``text``) states a company / the agent's name or is a self-introduction;
    ``names`` are normalized."""
    padded = f" {text} "
    if any(f" {name} " in padded for name in names):
        return True
    if first_name and re.search(
        rf"\b(?:je suis|c est|ici|moi c est) {re.escape(first_name)}\b|"
        rf"\b{re.escape(first_name)} a l appareil\b",
        text,
    ):
        return True
    if _STRONG_INTRO.search(text):
        return True
    return start <= SELF_INTRODUCTION_WINDOW_SECONDS and bool(_WEAK_INTRO.search(text))


def map_speakers(
    words: Sequence[Mapping[str, Any]],
    *,
    direction: str | None,
    agent_name: str | None,
    company_names: Sequence[str] = (),
) -> dict[str, str]:
    """``{"speaker_0": "agent", "speaker_1": "client"}`` for the speakers of ``words``.

    The agent is the speaker who first states a company name, the agent's full name, or introduces
    themself ("je m'appelle ...", "... à l'appareil", "cabinet ...", early on "je suis ... de ...",
    "ici ..."), accent- and case-insensitively. Otherwise the first speaker, except that on an outbound call
    a first turn that is only a pickup ("Allô ?", "Oui ?") belongs to the callee, the client. Every other
    speaker is a client. No speakers (no words, no diarization): an empty mapping.
    """
    speakers = list(
        dict.fromkeys(
            str(word["speaker_id"])
            for word in words
            if word.get("type", "word") == "word" and word.get("speaker_id") is not None
        )
    )
    if not speakers:
        return {}
    names = [normalized for name in (*company_names, agent_name or "") if (normalized := normalize_text(name))]
    agent_words = normalize_text(agent_name or "").split()
    first_name = agent_words[0] if agent_words else None
    agent: str | None = None
    first_runs: list[tuple[str, float, str]] = []
    for run in _speaker_runs(words):  # stops at the introduction, usually within the first few runs
        if len(first_runs) < 2:
            first_runs.append(run)
        if _introduces_self(run[2], run[1], names, first_name):
            agent = run[0]
            break
    if agent is None:
        agent = first_runs[0][0]
        first_text = first_runs[0][2]
        if direction == "outbound" and len(first_runs) > 1 and first_text and set(first_text.split()) <= _PICKUP_WORDS:
            agent = first_runs[1][0]
    return {speaker: AGENT if speaker == agent else CLIENT for speaker in speakers}


# --- Turns ------------------------------------------------------------------------------------------


def _recording_order(recording: Mapping[str, Any]) -> tuple[int, float, str]:
    started_at = recording.get("started_at")
    if isinstance(started_at, datetime):
        return 0, started_at.timestamp(), str(recording["call_id"])
    return 1, 0.0, str(recording["call_id"])  # undated recordings last


def build_turns(recordings: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The turns of ``recordings`` (each ``{"call_id", "started_at", "words", "speaker_map"}``).

    Recordings are ordered by ``started_at`` (undated ones last) then ``call_id``; within one, turns follow
    the words' order. Consecutive words of one label (``speaker_map`` value; a speaker missing from it is a
    client) form one turn; its text joins the words with the spacing items between them (a space when the
    server gave none), whitespace normalized. Items other than ``word``/``spacing`` are ignored.
    """
    turns: list[dict[str, Any]] = []
    for recording in sorted(recordings, key=_recording_order):
        call_id = str(recording["call_id"])
        speaker_map: Mapping[str, str] = recording.get("speaker_map") or {}
        words = recording.get("words") or ()
        # Servers that give no spacing items at all get a space between words; otherwise spacing is verbatim.
        default_gap = "" if any(word.get("type") == "spacing" for word in words) else " "
        speaker: str | None = None
        parts: list[str] = []
        start = end = 0.0
        gap = ""  # the spacing text since the last word of the current turn

        labels: dict[Any, str] = {}  # speaker id -> label, looked up once per speaker
        for word in words:
            kind = word.get("type", "word")
            if kind == "spacing":
                gap += word.get("text") or " "
                continue
            if kind != "word":
                continue
            speaker_id = word.get("speaker_id")
            label = labels.get(speaker_id)
            if label is None:
                label = labels[speaker_id] = speaker_map.get(str(speaker_id), CLIENT)
            if label != speaker:
                if speaker is not None:
                    turns.append(_turn(call_id, speaker, start, end, parts))
                speaker, parts, start = label, [], float(word["start"])
            else:
                parts.append(gap or default_gap)
            parts.append(word["text"])
            end = word["end"]
            gap = ""
        if speaker is not None:
            turns.append(_turn(call_id, speaker, start, end, parts))
    return turns


def _turn(call_id: str, speaker: str, start: float, end: float, parts: list[str]) -> dict[str, Any]:
    return {
        "call_id": call_id,
        "speaker": speaker,
        "start": float(start),
        "end": float(end),
        "text": " ".join("".join(map(str, parts)).split()),
    }


# --- Chunks -----------------------------------------------------------------------------------------


def _pieces(turn: Mapping[str, Any], max_seconds: float, max_words: int) -> list[dict[str, Any]]:
    """``turn`` itself, or, when it alone exceeds a limit, consecutive pieces of it (split at word boundaries,
    times interpolated by word position) that each respect both limits (a single word longer than
    ``max_seconds`` cannot, and stays whole)."""
    words = str(turn["text"]).split()
    duration = float(turn["end"]) - float(turn["start"])
    if len(words) <= max_words and duration <= max_seconds or len(words) <= 1:
        return [dict(turn)]
    per_piece = max_words
    if duration > max_seconds:
        per_piece = max(1, min(max_words, math.floor(max_seconds * len(words) / duration)))
    count = math.ceil(len(words) / per_piece)
    size = math.ceil(len(words) / count)  # <= per_piece, pieces as even as possible
    pieces = []
    for first in range(0, len(words), size):
        last = min(first + size, len(words))
        pieces.append(
            {
                **turn,
                "start": float(turn["start"]) + duration * first / len(words),
                "end": float(turn["start"]) + duration * last / len(words),
                "text": " ".join(words[first:last]),
            }
        )
    return pieces


def chunk_turns(
    turns: Sequence[Mapping[str, Any]], *, max_seconds: float = 60.0, max_words: int = 200
) -> list[dict[str, Any]]:
    """Search chunks of consecutive turns: ``{"chunk_id": "<call_id>#<n>", "call_id", "start", "end", "text",
    "turn_indices"}``; ``n`` counts from 1 within each recording and ``turn_indices`` number the chunk's turns
    within their recording from 0 (the contract of ``audits.transcript_tools``).

    A chunk never spans two recordings, lasts at most ``max_seconds`` (first start to last end) and holds at
    most ``max_words`` words. A turn that alone exceeds a limit is split into pieces (times interpolated),
    each in its own chunk, all listing that turn's index. ``text`` is the chunk's turn lines (``render_turn``)
    joined by newlines.
    """
    if max_seconds <= 0 or max_words <= 0:
        raise ValueError("max_seconds and max_words must be positive")
    chunks: list[dict[str, Any]] = []
    counters: dict[str, int] = {}
    current: dict[str, Any] | None = None
    lines: list[str] = []
    word_count = 0

    def close() -> None:
        if current is not None:
            current["text"] = "\n".join(lines)
            chunks.append(current)

    turns_seen: dict[str, int] = {}
    for turn in turns:
        index = turns_seen.get(str(turn["call_id"]), 0)  # the turn's number within its recording
        turns_seen[str(turn["call_id"])] = index + 1
        for piece in _pieces(turn, max_seconds, max_words):
            call_id = str(piece["call_id"])
            piece_words = len(str(piece["text"]).split())
            if (
                current is None
                or current["call_id"] != call_id
                or float(piece["end"]) - current["start"] > max_seconds
                or word_count + piece_words > max_words
            ):
                close()
                counters[call_id] = counters.get(call_id, 0) + 1
                current = {
                    "chunk_id": f"{call_id}#{counters[call_id]}",
                    "call_id": call_id,
                    "start": float(piece["start"]),
                    "end": float(piece["end"]),
                    "text": "",
                    "turn_indices": [],
                }
                lines, word_count = [], 0
            current["end"] = max(current["end"], float(piece["end"]))
            if not current["turn_indices"] or current["turn_indices"][-1] != index:
                current["turn_indices"].append(index)
            lines.append(render_turn(piece))
            word_count += piece_words
    close()
    return chunks


# --- Rendering --------------------------------------------------------------------------------------


def format_offset(seconds: float) -> str:
    """``mm:ss`` of an offset in seconds (floored; minutes not wrapped at 60)."""
    total = max(0, math.floor(seconds))
    return f"{total // 60:02d}:{total % 60:02d}"


def render_turn(turn: Mapping[str, Any]) -> str:
    """``[mm:ss] Agent: text`` or ``[mm:ss] Client: text``."""
    label = SPEAKER_LABELS.get(str(turn["speaker"]), SPEAKER_LABELS[CLIENT])
    return f"[{format_offset(float(turn['start']))}] {label}: {turn['text']}"


def _header(call_id: str, meta: Mapping[str, Any] | None) -> str:
    parts = [f"### Appel {call_id}"]
    if meta:
        started_at = meta.get("started_at")
        if isinstance(started_at, str) and started_at:
            try:
                started_at = datetime.fromisoformat(started_at)
            except ValueError:
                started_at = None
        if isinstance(started_at, datetime):
            parts.append(started_at.strftime("%Y-%m-%d %H:%M"))
        direction = meta.get("direction")
        if direction:
            parts.append(DIRECTION_LABELS.get(str(direction), str(direction)))
    return HEADER_SEPARATOR.join(parts)


def render_timeline(
    turns: Sequence[Mapping[str, Any]], recordings_meta: Mapping[str, Mapping[str, Any]] | None = None
) -> str:
    """The conversation as text: for each recording (in the order of ``turns``) a header line then its turn
    lines; a blank line between recordings. ``recordings_meta`` maps a call id to ``started_at``
    (datetime or ISO string) and ``direction`` (``outbound``/``inbound``) for the header."""
    blocks: list[list[str]] = []
    current: str | None = None
    for turn in turns:
        call_id = str(turn["call_id"])
        if call_id != current:
            current = call_id
            blocks.append([_header(call_id, (recordings_meta or {}).get(call_id))])
        blocks[-1].append(render_turn(turn))
    return "\n\n".join("\n".join(block) for block in blocks)
