"""Evidence gate (``audits.evidence``): accuracy on the labelled set and P7, the time per quote.

Accuracy: every quote of ``tests/audits/data/quotes.json`` is checked against its transcript;
targets 100 % of false quotes rejected and >= 95 % of true quotes accepted.

P7: a ~60-minute transcript (~8,000 words, ~900 turns) is generated from the evaluation
transcripts' turns (cut into speech-to-text segments, with random fillers, casing and times), and
100 quotes (half true sub-spans written cleanly, half false: number changed, negation flipped, word
swapped, stitched across turns, fabricated) are checked against it. Median and p95 time per quote
are printed beside two baselines measured in the same run: one plain ``fuzz.partial_ratio`` of the
quote against the whole transcript text (what an index-less gate would pay for its first step) and
the normalization of the quote alone (a floor). Target: median <= 2 ms per quote.

No Django needed: ``run(argparse.Namespace())`` works on its own.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rapidfuzz import fuzz

from audits.evidence import EvidenceIndex, normalize

DATA = Path(__file__).resolve().parent.parent / "tests" / "audits" / "data"
TRUE_KINDS = ("exact", "case_accent_punct", "filler", "number_words")
FALSE_KINDS = (
    "fabricated",
    "paraphrased",
    "number_altered",
    "negation_flipped",
    "speaker_swapped",
    "too_short",
    "word_swapped",
    "stitched",
    "antonym",
)
FILLERS = ("euh", "heu", "bah", "ben", "hum", "hein", "euh euh", "bah euh")
FILLER_WORDS = frozenset(word for filler in FILLERS for word in filler.split())
SWAPS = {
    "documents": "contrats",
    "téléphone": "courrier",
    "mutuelle": "banque",
    "contrat": "devis",
    "signature": "résiliation",
    "renonciation": "carence",
    "enregistré": "envoyé",
    "monsieur": "madame",
    "commercial": "technique",
    "lunettes": "prothèses",
    "cotisation": "franchise",
}
NUMBER_SWAPS = {
    "deux": "trois",
    "quatorze": "quinze",
    "trente": "quarante",
    "2": "3",
    "30": "31",
    "5000": "6000",
    "48": "72",
    "cent": "deux cents",
    "quatre-vingt-quatre": "quatre-vingt-quatorze",
    "vingt": "trente",
}
NUMBER_WORDS = frozenset(
    [
        "zéro",
        "un",
        "deux",
        "trois",
        "quatre",
        "cinq",
        "six",
        "sept",
        "huit",
        "neuf",
        "dix",
        "onze",
        "douze",
        "treize",
        "quatorze",
        "quinze",
        "seize",
        "vingt",
        "trente",
        "quarante",
        "cinquante",
        "soixante",
        "cent",
        "cents",
        "mille",
    ]
)
MEDIAN_TARGET_MS = 2.0


def _load(name: str) -> Any:
    return json.loads((DATA / name).read_text(encoding="utf-8"))


def _transcripts() -> dict[str, list[dict[str, Any]]]:
    """The evaluation transcripts, by the names the labelled quotes use."""
    names = sorted({item["transcript"] for item in _load("quotes.json")})
    return {name: _load(f"{name}.json") for name in names}


def _pct(n: int, d: int) -> str:
    return f"{100 * n / d:5.1f} %" if d else "    - "


def labelled_set() -> tuple[int, int, int, int]:
    """Print the gate's acceptance per kind; return (true accepted, true, false rejected, false)."""
    transcripts = _transcripts()
    indexes = {name: EvidenceIndex(turns) for name, turns in transcripts.items()}
    right: Counter[str] = Counter()
    total: Counter[str] = Counter()
    reasons: dict[str, Counter[str]] = {}
    for item in _load("quotes.json"):
        result = indexes[item["transcript"]].check(item["quote"], speaker=item["speaker"])
        total[item["kind"]] += 1
        right[item["kind"]] += result.verified == item["label"]
        reasons.setdefault(item["kind"], Counter())[result.reason or "verified"] += 1
    print("Evidence gate on the labelled set (tests/audits/data/quotes.json)")
    for kind in (*TRUE_KINDS, *FALSE_KINDS):
        verb = "accepted" if kind in TRUE_KINDS else "rejected"
        detail = ", ".join(f"{r} {n}" for r, n in reasons.get(kind, Counter()).most_common())
        print(f"  {kind:<18} {verb} {right[kind]:3d}/{total[kind]:<3d} {_pct(right[kind], total[kind])}   ({detail})")
    t_ok, t_n = sum(right[k] for k in TRUE_KINDS), sum(total[k] for k in TRUE_KINDS)
    f_ok, f_n = sum(right[k] for k in FALSE_KINDS), sum(total[k] for k in FALSE_KINDS)
    true_ok, false_ok = t_ok >= 0.95 * t_n, f_ok == f_n
    print(f"  true quotes accepted  {t_ok}/{t_n} {_pct(t_ok, t_n)}  (target >= 95 %)  {'OK' if true_ok else 'MISS'}")
    print(f"  false quotes rejected {f_ok}/{f_n} {_pct(f_ok, f_n)}  (target 100 %)    {'OK' if false_ok else 'MISS'}")
    return t_ok, t_n, f_ok, f_n


def generate_transcript(*, minutes: float = 60.0, words: int = 7_500, seed: int = 7) -> list[dict[str, Any]]:
    """ASR-like segments cut from the evaluation transcripts' turns, with fillers and random casing.

    Each turn carries ``source`` (the sentence it was cut from) so that stitched quotes join two sentences.
    """
    rng = random.Random(seed)
    sources = [(t["speaker"], t["text"].split()) for turns in _transcripts().values() for t in turns]
    segments: list[tuple[int, str, list[str]]] = []
    count = 0
    while count < words:
        number = rng.randrange(len(sources))
        speaker, source = sources[number]
        i = 0
        while i < len(source):
            size = rng.randint(6, 17)
            piece = source[i : i + size]
            i += size
            noisy: list[str] = []
            for word in piece:
                if rng.random() < 0.06:
                    noisy.append(rng.choice(FILLERS))
                noisy.append(word.capitalize() if rng.random() < 0.03 else word)
            segments.append((number, speaker, noisy))
            count += len(piece)
    durations = [len(noisy) * rng.uniform(0.85, 1.15) for _, _, noisy in segments]
    gaps = [rng.uniform(0.2, 0.6) for _ in segments]
    scale = (minutes * 60 - sum(gaps)) / sum(durations)
    turns: list[dict[str, Any]] = []
    clock = 0.0
    for (number, speaker, noisy), duration, gap in zip(segments, durations, gaps, strict=True):
        clock += gap
        turns.append(
            {
                "call_id": "bench-call",
                "speaker": speaker,
                "start": round(clock, 2),
                "end": round(clock + duration * scale, 2),
                "text": " ".join(noisy),
                "source": number,
            }
        )
        clock += duration * scale
    return turns


def _clean(words: list[str]) -> str:
    """The sub-span as an LLM would quote it: fillers dropped, capital letter, full stop."""
    kept = [w for w in words if w.lower() not in FILLER_WORDS]
    text = " ".join(kept)
    return text[:1].upper() + text[1:] + "."


def make_quotes(turns: list[dict[str, Any]], *, n: int = 100, seed: int = 11) -> list[tuple[str, str, bool]]:
    """(quote, speaker, expected) -- half true sub-spans, half false variants."""
    rng = random.Random(seed)
    long_turns = [t for t in turns if len(t["text"].split()) >= 7]
    quotes: list[tuple[str, str, bool]] = []
    while len(quotes) < n // 2:
        turn = rng.choice(long_turns)
        words = turn["text"].split()
        size = rng.randint(6, len(words))
        start = rng.randint(0, len(words) - size)
        end = start + size
        if (start > 0 and _numeric(words[start - 1]) and _numeric(words[start])) or (
            end < len(words) and _numeric(words[end - 1]) and _numeric(words[end])
        ):
            continue  # a sub-span cutting a number in two ("... 34 56") is not a true quote
        quotes.append((_clean(words[start:end]), turn["speaker"], True))
    false_from_set = [
        (q["quote"], q["speaker"])
        for q in _load("quotes.json")
        if not q["label"] and q["kind"] in ("fabricated", "paraphrased", "stitched")
    ]
    attempts = 0
    while len(quotes) < n and attempts < 10_000:
        attempts += 1
        kind = rng.choice(("number", "negation", "word", "stitched", "set"))
        if kind == "set":
            text, speaker = rng.choice(false_from_set)
            quotes.append((text, speaker or "agent", False))
            continue
        index = rng.randrange(len(turns) - 1)
        turn = turns[index]
        words = [w for w in turn["text"].split() if w.lower() not in FILLER_WORDS]
        if len(words) < 6:
            continue
        if kind == "stitched":  # this segment's end + the start of a segment cut from another sentence
            other = rng.choice([t for t in turns if t["source"] != turn["source"]])
            quotes.append((_clean(words[-4:] + other["text"].split()[:4]), turn["speaker"], False))
            continue
        if kind == "number":
            spots = [i for i, w in enumerate(words) if w in NUMBER_SWAPS]
            table = NUMBER_SWAPS
        elif kind == "word":
            spots = [i for i, w in enumerate(words) if w in SWAPS]
            table = SWAPS
        else:
            spots = [i for i, w in enumerate(words) if w in ("pas", "jamais", "rien", "aucun")] or [1]
            table = {}
        if not spots:
            continue
        i = rng.choice(spots)
        if i == 0:
            continue  # keep the change inside the quote, not at its edge
        if kind == "negation":
            words = (
                words[:i] + words[i + 1 :]
                if words[i] in ("pas", "jamais", "rien", "aucun")
                else words[: i + 1] + ["pas"] + words[i + 1 :]
            )
        else:
            words = words[:i] + [table[words[i]]] + words[i + 1 :]
        lo = max(0, i - rng.randint(1, 5))
        quotes.append((_clean(words[lo : lo + 9]), turn["speaker"], False))
    rng.shuffle(quotes)
    return quotes


def _numeric(word: str) -> bool:
    return word[:1].isdigit() or any(part in NUMBER_WORDS for part in word.lower().split("-"))


def _times(func: Callable[[Any], object], items: Sequence[Any], repeat: int) -> list[float]:
    """Per-item time in ms: the median of ``repeat`` passes."""
    runs: list[list[float]] = []
    for _ in range(repeat):
        run_times: list[float] = []
        for item in items:
            t0 = time.perf_counter()
            func(item)
            run_times.append((time.perf_counter() - t0) * 1000)
        runs.append(run_times)
    return [statistics.median(column) for column in zip(*runs, strict=True)]


def _p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[18]


def p7(repeat: int = 3) -> float:
    turns = generate_transcript()
    n_words = sum(len(t["text"].split()) for t in turns)
    t0 = time.perf_counter()
    index = EvidenceIndex(turns)
    build_ms = (time.perf_counter() - t0) * 1000
    quotes = make_quotes(turns)
    results = [index.check(q, speaker=s) for q, s, _ in quotes]
    agree = sum(r.verified == expected for r, (_, _, expected) in zip(results, quotes, strict=True))
    true_n = sum(1 for _, _, e in quotes if e)
    ours = _times(lambda item: index.check(item[0], speaker=item[1]), quotes, repeat)
    full_text = " ".join(t["text"] for t in turns)
    plain = _times(lambda item: fuzz.partial_ratio(item[0], full_text), quotes, repeat)
    norm_only = _times(lambda item: normalize(item[0]), quotes, repeat)
    print(
        f"P7: {len(quotes)} quotes ({true_n} true, {len(quotes) - true_n} false) against a generated "
        f"{turns[-1]['end'] / 60:.0f}-minute transcript ({n_words} words, {len(turns)} turns, "
        f"{len(full_text)} chars); index built in {build_ms:.0f} ms"
    )
    print(f"  gate verdicts as expected: {agree}/{len(quotes)}")
    for r, (_, _, expected) in zip(results, quotes, strict=True):
        if r.verified != expected:
            print(
                f"    expected {'true' if expected else 'false'}, got {r.reason or 'verified'}: {r.quote!r}"
                f" (transcript: {r.matched_text!r})"
            )
    median = statistics.median(ours)
    for label, values in (
        ("EvidenceIndex.check", ours),
        ("baseline: one fuzz.partial_ratio on full text", plain),
        ("floor: normalize(quote) only", norm_only),
    ):
        print(f"  {label:<46} median {statistics.median(values):7.3f} ms   p95 {_p95(values):7.3f} ms")
    print(
        f"  gate / plain partial_ratio (median) = {median / statistics.median(plain):.2f}x; "
        f"target median <= {MEDIAN_TARGET_MS} ms  {'OK' if median <= MEDIAN_TARGET_MS else 'MISS'}"
    )
    return median


def run(args: argparse.Namespace) -> None:
    repeat = max(1, int(getattr(args, "repeat", 3) or 3))
    labelled_set()
    p7(repeat)
