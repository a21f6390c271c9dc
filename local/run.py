"""`python3 manage.py run`: the whole system on one machine, no Plivo account needed.

Starts an embedded Redis (unless REDIS_URL is set) and the Plivo sandbox (unless Plivo
credentials are set) from local/stack.py, which also builds the environment, then the
Procfile's web and worker processes under honcho, and prints how to use it.
"""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path

from dotenv import dotenv_values
from honcho.environ import parse_procfile
from honcho.manager import Manager
from honcho.printer import Printer

from config import Settings
from local import stack as local_stack
from local.redis_server import RedisServer
from sandbox.options import DEFAULT_AUTH_TOKEN as SANDBOX_AUTH_TOKEN

ROOT = Path(__file__).resolve().parent.parent
STATE = ROOT / ".local"


def dev_api_key() -> str:
    """One key per checkout, kept in .local/ so it survives restarts."""
    path = STATE / "dev-api-key"
    if not path.exists():
        STATE.mkdir(exist_ok=True)
        path.write_text("ab_dev_" + secrets.token_urlsafe(24))
    return path.read_text().strip()


def settings() -> dict[str, str]:
    """The environment, with .env's values over it."""
    return {**os.environ, **{k: v for k, v in dotenv_values(ROOT / ".env").items() if v is not None}}


def environment(base: dict[str, str], redis_url: str) -> dict[str, str]:
    """Web's and the workers' (the Procfile's processes share one). Without Plivo credentials
    the upstream is the sandbox on SANDBOX_PORT."""
    sandbox_port = None if "PLIVO_AUTH_ID" in base else int(base.get("SANDBOX_PORT", "8010"))
    env = local_stack.app_env(base, redis_url, base.get("API_KEYS") or dev_api_key(), sandbox_port, SANDBOX_AUTH_TOKEN)
    return local_stack.web_env(env, Settings.from_env(base).port)


def start_sandbox(env: dict[str, str], started: local_stack.Processes) -> str:
    """The sandbox, when the upstream is on SANDBOX_PORT, with the upstream's credentials;
    its log's path ('' when none is started)."""
    port = int(env.get("SANDBOX_PORT", "8010"))
    if not env.get("PLIVO_API_URL", "").startswith(local_stack.local_url(port) + "/"):
        return ""
    sandbox_env = local_stack.sandbox_env(env, port, env["PLIVO_AUTH_TOKEN"], env["PLIVO_AUTH_ID"])
    return str(started.add(local_stack.start_sandbox(sandbox_env, STATE, port)).log_path.relative_to(ROOT))


def banner(env: dict[str, str], sandbox_log: str) -> str:
    base, key = f"http://127.0.0.1:{env['PORT']}", Settings.from_env(env).api_keys[0]
    sandbox = f" (the sandbox; its log: {sandbox_log})" if sandbox_log else ""
    return f"""
Answerback is starting at {base}  (console: {base}/ , health: {base}/readyz)
Upstream: {env.get("PLIVO_API_URL", "Plivo")}{sandbox}
Redis: {env["REDIS_URL"]}
Development API key: {key}

Try it (submit a call, then wait up to 30 s for its callback):

  KEY={key}
  RID=$(curl -s -X POST {base}/v1/requests -H "Authorization: Bearer $KEY" \\
        -H 'Content-Type: application/json' \\
        -d '{{"method": "POST", "path": "Call/", "params": {{"from": "14155550100", "to": "14155550101", "answer_url": "https://example.com/answer"}}}}' \\
        | python3 -c 'import json, sys; print(json.load(sys.stdin)["request_id"])')
  curl -s "{base}/v1/requests/$RID?wait=30" -H "Authorization: Bearer $KEY"

or with the command line (in .venv/bin; `answerback --help`):

  export ANSWERBACK_URL={base} ANSWERBACK_API_KEY={key}
  .venv/bin/answerback submit POST Call/ from=14155550100 to=14155550101 answer_url=https://example.com/answer --wait 30

Stop with Ctrl-C.
"""  # noqa: E501 (the curl example's line is copied as it is)


def main() -> int:
    base = settings()
    with local_stack.Processes() as started:
        redis_url = base.get("REDIS_URL")
        if not redis_url:
            redis_url = started.add(RedisServer(STATE / "redis", port=int(base.get("REDIS_PORT", "6390"))).start()).url
        env = environment(base, redis_url)
        sandbox_log = start_sandbox(env, started)
        manager = Manager(Printer(sys.stdout))
        procfile = parse_procfile((ROOT / "Procfile").read_text())
        bin_dir = str(Path(sys.executable).parent)
        env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
        for name, entry in procfile.processes.items():
            copies = int(env.get("WORKERS", "2")) if name == "worker" else 1
            for i in range(copies):
                manager.add_process(name if copies == 1 else f"{name}.{i + 1}", entry, env=env, cwd=str(ROOT))
        print(banner(env, sandbox_log), flush=True)
        manager.loop()
        return manager.returncode or 0


if __name__ == "__main__":
    sys.exit(main())
