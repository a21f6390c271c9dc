"""Settings checked at start: web (gunicorn's master) and workers refuse, with one line naming
the variable and exit status EX_CONFIG, the settings that would otherwise lose results silently;
and each process says at start what it uses, never a secret."""

from __future__ import annotations

import subprocess

import pytest

from config import EX_CONFIG
from local import stack as local_stack
from local.processes import Service, wait_for
from local.redis_server import free_port
from tests.support.services import AUTH_TOKEN, KEY_A, KEY_B, start_web

URL_SECRET = "url-password-1"
REFUSED = [
    ("web", {"PUBLIC_URL": ""}, "PUBLIC_URL must be the absolute http(s) URL"),
    ("worker", {"PUBLIC_URL": ""}, "PUBLIC_URL must be the absolute http(s) URL"),
    ("worker", {"PUBLIC_URL": "127.0.0.1:8000"}, "not '127.0.0.1:8000'"),
    ("web", {"PUBLIC_URL": "ftp://hooks.example.com"}, "PUBLIC_URL must be"),
    ("web", {"API_KEYS": ""}, "API_KEYS is empty"),
    ("web", {"PLIVO_AUTH_TOKEN": ""}, "PLIVO_AUTH_TOKEN is not set"),
    ("worker", {"PLIVO_AUTH_TOKEN": "", "ALLOW_UNSIGNED_CALLBACKS": "no"}, "PLIVO_AUTH_TOKEN is not set"),
    ("web", {"PLIVO_API_URL": "https://api.plivo.com/v2/"}, "PLIVO_API_URL must end in /v1/"),
    ("worker", {"PLIVO_API_URL": "https://api.plivo.com/"}, "PLIVO_API_URL must end in /v1/"),
    # A password in a URL is shown as *** (a callback URL may carry basic auth).
    ("web", {"PUBLIC_URL": f"ftp://hook:{URL_SECRET}@hooks.example.com"}, "not 'ftp://hook:***@hooks.example.com'"),
    ("worker", {"PLIVO_API_URL": f"https://u:{URL_SECRET}@api.plivo.com/"}, "not 'https://u:***@api.plivo.com/'"),
]


def start(role: str, env: dict[str, str], workdir, name: str) -> Service:
    if role == "web":
        return local_stack.start_web(env, workdir, name, wait=False)
    return local_stack.start_worker(env, workdir, name)


def test_each_setting_that_would_lose_results_is_refused_at_start(base_env, workdir):
    """All at once (each exits within about a second): the exit status, and the one line naming
    the variable, with nothing of a secret."""
    started = []
    for i, (role, overrides, _) in enumerate(REFUSED):
        port = free_port()
        env = {**local_stack.web_env(base_env, port), **overrides}
        started.append(start(role, env, workdir, f"refused-{role}-{i}"))
    try:
        for service, (role, overrides, message) in zip(started, REFUSED, strict=True):
            assert service.process is not None
            try:
                status = service.process.wait(30)
            except subprocess.TimeoutExpired:
                pytest.fail(f"{role} with {overrides} did not refuse to start:\n{service.log()[-2000:]}")
            log = service.log()
            assert status == EX_CONFIG, (role, overrides, log[-2000:])
            [line] = [line for line in log.splitlines() if "refusing to start" in line]
            assert line.startswith(f"answerback {role}: refusing to start: ") and message in line, line
            assert "Traceback" not in log and not any(secret in log for secret in (AUTH_TOKEN, KEY_A, URL_SECRET))
    finally:
        for service in started:
            service.kill()


def test_web_and_worker_say_at_start_what_they_use(web, worker, base_env):
    """The session's own: Redis host and database, queue, callback URL, notifications and the
    number of keys; never a key or a token."""
    port = base_env["REDIS_URL"].rsplit(":", 1)[1].split("/")[0]
    used = f"Redis 127.0.0.1:{port} db 0, queue answerback, callbacks to {web.url}/callbacks/plivo"
    wait_for(lambda: "web starting: " in web.service.log(), 10, message="web's start-up line")
    web_line = next(line for line in web.service.log().splitlines() if "web starting: " in line)
    assert used in web_line and "signatures checked" in web_line and "notifications off" in web_line
    assert web_line.endswith("; 2 API keys")
    wait_for(lambda: "worker starting: " in worker.log(), 10, message="the worker's start-up line")
    worker_line = next(line for line in worker.log().splitlines() if "worker starting: " in line)
    assert used in worker_line
    for log in (web.service.log(), worker.log()):
        assert KEY_A not in log and KEY_B not in log and AUTH_TOKEN not in log


def test_unsigned_callbacks_only_by_explicit_choice(base_env, workdir):
    """ALLOW_UNSIGNED_CALLBACKS=true: web starts without PLIVO_AUTH_TOKEN, and says so."""
    server = start_web(
        base_env, workdir, "web-unsigned", WEB_CONCURRENCY="1", PLIVO_AUTH_TOKEN="", ALLOW_UNSIGNED_CALLBACKS="true"
    )
    try:
        wait_for(lambda: "accepted unsigned" in server.service.log(), 10, message="the unsigned warning")
        assert "signatures NOT checked" in server.service.log()
    finally:
        server.service.kill()
