"""Defaults that several parts of streamer share, each defined once.

``QUEUES`` says how the edges of a pipeline queue its frames, by the kind of source it reads
(:attr:`streamer.sources.base.Source.kind`). Every job, ``build_pipeline`` and a bare
``Pipeline`` take their queues from it, and docs/architecture.md and the README quote
:func:`queue_table` verbatim (tests/test_defaults.py checks both).
"""

from __future__ import annotations

from dataclasses import dataclass

from streamer.queues import Policy, QueueConfig

__all__ = ["QUEUES", "QueueDefault", "queue_for", "queue_table"]


@dataclass(frozen=True, slots=True)
class QueueDefault:
    """One row of :data:`QUEUES`: the size before scaling, how it scales, the policy and why."""

    size: int
    #: "": fixed; "batch": at least two batches, so a batch can fill while one is in flight;
    #: "cameras": that many slots per camera.
    scale: str
    policy: Policy
    sources: str
    jobs: str
    why: str


QUEUES: dict[str, QueueDefault] = {
    "file": QueueDefault(
        4, "batch", Policy.BLOCK, "video file, image or folder", "annotate, `stream()` on a file",
        "nothing is lost, output = input in order; a few frames of slack keep every stage busy",
    ),
    "live": QueueDefault(
        1, "", Policy.DROP_OLDEST, "webcam, RTSP/HTTP, replayed file, synthetic", "watch, `stream()` on a live source",
        "the newest frame wins, so latency cannot build up; every eviction is counted",
    ),
    "cameras": QueueDefault(
        1, "cameras", Policy.LATEST_PER_KEY, "several live cameras (`cameras:`)", "monitor",
        "one slot per camera: a busy camera never pushes another camera's frame out; with a model every edge "
        "blocks instead (one frame, then one batch into the model, then these sizes), so a frame leaves its "
        "camera only when the model has room and the rest are shed there, before they are decoded",
    ),
}


def queue_for(kind: str, *, batch: int = 1, cameras: int = 1, size: int | None = None,
              policy: Policy | str | None = None, workers: int = 1) -> QueueConfig:
    """The queues of a pipeline reading a ``kind`` source (a key of :data:`QUEUES`).

    ``batch`` is the infer stage's batch size and ``cameras`` the number of cameras, for the
    rows that scale with them. ``size`` and ``policy`` (a pipeline file's ``queue:`` section)
    replace the table's values when given.
    """
    row = QUEUES.get(kind)
    if row is None:
        raise ValueError(f"unknown source kind {kind!r}, expecting one of {list(QUEUES)}")
    if size is None:
        size = {"": row.size, "batch": max(row.size, 2 * batch), "cameras": row.size * max(1, cameras)}[row.scale]
    # Cameras feed the model on demand unless the pipeline file chose a policy of its own.
    feed = max(1, batch) * max(1, workers) if kind == "cameras" and policy is None else None
    return QueueConfig(size=size, policy=Policy.parse(policy) if policy is not None else row.policy, feed=feed)


def queue_table() -> str:
    """:data:`QUEUES` as the Markdown table the docs quote."""
    sizes = {"": "{n}", "batch": "{n}, or 2 × batch when larger", "cameras": "{n} per camera"}
    lines = ["| source kind | sources | jobs | queue size | policy | why |", "|---|---|---|---|---|---|"]
    for kind, row in QUEUES.items():
        size = sizes[row.scale].format(n=row.size)
        lines.append(f"| `{kind}` | {row.sources} | {row.jobs} | {size} | `{row.policy.value}` | {row.why} |")
    return "\n".join(lines) + "\n"
