"""``renderfarm serve``: the whole farm on this machine, as the README's run command starts it.

Starts a local Ray (dashboard included), Serve's HTTP proxy on the chosen address, and the
application with the ``local`` placement (everything sized to fit this machine's CPUs), then
blocks until SIGTERM or SIGINT and shuts Serve and Ray down cleanly. With ``RAY_ADDRESS`` set
it joins that cluster instead of starting one.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time

log = logging.getLogger("renderfarm.serve")

APP_NAME = "renderfarm"


def run_local_service(*, host: str, port: int, dashboard_port: int, profile: str = "local") -> int:
    import ray
    from ray import serve

    from serve_app import app

    started = time.perf_counter()
    address = os.environ.get("RAY_ADDRESS")
    if address:
        context = ray.init(address=address, namespace=APP_NAME)
    else:
        # "local": a Ray of our own, even where `ray start` left a cluster ray.init would join.
        context = ray.init(address="local", namespace=APP_NAME, include_dashboard=True,
                           dashboard_host="127.0.0.1", dashboard_port=dashboard_port)
    # After ray.init, which installs handlers of its own that would end the process abruptly.
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    try:
        serve.start(http_options={"host": host, "port": port})
        serve.run(app({"profile": profile}), name=APP_NAME, route_prefix="/", blocking=False)
        dashboard = context.dashboard_url or "(not running)"
        if not dashboard.startswith("http"):
            dashboard = f"http://{dashboard}"
        print(f"renderfarm: API on http://{host}:{port} (healthy after "
              f"{time.perf_counter() - started:.1f} s); Ray dashboard on {dashboard}; "
              "stop with Ctrl-C or SIGTERM", flush=True)
        stop.wait()
        print("renderfarm: shutting down", flush=True)
        if address:  # a cluster that outlives us: take our application off it
            serve.shutdown()
        # Our own Ray: ending it ends Serve with it. (Ctrl-C reaches Ray's processes too, so
        # Serve's controller may be gone already; serve.shutdown() would wait 30 s for it.)
    finally:
        ray.shutdown()
    return 0

