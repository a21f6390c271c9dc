"""gunicorn settings for the sandbox: ONE worker process, because all state is in its memory.

Threads (gthread) give concurrency instead; slow_answer sleeps and early callbacks
hold a thread each, hence many of them.
"""

import sys
from pathlib import Path

_PROJECT = str(Path(__file__).resolve().parent.parent)
if _PROJECT not in sys.path:
    sys.path.insert(0, _PROJECT)

from sandbox.options import Config  # noqa: E402

wsgi_app = "sandbox.app:create_app()"
bind = Config.from_env().bind
workers = 1
worker_class = "gthread"
threads = 64
keepalive = 5
graceful_timeout = 5
timeout = 60
# Several sandboxes (and the receiver's gunicorn) may run side by side, as in tests:
# gunicorn's default control socket is one fixed path per user and they would fight over it.
control_socket_disable = True
