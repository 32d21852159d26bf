"""``manage.py run_crm_simulator [--port 8100] [--host 127.0.0.1] [--seed N ...]``: serve the CRM simulator.

Knobs come from the ``CRM_SIM_*`` environment variables (see ``fiches.simulator.server``); each flag
overrides its variable. Serves until interrupted (Ctrl-C).
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from core.process import wait_until_stopped
from fiches.simulator.server import ENV_VARS, CrmSimulator, SimulatorConfig

KNOB_HELP = {
    "seed": "data seed (same seed, same data)",
    "fiches_per_day": "mean number of sales per weekday",
    "latency_ms": "latency added to each request, in milliseconds",
    "fail_dates": "comma-separated YYYY-MM-DD dates whose requests answer 503",
    "fail_rate": "probability (0-1) that a request answers 503",
    "max_range_days": "ranges longer than this many days answer 504",
    "revision": "data revision; bump it to change some sales and recordings",
    "api_key": "bearer token required on the API (none by default)",
}


class Command(BaseCommand):
    help = "Serve the CRM gateway simulator (deterministic synthetic sales) until interrupted."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
        parser.add_argument("--port", type=int, default=8100, help="port to bind (default 8100, 0 for any free port)")
        for knob, var in ENV_VARS.items():
            parser.add_argument(
                f"--{knob.replace('_', '-')}",
                dest=knob,
                metavar=var.removeprefix("CRM_SIM_"),
                help=f"{KNOB_HELP[knob]} (overrides {var})",
            )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            config = SimulatorConfig.from_env()
            config.update_from_strings({knob: options[knob] for knob in ENV_VARS if options[knob] is not None})
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        try:
            simulator = CrmSimulator(config, host=options["host"], port=options["port"])
        except OSError as exc:
            raise CommandError(f"cannot listen on {options['host']}:{options['port']}: {exc}") from exc

        with simulator:
            self.stdout.write(self.style.SUCCESS(f"CRM simulator listening on {simulator.url}"))
            for knob, value in config.to_dict().items():
                shown = "(set)" if knob == "api_key" and value else value
                self.stdout.write(f"  {knob} = {shown}")
            self.stdout.write("Quit with CONTROL-C.")
            wait_until_stopped()
            self.stdout.write("Stopping the CRM simulator.")
