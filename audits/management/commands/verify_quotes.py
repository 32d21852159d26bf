"""``manage.py verify_quotes --transcript T.json --quotes Q.json [--threshold 90]``: run the evidence gate.

``T.json`` is a JSON list of turns ``{"speaker", "start", "end"?, "text", "call_id"?}`` (``call_id``
defaults to ``"call"``; a missing ``end`` to the next turn's start, or for the last turn to its start plus
an estimate from the text's length). ``Q.json`` is a JSON list of strings or ``{"quote", "speaker"?}``
objects. One JSON line per quote is written to stdout:
``{"quote", "verified", "reason", "score", "speaker", "start", "end", "matched_text"}``.
The threshold defaults to ``settings.EVIDENCE_MATCH_THRESHOLD``. Exit status 0 whatever the verdicts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from audits.evidence import EvidenceIndex

SECONDS_PER_CHAR = 0.06  # ~16 characters a second of French speech, for a last turn without an end


def _read_json(path: str) -> Any:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise CommandError(f"{path}: file not found") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise CommandError(f"{path}: cannot be read ({exc})") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CommandError(f"{path}: malformed JSON ({exc})") from exc


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def load_turns(path: str) -> list[dict[str, Any]]:
    data = _read_json(path)
    if not isinstance(data, list):
        raise CommandError(f"{path}: expected a JSON list of turns, got {type(data).__name__}")
    turns: list[dict[str, Any]] = []
    for i, item in enumerate(data):
        where = f"{path}: turn {i}"
        if not isinstance(item, dict):
            raise CommandError(f"{where}: expected an object, got {type(item).__name__}")
        speaker, text, start, end = item.get("speaker"), item.get("text"), item.get("start"), item.get("end")
        if not isinstance(speaker, str) or not speaker.strip():
            raise CommandError(f"{where}: 'speaker' must be a non-empty string")
        if not isinstance(text, str):
            raise CommandError(f"{where}: 'text' must be a string")
        if not _is_number(start):
            raise CommandError(f"{where}: 'start' must be a number")
        assert isinstance(start, int | float)
        if end is not None and not _is_number(end):
            raise CommandError(f"{where}: 'end' must be a number when given")
        call_id = item.get("call_id")
        turns.append(
            {
                "call_id": "call" if call_id is None else str(call_id),
                "speaker": speaker,
                "start": float(start),
                "end": None if end is None else float(end),
                "text": text,
            }
        )
    for i, turn in enumerate(turns):
        if turn["end"] is None:
            following = turns[i + 1]["start"] if i + 1 < len(turns) else None
            if following is not None and following >= turn["start"]:
                turn["end"] = following
            else:
                turn["end"] = turn["start"] + len(turn["text"]) * SECONDS_PER_CHAR
    return turns


def load_quotes(path: str) -> list[tuple[str, str | None]]:
    data = _read_json(path)
    if not isinstance(data, list):
        raise CommandError(f"{path}: expected a JSON list of quotes, got {type(data).__name__}")
    quotes: list[tuple[str, str | None]] = []
    for i, item in enumerate(data):
        if isinstance(item, str):
            quotes.append((item, None))
            continue
        if not isinstance(item, dict) or not isinstance(item.get("quote"), str):
            raise CommandError(f"{path}: quote {i}: expected a string or an object with a string 'quote'")
        speaker = item.get("speaker")
        if speaker is not None and not isinstance(speaker, str):
            raise CommandError(f"{path}: quote {i}: 'speaker' must be a string or null")
        quotes.append((item["quote"], speaker or None))
    return quotes


class Command(BaseCommand):
    help = "Check quotes against a transcript with the evidence gate; prints one JSON line per quote."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--transcript", required=True, help="JSON list of turns {speaker, start, end?, text}")
        parser.add_argument("--quotes", required=True, help="JSON list of strings or {quote, speaker?}")
        parser.add_argument(
            "--threshold",
            type=float,
            default=None,
            help="minimum alignment score 0-100 (default: settings.EVIDENCE_MATCH_THRESHOLD)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        threshold = options["threshold"]
        if threshold is None:
            threshold = float(getattr(settings, "EVIDENCE_MATCH_THRESHOLD", 90.0))
        if not 0 <= threshold <= 100:
            raise CommandError(f"--threshold must be between 0 and 100, got {threshold}")
        turns = load_turns(options["transcript"])
        quotes = load_quotes(options["quotes"])
        index = EvidenceIndex(turns, threshold=threshold)
        for check in index.check_many(quotes):
            line = {
                "quote": check.quote,
                "verified": check.verified,
                "reason": check.reason,
                "score": check.score,
                "speaker": check.speaker,
                "start": check.start,
                "end": check.end,
                "matched_text": check.matched_text,
            }
            self.stdout.write(json.dumps(line, ensure_ascii=False))
