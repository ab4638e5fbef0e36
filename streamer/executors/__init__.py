"""Executors: where a job's work runs.

``local`` (the default) is this process: :mod:`.local` runs what :mod:`streamer.compose` built.
``ray`` spreads the same work over a Ray cluster: :mod:`.ray_monitor` (cameras as actors,
one batching inference actor per node, tracking and the dashboard on the driver) and
:mod:`.ray_annotate` (one task per file). :mod:`.ray_cluster` joins or starts the cluster.
Ray is an optional extra (``pip install 'streamer[ray]'``); nothing here imports it until a
Ray job starts.
"""

from __future__ import annotations
