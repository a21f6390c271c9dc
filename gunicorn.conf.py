"""gunicorn settings for the web process, from the environment.

gthread workers: a client waiting on ?wait holds a thread, not a process, and
the wait cap (WAIT_SHARE of WEB_THREADS) keeps threads free for callbacks.
"""
import os

bind = f"0.0.0.0:{os.environ.get('PORT', '8000')}"
worker_class = "gthread"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
threads = int(os.environ.get("WEB_THREADS", "32"))
timeout = 90            # above the longest ?wait (60 s)
graceful_timeout = 65   # let waiting clients get their answer on shutdown
keepalive = 5
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info")
accesslog = os.environ.get("ACCESS_LOG") or None   # "-" for stdout
# No %(u)s: a key sent as a Basic user name must not reach the log; no headers either.
access_log_format = '%(h)s %(t)s "%(r)s" %(s)s %(b)s %(M)sms "%(a)s"'
logger_class = "receiver.gunicorn_logger.Logger"   # LOG_FORMAT=json: every line one JSON object
control_socket_disable = True   # gunicorn 27: one fixed control-socket path per user would clash between instances
