"""A real Redis made to answer BUSY, as it does to every client while another one's script runs long."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import redis

# A script that writes nothing and never ends: SCRIPT KILL may stop it.
_SPIN = "while true do end"


@contextmanager
def busy(redis_url: str) -> Iterator[None]:
    """Redis answers BUSY to every command from entering the block until leaving it."""
    admin = redis.Redis.from_url(redis_url, decode_responses=True)
    threshold = admin.config_get("busy-reply-threshold")["busy-reply-threshold"]
    admin.config_set("busy-reply-threshold", 50)  # ms a script runs before other clients get BUSY
    spinner = threading.Thread(target=_spin, args=(redis_url,), daemon=True)
    spinner.start()
    _wait_until_busy(admin)
    try:
        yield
    finally:
        while spinner.is_alive():
            try:
                admin.script_kill()
            except redis.ResponseError:  # NOTBUSY: the script has not started or has ended
                pass
            spinner.join(0.1)
        admin.config_set("busy-reply-threshold", threshold)


def _spin(redis_url: str) -> None:
    try:
        redis.Redis.from_url(redis_url).eval(_SPIN, 0)
    except redis.ResponseError:
        pass  # killed


def _wait_until_busy(admin: redis.Redis) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            admin.ping()
        except redis.ResponseError as exc:
            if str(exc).startswith("BUSY"):
                return
            raise
        time.sleep(0.02)
    raise TimeoutError("Redis never answered BUSY")
