"""`python3 manage.py run`: the whole system on one machine, no Plivo account needed.

Starts an embedded Redis (unless REDIS_URL is set), the Plivo sandbox, and
the Procfile's web and worker processes under honcho, and prints how to use it.
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

from local.redis_server import RedisServer

ROOT = Path(__file__).resolve().parent.parent
STATE = ROOT / ".local"
SANDBOX_AUTH_ID = "MASANDBOX00000000000"
SANDBOX_AUTH_TOKEN = "sandbox-auth-token"


def dev_api_key() -> str:
    """One key per checkout, kept in .local/ so it survives restarts."""
    path = STATE / "dev-api-key"
    if not path.exists():
        STATE.mkdir(exist_ok=True)
        path.write_text("ab_dev_" + secrets.token_urlsafe(24))
    return path.read_text().strip()


def environment(redis_url: str) -> dict[str, str]:
    env = {**os.environ, **{k: v for k, v in dotenv_values(ROOT / ".env").items() if v is not None}}
    port = env.setdefault("PORT", "8000")
    sandbox_port = env.setdefault("SANDBOX_PORT", "8010")
    env["REDIS_URL"] = redis_url
    env.setdefault("API_KEYS", dev_api_key())
    env.setdefault("PUBLIC_URL", f"http://127.0.0.1:{port}")
    if "PLIVO_AUTH_ID" not in env:
        env.update(PLIVO_AUTH_ID=SANDBOX_AUTH_ID, PLIVO_AUTH_TOKEN=SANDBOX_AUTH_TOKEN,
                   PLIVO_API_URL=f"http://127.0.0.1:{sandbox_port}/v1/")
    env.update(SANDBOX_AUTH_ID=env["PLIVO_AUTH_ID"], SANDBOX_AUTH_TOKEN=env["PLIVO_AUTH_TOKEN"],
               SANDBOX_BIND=f"127.0.0.1:{sandbox_port}", PYTHONUNBUFFERED="1")
    return env


def banner(env: dict[str, str]) -> str:
    base, key = f"http://127.0.0.1:{env['PORT']}", env["API_KEYS"].split(",")[0]
    return f"""
Answerback is starting at {base}  (dashboard: {base}/ , health: {base}/readyz)
Upstream: {env['PLIVO_API_URL']}   Redis: {env['REDIS_URL']}
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
"""


def main() -> int:
    redis = None
    redis_url = os.environ.get("REDIS_URL")
    if not redis_url:
        redis = RedisServer(STATE / "redis", port=int(os.environ.get("REDIS_PORT", "6390"))).start()
        redis_url = redis.url
    try:
        env = environment(redis_url)
        manager = Manager(Printer(sys.stdout))
        if env["PLIVO_API_URL"].startswith(f"http://127.0.0.1:{env['SANDBOX_PORT']}/"):
            manager.add_process("sandbox", f"{sys.executable} -m sandbox", env=env, cwd=str(ROOT))
        procfile = parse_procfile((ROOT / "Procfile").read_text())
        bin_dir = str(Path(sys.executable).parent)
        env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
        for name, entry in procfile.processes.items():
            copies = int(env.get("WORKERS", "2")) if name == "worker" else 1
            for i in range(copies):
                manager.add_process(name if copies == 1 else f"{name}.{i + 1}", entry, env=env, cwd=str(ROOT))
        print(banner(env), flush=True)
        manager.loop()
        return manager.returncode or 0
    finally:
        if redis:
            redis.stop()


if __name__ == "__main__":
    sys.exit(main())
