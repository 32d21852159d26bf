"""Settings of the servers the benchmarks start: production settings plus the baseline view."""

from config.settings import *  # noqa: F403

ROOT_URLCONF = "bench.urls"
