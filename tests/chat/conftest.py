"""Chat tests over real HTTP: the app served by a real ``gunicorn`` (gthread, 1 worker, 4 threads) on
the test database and the test Redis, the LLM simulator on 127.0.0.1, and SSE read with httpx-sse.
Data must be committed for the server process to see it (``transaction=True``)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import time
from datetime import UTC, date, datetime
from pathlib import Path

import httpx
import pytest
from django.core.management import call_command

from accounts.models import User
from accounts.tokens import issue_tokens
from audits.evidence import EvidenceIndex
from audits.models import Audit, AuditConfig, AuditStepResult, Citation, ControlPointResult
from audits.simulator.server import LlmSimulator, SimulatorConfig
from fiches.models import FicheCache, FicheCacheDetails
from tests.support import free_port, stop_process_group, transcribed_call
from tests.workflow.conftest import worker_env
from transcriptions.selectors import timeline_for

ROOT = Path(__file__).resolve().parents[2]
LOG_DIR = ROOT / ".pytest_workers"
LLM_KEY = "sk-chat-test-key-do-not-log"
FICHE_ID = "2227002"
CALL = "c-2227002-1"  # a compliant call of the speech-to-text simulator (seed 42)
T0 = datetime(2026, 2, 4, 10, 0, tzinfo=UTC)
RETRACTATION = "je vous rappelle aussi votre droit de rétractation, vous avez quatorze jours pour changer d'avis"


class Web:
    """``gunicorn config.wsgi`` with the Procfile's configuration and worker class (gthread), one worker, four
    threads."""

    def __init__(self, env: dict[str, str], name: str = "chat-web"):
        self.env = env
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = LOG_DIR / f"{name}.log"
        self.process: subprocess.Popen | None = None

    def start(self) -> Web:
        LOG_DIR.mkdir(exist_ok=True)
        args = [sys.executable, "-m", "gunicorn", "config.wsgi", "-c", "python:config.gunicorn"]
        args += ["--bind", f"127.0.0.1:{self.port}"]
        args += ["--workers", "1", "--worker-class", "gthread", "--threads", "4", "--timeout", "60"]
        with open(self.log_path, "w") as log:  # the child keeps its own copy of the descriptor
            self.process = subprocess.Popen(
                args, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/api/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            if self.process.poll() is not None:
                break
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"gunicorn did not start:\n{self.log_path.read_text()[-3000:]}")

    def stop(self) -> None:
        stop_process_group(self.process)


@pytest.fixture(scope="module")
def llm():
    sim = LlmSimulator(SimulatorConfig(api_key=LLM_KEY)).start()
    yield sim
    sim.stop()


def web_env(llm: LlmSimulator, **overrides: str) -> dict[str, str]:
    return worker_env(
        "http://127.0.0.1:9",  # the CRM is never called: chats read the cache
        LLM_BASE_URL=f"{llm.url}/v1",
        LLM_API_KEY=LLM_KEY,
        LLM_MODEL="sim-judge-1",
        LLM_MAX_RETRIES="0",
        LOG_LEVEL="WARNING",
        **overrides,
    )


@pytest.fixture(scope="module")
def web(llm, django_db_setup, django_db_blocker):
    with django_db_blocker.unblock():
        server = Web(web_env(llm)).start()
    yield server
    server.stop()


@pytest.fixture
def sim(llm, settings):
    """The simulator with default knobs and an empty request log; this process's settings point at it."""
    default = SimulatorConfig(api_key=LLM_KEY)
    llm.config.update({f.name: getattr(default, f.name) for f in dataclasses.fields(default)})
    llm.clear_requests()
    settings.LLM_BASE_URL, settings.LLM_API_KEY, settings.LLM_MODEL = f"{llm.url}/v1", LLM_KEY, "sim-judge-1"
    return llm


@pytest.fixture
def fiche() -> FicheCache:
    """A cached fiche (Lyon-2) with its details and one transcribed call, built directly from the
    speech-to-text simulator's script."""
    fiche = FicheCache.objects.create(
        fiche_id=FICHE_ID,
        sales_date=date(2026, 2, 4),
        groupe="Lyon-2",
        crm_user_id="crm-7",
        prospect_nom="Durand",
        prospect_prenom="Paul",
        details_success=True,
        details_fetched_at=T0,
    )
    FicheCacheDetails.objects.create(
        fiche=fiche,
        information={"fiche_id": FICHE_ID, "groupe": "Lyon-2", "produit": "Habitation Plus", "statut": "Vente"},
        prospect={"nom": "Durand", "prenom": "Paul", "ville": "Lyon"},
        present_sections=["information", "prospect", "recordings", "mail_devis"],
    )
    transcribed_call(fiche, CALL, T0)
    return fiche


@pytest.fixture
def audit(fiche) -> Audit:
    """A completed audit of the fiche: niveau BON, the withdrawal step passed with a verified citation."""
    call_command("seed_audit_configs", verbosity=0)
    config = AuditConfig.objects.get()
    audit = Audit.objects.create(
        fiche=fiche,
        config=config,
        config_version=config.current_version,
        status="completed",
        model="sim-judge-1",
        overall_score=92,
        max_score=100,
        score_percentage=92,
        niveau="BON",
        is_compliant=True,
        completed_at=T0,
    )
    check = EvidenceIndex(timeline_for(fiche).turns).check(RETRACTATION, speaker="agent")
    assert check.verified
    for definition in config.current_version.steps.all():
        row = AuditStepResult.objects.create(
            audit=audit,
            step=definition,
            position=definition.position,
            status="completed",
            score=definition.weight,
            max_score=definition.weight,
            conforme=True,
        )
        point = ControlPointResult.objects.create(step_result=row, index=0, ai_status="pass", status="pass")
        if definition.position == 7:
            Citation.objects.create(
                control_point=point,
                quote=check.quote,
                text=check.matched_text or "",
                speaker=check.speaker,
                call_id=check.call_id,
                start=check.start,
                end=check.end,
                verified=True,
                score=check.score,
            )
    return audit


@pytest.fixture
def chatter(make_role, make_user) -> User:
    role = make_role(
        "chatter", chat=("rw", "ALL"), fiches=("r", "ALL"), audits=("r", "ALL"), transcriptions=("r", "ALL")
    )
    return make_user(role, email="chatter@example.com")


def bearer(user: User) -> dict[str, str]:
    return {"Authorization": f"Bearer {issue_tokens(user).access}"}
