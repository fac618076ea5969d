"""gunicorn settings of the example project's web processes (docs/deployment.md).

``gunicorn example_project.wsgi --config example_project/deploy/gunicorn.conf.py``;
the environment sets the address and the number of workers. Nothing here is
django-fluvius specific: the events are on the feed once committed, and a worker's
relay thread sends its last NOTIFY at exit by itself (an ``atexit`` hook);
``tests/test_deployment.py`` checks that nothing is lost when the web tier stops.
"""

import os

bind = f"{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('PORT', '8000')}"
# Sync workers: the command bus is synchronous Django; two to four per core.
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
# Requests in flight get this long to finish after SIGTERM (then they are killed).
graceful_timeout = int(os.environ.get("GRACEFUL_TIMEOUT", "30"))
timeout = int(os.environ.get("WEB_TIMEOUT", "60"))
# Restart each worker after this many requests (and a random extra), against slow leaks.
max_requests = int(os.environ.get("MAX_REQUESTS", "2000"))
max_requests_jitter = max_requests // 10
accesslog = "-"
errorlog = "-"
# Behind a proxy that sets X-Forwarded-For/-Proto (nginx, a load balancer) on this host.
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")


# gunicorn >= 27 opens a control socket, by default one per user ($HOME/.gunicorn):
# two deployments (or test runs) under one user would share it. Off unless a path is given.
if os.environ.get("GUNICORN_CONTROL_SOCKET"):
    control_socket = os.environ["GUNICORN_CONTROL_SOCKET"]
else:
    control_socket_disable = True
