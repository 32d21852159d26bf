"""``manage.py run_llm_simulator [--port 8300] [--host 127.0.0.1] [--seed N ...]``: serve the LLM simulator.

Knobs come from the ``LLM_SIM_*`` environment variables (see ``audits.simulator.server``); each flag
overrides its variable. Point ``LLM_BASE_URL`` at ``http://<host>:<port>/v1``. Serves until interrupted.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from audits.simulator.server import ENV_VARS, LlmSimulator, SimulatorConfig
from core.process import wait_until_stopped

KNOB_HELP = {
    "seed": "seed of the dice (same seed and request, same answer)",
    "latency_ms": "latency added to each request, in milliseconds",
    "stream_token_delay_ms": "delay before each streamed word, in milliseconds",
    "fail_rate": "probability (0-1) that a request answers 500",
    "burst_429": "the next N requests answer 429 with Retry-After: 1",
    "bad_json_next": "the next N structured answers are invalid JSON",
    "fabricate_rate": "probability (0-1) that a quote is replaced by a sentence not in the transcript",
    "alter_numbers_rate": "probability (0-1) that a number in a quote is changed",
    "negate_rate": "probability (0-1) that a negation is added to or removed from a quote",
    "dodge_rate": "probability (0-1) that a control point is answered not_applicable without evidence",
    "wrong_speaker_rate": "probability (0-1) that a point passes on the other party's words (client for agent)",
    "bad_json_rate": "probability (0-1) that a structured answer is invalid JSON",
    "length_rate": "probability (0-1) that an answer is cut (finish_reason length)",
    "refusal_rate": "probability (0-1) that the model refuses",
    "content_filter_rate": "probability (0-1) of finish_reason content_filter",
    "no_json_schema": "true: 400 on response_format json_schema",
    "args_as_object": "true: tool-call arguments as a JSON object instead of a string",
    "no_tool_ids": "true: tool calls without id",
    "fenced_json": "true: structured answers in a Markdown fence with text around",
    "no_usage": "true: responses without usage",
    "api_key": "bearer token required on the API (none by default)",
    "model": "model id listed by /v1/models",
    "wrong_point": "text: every control point whose question contains it is answered fail without quotes",
}


class Command(BaseCommand):
    help = "Serve the LLM simulator (OpenAI-compatible Chat Completions, deterministic lexical judge)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
        parser.add_argument("--port", type=int, default=8300, help="port to bind (default 8300, 0 for any free port)")
        for knob, var in ENV_VARS.items():
            parser.add_argument(
                f"--{knob.replace('_', '-')}",
                dest=knob,
                metavar=var.removeprefix("LLM_SIM_"),
                help=f"{KNOB_HELP[knob]} (overrides {var})",
            )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            config = SimulatorConfig.from_env()
            config.update_from_strings({knob: options[knob] for knob in ENV_VARS if options[knob] is not None})
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        try:
            simulator = LlmSimulator(config, host=options["host"], port=options["port"])
        except OSError as exc:
            raise CommandError(f"cannot listen on {options['host']}:{options['port']}: {exc}") from exc

        with simulator:
            self.stdout.write(
                self.style.SUCCESS(f"LLM simulator listening on {simulator.url} (LLM_BASE_URL={simulator.url}/v1)")
            )
            for knob, value in config.to_dict().items():
                shown = "(set)" if knob == "api_key" and value else value
                self.stdout.write(f"  {knob} = {shown}")
            self.stdout.write("Quit with CONTROL-C.")
            wait_until_stopped()
            self.stdout.write("Stopping the LLM simulator.")
