"""The monitoring web dashboard: live MJPEG tiles, JSON stats and Prometheus metrics.

The stdlib HTTP server plus ``prometheus_client`` for ``/metrics``; every route is an exact
match and the page is package data read once, so nothing is ever served from disk by path.

Parts:

* :mod:`.hub` — :class:`DashboardHub` between the pipeline and the web server: ``publish``
  keeps a reference to at most ``max_fps`` frames per camera and returns at once; one encoder
  thread JPEG-encodes the newest pending frame of each camera in turn.
* :mod:`.server` — :class:`DashboardServer` on a ``ThreadingHTTPServer`` in a daemon thread,
  with caps on connections and MJPEG streams (503 beyond them, counted).
* :mod:`.metrics` — a ``prometheus_client`` collector over the stats dict below.
* :mod:`.page` with ``page.html`` and ``tile.html`` — the page.

Routes (GET and HEAD; any other method is 405; anything else is 404):

==========================  ===============================================================
``/``                       the page (one tile per camera, status polled every second)
``/stream/NAME.mjpg``       ``multipart/x-mixed-replace`` MJPEG of camera NAME (URL-encoded)
``/snapshot/NAME.jpg``      the newest JPEG; 503 with ``Retry-After: 1`` until the first
                            frame exists (404 is kept for unknown cameras)
``/api/stats``              ``hub.stats()`` as JSON (NaN and infinities become ``null``)
``/metrics``                Prometheus text format 0.0.4 (OpenMetrics when the Accept header
                            asks for it): counters ``streamer_frames_total{camera}``,
                            ``streamer_dropped_frames_total``, ``streamer_reconnects_total``,
                            ``streamer_camera_info{camera,node,node_ip}`` and ``streamer_nodes``
                            (Ray executor),
                            the histogram ``streamer_camera_latency_seconds``, gauges
                            ``streamer_camera_up`` and ``streamer_camera_state{state}``,
                            stage and model metrics, the dashboard's own counters
``/favicon.ico``            204
==========================  ===============================================================

With a token every route needs ``Authorization: Bearer TOKEN`` or the cookie that
``/?token=TOKEN`` sets (then 303 to ``/``). The cookie holds an HMAC of the token, not the
token itself. Without either: 401 with ``WWW-Authenticate: Bearer``.

Browsers open at most six HTTP/1.1 connections per host and port, and an MJPEG stream holds
one for good; so the page streams the first :data:`MJPEG_TILES` cameras and refreshes the
others from ``/snapshot`` (a few frames per second), which leaves connections for the stats
poll. For the same reason a second tab of the dashboard in the same browser may stall.

The stats dict, produced by the pipeline's provider callable (keys may be missing; numbers
may be ``None``; both are skipped in the metrics)::

    {"uptime_s": float,
     "model": {"name": str, "backend": str, "device": str,
               "batch_size_mean": float, "batches": int},
     "cameras": {NAME: {"state": "connecting|streaming|stalled|reconnecting|down|ended",
                        "fps": float, "latency_ms_p50": float, "latency_ms_p95": float,
                        "latency_histogram": {"le": [seconds, ...], "counts": [cumulative
                                              count per bound, then the total], "sum_s": float},
                        "dropped": int, "reconnects": int, "frames": int,
                        "url": str (already password-masked), "last_error": str | None,
                        "size": str | None,
                        "node": str | None, "node_ip": str | None (Ray executor: the camera's node)}},
     "nodes": int (Ray executor: nodes the cameras ran on),
     "stages": {STAGE: {"processed": int, "dropped": int, "p50_ms": float, "p95_ms": float,
                        "fps": float, "queue_depth": int}}}

The provider is called from web server threads (once per ``/api/stats`` or ``/metrics``
request), so it must be thread-safe and cheap.
"""

from __future__ import annotations

from streamer.sinks.dashboard.hub import DashboardHub, StatsProvider
from streamer.sinks.dashboard.metrics import CAMERA_STATES, StatsCollector, render_metrics
from streamer.sinks.dashboard.page import MJPEG_TILES, render_page
from streamer.sinks.dashboard.server import BOUNDARY, COOKIE_NAME, DashboardServer, mask_token

__all__ = [
    "BOUNDARY", "CAMERA_STATES", "COOKIE_NAME", "MJPEG_TILES", "DashboardHub", "DashboardServer", "StatsCollector",
    "StatsProvider", "mask_token", "render_metrics", "render_page",
]
