"""Pre-flight for `make run` / `make test`, without Django: are Postgres and Redis reachable?
Creates the application database when it is missing. Exit code 1 with a clear message otherwise.

    python -m core.bootstrap            # check services, create the database if missing
"""

from __future__ import annotations

import os
import sys
from typing import Any

import environ
import psycopg
import redis
from psycopg import sql

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/callcentre"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"

START_POSTGRES = "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"
START_REDIS = (
    'redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no '
    "--dir /var/lib/redis --logfile /var/log/redis/ci.log"
)


def fail(message: str) -> None:
    print(f"\n[bootstrap] ERROR: {message}\n", file=sys.stderr)
    sys.exit(1)


def ensure_database(url: str) -> None:
    cfg = environ.Env.db_url_config(url)
    conninfo: dict[str, Any] = {
        "host": cfg.get("HOST") or "127.0.0.1",
        "port": cfg.get("PORT") or 5432,
        "user": cfg.get("USER") or None,
        "password": cfg.get("PASSWORD") or None,
        "connect_timeout": 3,
    }
    name = cfg["NAME"]
    try:
        with psycopg.connect(dbname="postgres", autocommit=True, **conninfo) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
            if not exists:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
                print(f"[bootstrap] created database {name!r}")
    except psycopg.OperationalError as exc:
        fail(
            f"Postgres is not reachable at {conninfo['host']}:{conninfo['port']} ({exc}).\n"
            f"  Start it with:  {START_POSTGRES}\n  or set DATABASE_URL."
        )


def ensure_redis(url: str) -> None:
    client = redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=3)
    try:
        client.ping()
    except redis.RedisError as exc:
        fail(f"Redis is not reachable at {url} ({exc}).\n  Start it with:  {START_REDIS}\n  or set REDIS_URL.")
    finally:
        client.close()


def main() -> None:
    env = environ.Env()
    env_file = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".env")
    if os.path.isfile(env_file):
        env.read_env(env_file)
    ensure_database(env.str("DATABASE_URL", default=DEFAULT_DATABASE_URL))
    redis_url = env.str("REDIS_URL", default=DEFAULT_REDIS_URL)
    ensure_redis(redis_url)
    for name in ("CELERY_BROKER_URL", "TEST_REDIS_URL"):
        if env.str(name, default="").startswith("redis"):
            ensure_redis(env.str(name))
    print("[bootstrap] Postgres and Redis are reachable")


if __name__ == "__main__":
    main()
