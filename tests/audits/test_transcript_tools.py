"""Tools mode over timeline chunks: search (accent-insensitive BM25), chunk reads and the JSON tool handler."""

from __future__ import annotations

import json

import pytest

from audits.transcript_tools import (
    CHUNKS_TOOL,
    MAX_CHUNKS_PER_CALL,
    MAX_SEARCH_RESULTS,
    SEARCH_TOOL,
    SNIPPET_CHARS,
    TOOL_SPECS,
    TranscriptTools,
    chunks_from_timeline_text,
    normalize_tokens,
)

TIMELINE = """\
### Appel CALL-1 — 2026-02-02 10:00 (sortant)
[00:01] Agent: Bonjour madame Durand, je suis Julie Martin de la société Assurdirect, courtier immatriculé à l'ORIAS.
[00:12] Client: Oui, bonjour.
[00:15] Agent: Je vous informe que cet appel est enregistré et conservé deux ans.
[01:40] Agent: Pour l'optique, vous avez un forfait lunettes tous les deux ans, monture et verres compris.
[02:10] Client: D'accord, et pour les dents ?
[02:30] Agent: Le dentaire est bien couvert, les prothèses sont remboursées avec un plafond annuel.
[05:40] Agent: Vous disposez d'un délai de rétractation de quatorze jours à compter de la réception des documents.
[06:00] Client: Quatorze jours, très bien.
### Appel CALL-2 — 2026-02-03 14:00 (sortant)
[00:02] Agent: Je vous rappelle comme convenu pour la signature.
[75:09] Agent: Je vous renvoie les documents par e-mail, le délai de renonciation reste de quatorze jours.
"""


def chunk(chunk_id: str, text: str, start: float = 0.0) -> dict:
    return {
        "chunk_id": chunk_id,
        "call_id": chunk_id.split("#")[0],
        "start": start,
        "end": start + 30,
        "text": text,
        "turn_indices": [0],
    }


@pytest.fixture
def tools() -> TranscriptTools:
    return TranscriptTools(chunks_from_timeline_text(TIMELINE, max_chars=200))


def test_chunks_from_timeline_text_keeps_whole_turns_per_call():
    chunks = chunks_from_timeline_text(TIMELINE, max_chars=200)
    assert [c["chunk_id"] for c in chunks][:2] == ["CALL-1#1", "CALL-1#2"]
    assert {c["call_id"] for c in chunks} == {"CALL-1", "CALL-2"}
    for item in chunks:
        lines = item["text"].splitlines()
        assert len(lines) == len(item["turn_indices"])
        assert all(line.startswith("[") for line in lines)
        assert len(item["text"]) <= 200 or len(lines) == 1
        assert item["start"] <= item["end"]
    first = chunks[0]
    assert first["turn_indices"][0] == 0 and first["start"] == 1.0
    one_per_turn = chunks_from_timeline_text(TIMELINE, max_chars=10)
    assert len(one_per_turn) == TIMELINE.count("\n[")
    last = one_per_turn[-1]
    assert last["chunk_id"] == "CALL-2#2" and last["turn_indices"] == [1]
    assert last["start"] == last["end"] == 75 * 60 + 9  # minutes above 59
    assert one_per_turn[-2]["end"] == last["start"]


def test_search_ignores_accents_and_case(tools: TranscriptTools):
    for query in ("délai de rétractation", "DELAI DE RETRACTATION", "delai retractation"):
        hits = tools.search(query)
        assert hits, query
        assert "rétractation" in hits[0]["snippet"]
        assert hits[0]["call_id"] == "CALL-1"


def test_search_matches_number_words_and_word_forms(tools: TranscriptTools):
    hits = tools.search("14 jours pour se rétracter")
    assert hits and "quatorze jours" in hits[0]["snippet"]
    assert normalize_tokens("Enregistré") == normalize_tokens("enregistrement")


def test_search_ranks_the_best_chunk_first_and_only_returns_matches():
    texts = {
        "A#1": "[00:01] Agent: Les lunettes sont remboursées.",
        "A#2": "[00:10] Agent: Le délai de rétractation est de quatorze jours, ce délai de rétractation est légal.",
        "A#3": "[00:20] Agent: Vous avez un délai pour payer.",
        "A#4": "[00:30] Client: Je voudrais des précisions sur le dentaire.",
    }
    tools = TranscriptTools([chunk(cid, text, n * 10.0) for n, (cid, text) in enumerate(texts.items())])
    hits = tools.search("délai de rétractation")
    assert [hit["chunk_id"] for hit in hits] == ["A#2", "A#3"]
    assert hits[0]["score"] > hits[1]["score"] > 0
    assert set(hits[0]) == {"chunk_id", "call_id", "start", "end", "snippet", "score"}
    assert tools.search("le la les de du") == []  # stop words only
    assert tools.search("hélicoptère") == []


def test_search_respects_max_results_and_its_bounds():
    tools = TranscriptTools([chunk(f"B#{n}", f"[00:{n:02d}] Agent: contrat numéro {n}") for n in range(1, 16)])
    assert len(tools.search("contrat", max_results=3)) == 3
    assert len(tools.search("contrat", max_results=0)) == 1
    assert len(tools.search("contrat", max_results=100)) == MAX_SEARCH_RESULTS


def test_snippet_is_the_best_line_cut_short():
    filler = " ".join(["nous parlons des garanties optiques et dentaires de votre formule"] * 6)
    text = (
        f"[00:01] Agent: Bonjour madame.\n"
        f"[00:05] Agent: {filler} et vous disposez du délai de rétractation légal {filler}\n"
        f"[00:09] Client: Merci."
    )
    tools = TranscriptTools([chunk("C#1", text)])
    snippet = tools.search("rétractation")[0]["snippet"]
    assert snippet.startswith("[00:05] Agent: …")
    assert "rétractation" in snippet
    assert len(snippet) <= SNIPPET_CHARS + 2


def test_get_chunks_is_bounded_deduplicated_and_ignores_unknown_ids(tools: TranscriptTools):
    ids = [c["chunk_id"] for c in tools.chunks]
    assert len(ids) > MAX_CHUNKS_PER_CALL
    got = tools.get_chunks([ids[1], ids[1], "nope#1", *ids])
    assert [c["chunk_id"] for c in got] == [ids[1], ids[0], *ids[2:MAX_CHUNKS_PER_CALL]]
    assert got[0]["text"] == tools.chunks[1]["text"]


def test_handle_returns_json_results(tools: TranscriptTools):
    result = json.loads(tools.handle(SEARCH_TOOL, {"query": "rétractation", "max_results": 2}))
    assert 1 <= len(result["results"]) <= 2
    chunk_ids = [hit["chunk_id"] for hit in result["results"]]
    read = json.loads(tools.handle(CHUNKS_TOOL, {"chunk_ids": [*chunk_ids, "CALL-9#1"]}))
    assert [c["chunk_id"] for c in read["chunks"]] == chunk_ids
    assert "rétractation" in read["chunks"][0]["text"]
    assert read["unknown_chunk_ids"] == ["CALL-9#1"]
    every = [c["chunk_id"] for c in tools.chunks]
    capped = json.loads(tools.handle(CHUNKS_TOOL, {"chunk_ids": every}))
    assert len(capped["chunks"]) == MAX_CHUNKS_PER_CALL
    assert capped["not_returned"] == every[MAX_CHUNKS_PER_CALL:]
    none = json.loads(tools.handle(SEARCH_TOOL, {"query": "hélicoptère", "max_results": 3}))
    assert none["results"] == [] and none["note"]


@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("deleteTranscript", {}),
        (SEARCH_TOOL, {}),
        (SEARCH_TOOL, {"query": "  "}),
        (SEARCH_TOOL, {"query": "délai", "max_results": "cinq"}),
        (CHUNKS_TOOL, {"chunk_ids": []}),
        (CHUNKS_TOOL, {"chunk_ids": [1, 2]}),
        (CHUNKS_TOOL, {}),
    ],
)
def test_handle_reports_bad_calls_as_json_errors(tools: TranscriptTools, name: str, args: dict):
    result = json.loads(tools.handle(name, args))
    assert set(result) == {"error"} and isinstance(result["error"], str) and result["error"]


def test_tool_specs_are_strict_function_definitions():
    names = {spec["function"]["name"] for spec in TOOL_SPECS}
    assert names == {SEARCH_TOOL, CHUNKS_TOOL}
    for spec in TOOL_SPECS:
        assert spec["type"] == "function"
        function = spec["function"]
        assert function["strict"] is True and function["description"]
        parameters = function["parameters"]
        assert parameters["type"] == "object" and parameters["additionalProperties"] is False
        assert sorted(parameters["required"]) == sorted(parameters["properties"])
    search = next(spec for spec in TOOL_SPECS if spec["function"]["name"] == SEARCH_TOOL)
    assert search["function"]["parameters"]["properties"]["max_results"]["type"] == "integer"
