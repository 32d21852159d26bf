"""PII redactor (``privacy.redaction``): recall and false redactions on the labelled set, and throughput.

Labelled sets: every line of ``tests/privacy/pii_fr.jsonl`` and of ``tests/privacy/pii_fr_holdout.jsonl`` (written
blind to the redactor; its first-run figures are in the README) is scanned with ``scan_text`` (all kinds). Per kind:
labelled spans; found (findings of that kind cover every alphanumeric character of the span); found as another
kind (covered, but not by findings of the labelled kind alone); missed (not covered, partly covered included);
recall. Card numbers and codes are never stored in clear: their target is 100 %. Per keep category (prices,
ORIAS numbers, policy numbers, ordinary dates, other numbers): keep spans touched by a finding, out of all (target
0 for prices and ORIAS numbers, evidence for the compliance control points); then the findings that overlap no
labelled span. The spans missed and the findings over keep spans or over nothing labelled are listed, with the
lines marked ``known_miss`` (hard forms, not asserted by the tests) flagged.

Throughput: ``redact_words`` (all kinds) over 200 simulated calls (``transcriptions.simulator.script
.transcript_for``, built before timing): words per second and ms per call (p50 / p95, the median of ``--repeat``
passes per call). On the same calls: the company's ORIAS number still in the text after redaction wherever it was
before, and on the calls where an SMS code is read (``no_phone_signature`` contradicted, among 800), the code gone
with ``STORAGE_KINDS``.

No Django needed: ``run(argparse.Namespace())`` works on its own.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import time
from collections import Counter
from pathlib import Path
from typing import Any

from privacy.redaction import STORAGE_KINDS, Kind, TextFinding, redact_words, scan_text
from transcriptions.simulator.script import transcript_for, truth_for

DATA = Path(__file__).resolve().parent.parent / "tests" / "privacy" / "pii_fr.jsonl"
# Written blind to the redactor and to the set above; its first run measured how the redactor generalizes (the
# README keeps those figures); the redactor was mended on its misses since.
HOLDOUT = DATA.with_name("pii_fr_holdout.jsonl")
CATEGORIES = ("price", "orias", "policy", "date", "other")
CALLS = 200
SMS_SCAN = 800
MAX_LISTED = 60


def _pct(n: int, d: int) -> str:
    return f"{100 * n / d:5.1f} %" if d else "    - "


def _load(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _covered(text: str, findings: list[TextFinding], start: int, end: int, kinds: set[Kind] | None) -> bool:
    spans = [(f.start, f.end) for f in findings if kinds is None or f.kind in kinds]
    return all(any(s <= i < e for s, e in spans) for i in range(start, end) if text[i].isalnum())


def _show(text: str, findings: list[TextFinding]) -> str:
    return ", ".join(f"{f.kind}:{text[f.start : f.end]!r}" for f in findings) or "nothing"


def labelled_set(path: Path, title: str) -> None:
    lines = _load(path)
    total: Counter[str] = Counter()
    found: Counter[str] = Counter()
    other_kind: Counter[str] = Counter()
    kept_total: Counter[str] = Counter()
    touched: Counter[str] = Counter()
    listed: list[str] = []
    stray = 0
    for line in lines:
        text = line["text"]
        findings = scan_text(text)
        flag = " (known_miss)" if line.get("known_miss") else ""
        labelled: list[tuple[int, int]] = []
        for item in line["pii"]:
            kind = item["kind"]
            start = text.index(item["span"])
            end = start + len(item["span"])
            labelled.append((start, end))
            total[kind] += 1
            if _covered(text, findings, start, end, {Kind(kind)}):
                found[kind] += 1
                continue
            near = [f for f in findings if f.start < end and start < f.end]
            if _covered(text, findings, start, end, None):
                other_kind[kind] += 1
                verdict = "found as another kind"
            else:
                verdict = "partly covered" if near else "missed"
            listed.append(f"    {line['id']}{flag}: {kind} {verdict}: {item['span']!r} -> {_show(text, near)}")
        for item in line["keep"]:
            category = item["category"]
            start = text.index(item["span"])
            end = start + len(item["span"])
            labelled.append((start, end))
            kept_total[category] += 1
            over = [f for f in findings if f.start < end and start < f.end]
            if over:
                touched[category] += 1
                listed.append(f"    {line['id']}{flag}: {category} {item['span']!r} redacted: {_show(text, over)}")
        for finding in findings:
            if not any(finding.start < e and s < finding.end for s, e in labelled):
                stray += 1
                listed.append(f"    {line['id']}{flag}: finding over nothing labelled: {_show(text, [finding])}")
    print(f"PII redactor on the {title} ({path.relative_to(path.parents[2])}: {len(lines)} lines)")
    print(f"  {'kind':<8} {'spans':>5} {'found':>6} {'other kind':>10} {'missed':>6}   recall")
    for kind in Kind:
        n, ok, other = total[kind], found[kind], other_kind[kind]
        target = "  (target 100 %)" if kind in STORAGE_KINDS else ""
        print(f"  {kind.value:<8} {n:5d} {ok:6d} {other:10d} {n - ok - other:6d}   {_pct(ok, n)}{target}")
    n, ok, other = sum(total.values()), sum(found.values()), sum(other_kind.values())
    print(f"  {'all':<8} {n:5d} {ok:6d} {other:10d} {n - ok - other:6d}   {_pct(ok, n)}")
    print("  false redactions (keep spans touched / total):")
    for category in CATEGORIES:
        target = "  (target 0)" if category in ("price", "orias") else ""
        print(f"    {category:<7} {touched[category]:3d}/{kept_total[category]:<3d}{target}")
    print(f"  findings overlapping nothing labelled: {stray}")
    if listed:
        print(f"  details ({len(listed)}):")
        for entry in listed[:MAX_LISTED]:
            print(entry)
        if len(listed) > MAX_LISTED:
            print(f"    ... and {len(listed) - MAX_LISTED} more")


def _p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[18]


def _joined(words: list[dict[str, Any]]) -> str:
    return "".join(w["text"] for w in words)


def simulated_calls(repeat: int) -> None:
    call_ids = [f"c-bench-{n}" for n in range(CALLS)]
    calls = [transcript_for(call_id)["words"] for call_id in call_ids]
    n_words = sum(1 for words in calls for w in words if w["type"] == "word")
    n_items = sum(len(words) for words in calls)
    runs: list[list[float]] = []
    outputs: list[list[dict[str, Any]]] = []
    for _ in range(repeat):
        times: list[float] = []
        outputs = []
        for words in calls:
            t0 = time.perf_counter()
            outputs.append(redact_words(words))
            times.append((time.perf_counter() - t0) * 1000)
        runs.append(times)
    per_call = [statistics.median(column) for column in zip(*runs, strict=True)]
    seconds = sum(per_call) / 1000
    print(
        f"redact_words over {CALLS} simulated calls ({n_words} words, {n_items} items, "
        f"median of {repeat} passes per call)"
    )
    print(
        f"  {n_words / seconds:,.0f} words/s; per call p50 {statistics.median(per_call):.1f} ms, "
        f"p95 {_p95(per_call):.1f} ms, max {max(per_call):.1f} ms"
    )
    kept = present = 0
    for call_id, words, out in zip(call_ids, calls, outputs, strict=True):
        orias = truth_for(call_id)["orias"]
        before, after = _joined(words), _joined(out)
        for form in (orias, orias.replace(" ", "")):
            if re.search(rf"(?<!\d){re.escape(form)}(?!\d)", before):
                present += 1
                kept += form in after
    print(f"  ORIAS number kept after redaction: {kept}/{present}")
    redacted = with_code = 0
    for n in range(SMS_SCAN):
        call_id = f"c-bench-{n}"
        truth = truth_for(call_id)
        segment = next(s for s in truth["segments"] if s["key"] == "no_phone_signature")
        if segment["variant"] != "contradicted":
            continue
        words = transcript_for(call_id)["words"]
        client = [
            w
            for w in words
            if w["type"] == "word"
            and w["speaker_id"] != truth["agent_speaker_id"]
            and segment["start"] <= w["start"] <= segment["end"]
        ]
        texts = " ".join(w["text"] for w in client)
        match = re.search(r"(?<!\d)\d(?: \d){5}(?!\d)", texts)
        if not match:
            continue
        with_code += 1
        redacted += match.group() not in _joined(redact_words(words, STORAGE_KINDS))
    print(f"  SMS codes redacted with STORAGE_KINDS: {redacted}/{with_code} (calls with a code among {SMS_SCAN})")


def run(args: argparse.Namespace) -> None:
    repeat = max(1, int(getattr(args, "repeat", 3) or 3))
    labelled_set(DATA, "labelled set")
    labelled_set(HOLDOUT, "held-out set")
    simulated_calls(repeat)
