"""transcriptions.timeline: speaker mapping, turns, chunks and the exact text format other components parse."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from transcriptions import timeline
from transcriptions.simulator import script
from transcriptions.timeline import (
    HEADER_RE,
    TURN_LINE_RE,
    build_turns,
    chunk_turns,
    map_speakers,
    render_timeline,
    render_turn,
)

COMPANIES = ("Horizon Courtage", "Sérénis Conseil")


def words_of(
    *lines: tuple[str, str], start: float = 0.0, word_seconds: float = 0.4, gap: float = 0.6
) -> list[dict[str, Any]]:
    """Vendor-like words (with spacing items) for ``(speaker_id, text)`` lines spoken one after the other."""
    items: list[dict[str, Any]] = []
    t = start
    for n, (speaker, text) in enumerate(lines):
        tokens = text.split()
        for i, token in enumerate(tokens):
            items.append(
                {
                    "text": token,
                    "start": round(t, 3),
                    "end": round(t + word_seconds, 3),
                    "type": "word",
                    "speaker_id": speaker,
                    "logprob": -0.1,
                }
            )
            t += word_seconds
            pause = 0.05 if i + 1 < len(tokens) else gap
            if i + 1 < len(tokens) or n + 1 < len(lines):
                items.append(
                    {
                        "text": " ",
                        "start": round(t, 3),
                        "end": round(t + pause, 3),
                        "type": "spacing",
                        "speaker_id": speaker,
                        "logprob": None,
                    }
                )
            t += pause
    return items


# --- map_speakers ---------------------------------------------------------------------------------


def test_agent_who_speaks_first_and_introduces_themself():
    words = words_of(("speaker_0", "Bonjour madame, je m'appelle Léa Dubois."), ("speaker_1", "Oui bonjour."))
    assert map_speakers(words, direction="outbound", agent_name="Léa Dubois") == {
        "speaker_0": "agent",
        "speaker_1": "client",
    }


def test_client_who_picks_up_first_is_not_the_agent():
    words = words_of(
        ("speaker_0", "Allô ?"),
        ("speaker_1", "Bonjour monsieur, ici Hugo, de Horizon Courtage."),
        ("speaker_0", "Oui ?"),
    )
    assert map_speakers(words, direction="outbound", agent_name=None, company_names=COMPANIES) == {
        "speaker_0": "client",
        "speaker_1": "agent",
    }


def test_company_name_is_matched_without_accents_or_case():
    words = words_of(("speaker_1", "oui bonjour"), ("speaker_0", "SERENIS conseil, bonjour, c'est pour votre devis"))
    assert map_speakers(words, direction="inbound", agent_name=None, company_names=COMPANIES) == {
        "speaker_1": "client",
        "speaker_0": "agent",
    }


def test_agent_full_name_alone_is_enough_accent_insensitively():
    words = words_of(("speaker_1", "Bonjour."), ("speaker_0", "Bonjour, lea dubois, pour votre dossier."))
    assert map_speakers(words, direction="inbound", agent_name="Léa Dubois")["speaker_0"] == "agent"


def test_first_name_alone_needs_an_introduction_cue():
    words = words_of(("speaker_1", "Merci Camille."), ("speaker_0", "Camille à l'appareil, je vous écoute."))
    assert map_speakers(words, direction="inbound", agent_name="Camille Martin") == {
        "speaker_1": "client",
        "speaker_0": "agent",
    }


def test_fallback_is_the_first_speaker():
    words = words_of(("speaker_1", "Bonjour, c'est pour votre demande de devis."), ("speaker_0", "Ah oui."))
    assert map_speakers(words, direction="inbound", agent_name="Nobody Here") == {
        "speaker_1": "agent",
        "speaker_0": "client",
    }
    # An inbound call's "Allô ?" is the agent answering: still the first speaker.
    words = words_of(("speaker_0", "Allô ?"), ("speaker_1", "Oui, je rappelle pour le devis."))
    assert map_speakers(words, direction="inbound", agent_name=None) == {"speaker_0": "agent", "speaker_1": "client"}


def test_outbound_pickup_fallback_gives_the_second_speaker():
    words = words_of(("speaker_1", "Oui allô ?"), ("speaker_0", "Bonjour, c'est au sujet de votre devis."))
    assert map_speakers(words, direction="outbound", agent_name=None) == {"speaker_1": "client", "speaker_0": "agent"}
    assert map_speakers(words, direction=None, agent_name=None) == {"speaker_1": "agent", "speaker_0": "client"}


def test_a_late_weak_cue_from_the_client_does_not_win():
    words = words_of(
        ("speaker_0", "Bonjour, c'est pour votre devis."),
        ("speaker_1", "Oui."),
        ("speaker_1", "Je suis assurée chez MAAF depuis longtemps."),
        start=120.0,
    )
    assert map_speakers(words, direction="inbound", agent_name=None) == {"speaker_0": "agent", "speaker_1": "client"}
    early = words_of(("speaker_0", "Oui ?"), ("speaker_1", "Je suis Paul du service client."))
    assert map_speakers(early, direction="inbound", agent_name=None)["speaker_1"] == "agent"


def test_single_speaker_no_words_and_third_speaker():
    assert map_speakers([], direction="outbound", agent_name="X") == {}
    voicemail = words_of(("speaker_1", "Bonjour, je m'appelle Hugo, je vous rappellerai."))
    assert map_speakers(voicemail, direction="outbound", agent_name=None) == {"speaker_1": "agent"}
    three = words_of(("speaker_0", "Allô"), ("speaker_2", "Je m'appelle Inès, cabinet Azur."), ("speaker_1", "Oui"))
    assert map_speakers(three, direction="outbound", agent_name=None) == {
        "speaker_0": "client",
        "speaker_2": "agent",
        "speaker_1": "client",
    }


@pytest.mark.parametrize("seed", [42, 7])
def test_mapping_of_simulated_calls_matches_the_truth(seed):
    for n in range(120):
        call_id = f"call-{n}"
        transcript = script.transcript_for(call_id, seed=seed)
        truth = script.truth_for(call_id, seed=seed)
        mapping = map_speakers(
            transcript["words"],
            direction=truth["direction"],
            agent_name=truth["agent_name"],
            company_names=script.COMPANY_NAMES,
        )
        assert mapping[truth["agent_speaker_id"]] == "agent", call_id
        assert list(mapping.values()).count("agent") == 1


# --- build_turns ----------------------------------------------------------------------------------


def test_consecutive_words_of_one_speaker_form_one_turn():
    words = words_of(
        ("speaker_0", "Bonjour   madame,"),
        ("speaker_0", "je vous écoute."),
        ("speaker_1", "Oui."),
        ("speaker_0", "Très bien."),
    )
    words.insert(3, {"text": "[rire]", "start": 0.5, "end": 0.6, "type": "audio_event", "speaker_id": "speaker_1"})
    turns = build_turns(
        [
            {
                "call_id": "c-1",
                "started_at": None,
                "words": words,
                "speaker_map": {"speaker_0": "agent", "speaker_1": "client"},
            }
        ]
    )
    assert [(t["speaker"], t["text"]) for t in turns] == [
        ("agent", "Bonjour madame, je vous écoute."),
        ("client", "Oui."),
        ("agent", "Très bien."),
    ]
    first_words = [w for w in words if w["type"] == "word"]
    assert turns[0]["start"] == first_words[0]["start"] and turns[0]["end"] == first_words[4]["end"]
    assert turns[1]["start"] == first_words[5]["start"] == turns[1]["end"] - 0.4
    assert all(t["call_id"] == "c-1" for t in turns)
    assert [t["start"] for t in turns] == sorted(t["start"] for t in turns)


def test_spacing_is_verbatim_and_missing_spacing_becomes_a_space():
    with_spacing = [
        {"text": "aujourd", "start": 0.0, "end": 0.2, "type": "word", "speaker_id": "speaker_0"},
        {"text": "'hui", "start": 0.2, "end": 0.4, "type": "word", "speaker_id": "speaker_0"},
        {"text": " ", "start": 0.4, "end": 0.5, "type": "spacing", "speaker_id": "speaker_0"},
        {"text": "oui", "start": 0.5, "end": 0.7, "type": "word", "speaker_id": "speaker_0"},
    ]
    without_spacing = [w for w in with_spacing if w["type"] == "word"]
    speaker_map = {"speaker_0": "agent"}
    assert (
        build_turns([{"call_id": "a", "started_at": None, "words": with_spacing, "speaker_map": speaker_map}])[0][
            "text"
        ]
        == "aujourd'hui oui"
    )
    assert (
        build_turns([{"call_id": "a", "started_at": None, "words": without_spacing, "speaker_map": speaker_map}])[0][
            "text"
        ]
        == "aujourd 'hui oui"
    )


def test_recordings_are_ordered_by_start_then_call_id_and_unknown_speakers_are_clients():
    t0 = datetime(2026, 2, 2, 9, 0, tzinfo=UTC)
    recordings = [
        {"call_id": "c-9", "started_at": None, "words": words_of(("speaker_0", "Sans date.")), "speaker_map": {}},
        {
            "call_id": "c-2",
            "started_at": t0 + timedelta(hours=1),
            "words": words_of(("speaker_1", "Deuxième.")),
            "speaker_map": {"speaker_1": "agent"},
        },
        {
            "call_id": "c-1",
            "started_at": t0 + timedelta(hours=1),
            "words": words_of(("speaker_0", "Même heure.")),
            "speaker_map": {"speaker_0": "agent"},
        },
        {
            "call_id": "c-3",
            "started_at": t0,
            "words": words_of(("speaker_0", "Premier."), ("speaker_1", "Client.")),
            "speaker_map": {"speaker_0": "agent", "speaker_1": "client"},
        },
    ]
    turns = build_turns(recordings)
    assert [(t["call_id"], t["speaker"], t["text"]) for t in turns] == [
        ("c-3", "agent", "Premier."),
        ("c-3", "client", "Client."),
        ("c-1", "agent", "Même heure."),
        ("c-2", "agent", "Deuxième."),
        ("c-9", "client", "Sans date."),
    ]


# --- chunk_turns ----------------------------------------------------------------------------------


def random_turns(rng: random.Random, call_ids: list[str]) -> list[dict[str, Any]]:
    turns = []
    for call_id in call_ids:
        t = 0.0
        for n in range(rng.randint(1, 60)):
            length = rng.choice((1, 3, 8, 20, 60, 250, 450))  # some turns alone exceed the limits
            duration = length * rng.uniform(0.2, 0.6)
            turns.append(
                {
                    "call_id": call_id,
                    "speaker": ("agent", "client")[n % 2],
                    "start": t,
                    "end": t + duration,
                    "text": " ".join(f"mot{i}" for i in range(length)),
                }
            )
            t += duration + rng.uniform(0.1, 3.0)
    return turns


@pytest.mark.parametrize("max_seconds,max_words", [(60.0, 200), (20.0, 50), (300.0, 1000)])
def test_chunks_respect_limits_and_never_span_two_recordings(max_seconds, max_words):
    rng = random.Random(max_words)
    for _ in range(20):
        turns = random_turns(rng, ["c-1", "c-2", "c-3"])
        chunks = chunk_turns(turns, max_seconds=max_seconds, max_words=max_words)
        by_call = {call_id: [t for t in turns if t["call_id"] == call_id] for call_id in ("c-1", "c-2", "c-3")}
        covered: list[tuple[str, int]] = []
        numbers: dict[str, int] = {}
        for chunk in chunks:
            call_turns = by_call[chunk["call_id"]]
            assert all(0 <= i < len(call_turns) for i in chunk["turn_indices"])  # indices within the recording
            first_line = TURN_LINE_RE.match(chunk["text"].split("\n")[0])
            assert first_line["text"] in call_turns[chunk["turn_indices"][0]]["text"]
            numbers[chunk["call_id"]] = numbers.get(chunk["call_id"], 0) + 1
            assert chunk["chunk_id"] == f"{chunk['call_id']}#{numbers[chunk['call_id']]}"
            assert chunk["end"] - chunk["start"] <= max_seconds + 1e-6
            lines = chunk["text"].split("\n")
            assert all(TURN_LINE_RE.match(line) for line in lines)
            assert sum(len(TURN_LINE_RE.match(line)["text"].split()) for line in lines) <= max_words
            covered += [
                (chunk["call_id"], i)
                for i in chunk["turn_indices"]
                if not covered or covered[-1] != (chunk["call_id"], i)
            ]
        # Every turn, in order, once (a split turn is listed by each of its pieces' chunks).
        assert covered == [(call_id, i) for call_id, call_turns in by_call.items() for i in range(len(call_turns))]


def test_small_turns_are_grouped_and_chunk_text_is_their_rendered_lines():
    turns = [
        {
            "call_id": "c-1",
            "speaker": "agent" if n % 2 == 0 else "client",
            "start": n * 10.0,
            "end": n * 10.0 + 5,
            "text": f"phrase numéro {n}",
        }
        for n in range(13)
    ]
    turns += [{"call_id": "c-2", "speaker": "client", "start": 3.0, "end": 4.0, "text": "Allô ?"}]
    chunks = chunk_turns(turns)
    assert [(c["chunk_id"], c["turn_indices"]) for c in chunks] == [
        ("c-1#1", [0, 1, 2, 3, 4, 5]),
        ("c-1#2", [6, 7, 8, 9, 10, 11]),
        ("c-1#3", [12]),
        ("c-2#1", [0]),
    ]
    assert chunks[0]["text"] == "\n".join(render_turn(turns[i]) for i in range(6))
    assert (chunks[0]["start"], chunks[0]["end"]) == (0.0, 55.0)
    with pytest.raises(ValueError):
        chunk_turns(turns, max_seconds=0)


def test_a_long_turn_is_split_into_pieces_within_the_limits():
    turn = {
        "call_id": "c-1",
        "speaker": "agent",
        "start": 100.0,
        "end": 250.0,
        "text": " ".join(f"w{i}" for i in range(450)),
    }
    chunks = chunk_turns([turn], max_seconds=60.0, max_words=200)
    assert len(chunks) == 3
    assert all(c["turn_indices"] == [0] for c in chunks)
    assert " ".join(TURN_LINE_RE.match(c["text"])["text"] for c in chunks) == turn["text"]
    assert chunks[0]["start"] == 100.0 and chunks[-1]["end"] == 250.0
    assert all(c["end"] - c["start"] <= 60.0 for c in chunks)


# --- rendering ------------------------------------------------------------------------------------


def test_render_turn_exact_format():
    assert render_turn({"speaker": "agent", "start": 0.0, "text": "Bonjour."}) == "[00:00] Agent: Bonjour."
    assert render_turn({"speaker": "client", "start": 59.99, "text": "Oui"}) == "[00:59] Client: Oui"
    assert (
        render_turn({"speaker": "client", "start": 75 * 60 + 2.7, "text": "Au revoir."}) == "[75:02] Client: Au revoir."
    )
    assert render_turn({"speaker": "agent", "start": 605.2, "text": "x"}) == "[10:05] Agent: x"
    match = TURN_LINE_RE.match("[75:02] Client: Au revoir.")
    assert match and (match["minutes"], match["seconds"], match["speaker"], match["text"]) == (
        "75",
        "02",
        "Client",
        "Au revoir.",
    )


def test_render_timeline_exact_format():
    turns = [
        {"call_id": "c-1", "speaker": "agent", "start": 1.2, "end": 3.0, "text": "Bonjour."},
        {"call_id": "c-1", "speaker": "client", "start": 3.5, "end": 4.0, "text": "Oui ?"},
        {"call_id": "c-2", "speaker": "client", "start": 62.0, "end": 63.0, "text": "Allô."},
        {"call_id": "c-3", "speaker": "agent", "start": 0.0, "end": 1.0, "text": "Message."},
    ]
    meta = {
        "c-1": {"started_at": datetime(2026, 2, 2, 9, 15, 30, tzinfo=UTC), "direction": "outbound"},
        "c-2": {"started_at": "2026-02-02T14:05:00Z", "direction": "inbound"},
    }
    assert render_timeline(turns, meta) == (
        "### Appel c-1 — 2026-02-02 09:15 — appel sortant\n"
        "[00:01] Agent: Bonjour.\n"
        "[00:03] Client: Oui ?\n"
        "\n"
        "### Appel c-2 — 2026-02-02 14:05 — appel entrant\n"
        "[01:02] Client: Allô.\n"
        "\n"
        "### Appel c-3\n"
        "[00:00] Agent: Message."
    )
    assert render_timeline(turns[:2]) == "### Appel c-1\n[00:01] Agent: Bonjour.\n[00:03] Client: Oui ?"
    header = HEADER_RE.match("### Appel c-1 — 2026-02-02 09:15 — appel sortant")
    assert header and (header["call_id"], header["started_at"], header["direction"]) == (
        "c-1",
        "2026-02-02 09:15",
        "appel sortant",
    )
    assert render_timeline([]) == ""


def test_simulated_recordings_render_as_parseable_lines():
    recordings = []
    for n, call_id in enumerate(("sim-a", "sim-b")):
        transcript = script.transcript_for(call_id)
        truth = script.truth_for(call_id)
        recordings.append(
            {
                "call_id": call_id,
                "started_at": datetime(2026, 2, 2, 10 - n, tzinfo=UTC),
                "words": transcript["words"],
                "speaker_map": map_speakers(
                    transcript["words"],
                    direction=truth["direction"],
                    agent_name=truth["agent_name"],
                    company_names=script.COMPANY_NAMES,
                ),
            }
        )
    turns = build_turns(recordings)
    assert turns[0]["call_id"] == "sim-b"
    text = render_timeline(turns)
    lines = [line for line in text.split("\n") if line]
    assert [line for line in lines if line.startswith("###")] == ["### Appel sim-b", "### Appel sim-a"]
    assert all(TURN_LINE_RE.match(line) for line in lines if not line.startswith("###"))
    joined = " ".join(t["text"] for t in turns if t["call_id"] == "sim-a")
    assert timeline.normalize_text(joined) == timeline.normalize_text(script.transcript_for("sim-a")["text"])
