"""``manage.py run_stt_simulator [--host 127.0.0.1] [--port 8200] [--seed N ...]``: serve the speech-to-text simulator.

Knobs come from the ``STT_SIM_*`` environment variables (see ``transcriptions.simulator.server``); each flag
overrides its variable. Serves until interrupted (Ctrl-C). Point ``ELEVENLABS_BASE_URL`` at the printed URL.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from core.process import wait_until_stopped
from transcriptions.simulator.server import ENV_VARS, SttSimulator, SttSimulatorConfig

KNOB_HELP = {
    "seed": "transcript seed (same seed, same transcripts)",
    "crm_seed": "seed of the CRM simulator whose recordings' durations the transcripts match",
    "latency_ms": "latency added to each transcription request, in milliseconds",
    "latency_ms_per_audio_minute": "latency added per minute of audio, in milliseconds",
    "fail_rate": "probability (0-1) that a transcription request answers 503",
    "fail_call_ids": "comma-separated call ids whose transcription always answers 500",
    "burst_429": "the next N transcription requests answer 429 system_busy",
    "concurrency_limit": "transcription requests processed at once; more answer 429 (0 or none: no limit)",
    "api_key": "xi-api-key required on the API (none by default)",
    "missing_words_call_ids": "comma-separated call ids answered without 'words' (breaks the contract)",
    "pii_call_ids": "comma-separated call ids whose client says personal data aloud (redaction tests)",
}


class Command(BaseCommand):
    help = "Serve the ElevenLabs speech-to-text simulator (deterministic French sales calls) until interrupted."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
        parser.add_argument("--port", type=int, default=8200, help="port to bind (default 8200, 0 for any free port)")
        for knob, var in ENV_VARS.items():
            parser.add_argument(
                f"--{knob.replace('_', '-')}",
                dest=knob,
                metavar=var.removeprefix("STT_SIM_"),
                help=f"{KNOB_HELP[knob]} (overrides {var})",
            )

    def handle(self, *args: Any, **options: Any) -> None:
        config = self.config_from_options(options)
        try:
            simulator = SttSimulator(config, host=options["host"], port=options["port"])
        except OSError as exc:
            raise CommandError(f"cannot listen on {options['host']}:{options['port']}: {exc}") from exc

        with simulator:
            self.stdout.write(self.style.SUCCESS(f"STT simulator listening on {simulator.url}"))
            for knob, value in config.to_dict().items():
                self.stdout.write(f"  {knob} = {value}")
            self.stdout.write("Quit with CONTROL-C.")
            wait_until_stopped()
            self.stdout.write("Stopping the STT simulator.")

    @staticmethod
    def config_from_options(options: dict[str, Any]) -> SttSimulatorConfig:
        """The knobs: environment first, then the flags given; CommandError names a bad value."""
        try:
            config = SttSimulatorConfig.from_env()
            config.update_from_strings({knob: options[knob] for knob in ENV_VARS if options.get(knob) is not None})
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        return config
