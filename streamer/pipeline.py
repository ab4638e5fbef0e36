"""The threaded pipeline runner.

A pipeline is a source followed by a chain of stages. Each runs in its own thread, connected
by :class:`~streamer.queues.BoundedQueue` edges::

    source ─q─▶ preprocess ─q─▶ infer ─q─▶ postprocess ─q─▶ render ─q─▶ sinks ─q─▶ (caller)

OpenCV, PyTorch, ONNX Runtime and the ``nogil`` Numba kernels release the GIL while they
work, so the threads overlap decode, inference, postprocessing and encoding.

Rules the runner keeps:

* every ``put``/``get``/``join`` has a timeout, so stop works from any state;
* end of stream is the in-band :data:`~streamer.queues.END` marker; each stage calls
  ``flush()`` when it sees it and passes it on, so sinks finalize their files;
* an exception in any stage stops the whole pipeline and is re-raised in the caller as a
  :class:`~streamer.errors.StageError` naming the stage;
* ``stop()`` is graceful: the source stops reading, frames already read still flow through
  and are written; ``abort()`` discards them.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence

from streamer.defaults import queue_for
from streamer.errors import StageError, StreamerError
from streamer.queues import END, BoundedQueue, Empty, Policy, QueueConfig
from streamer.sources.base import TIMEOUT, Source
from streamer.stats import PipelineStats, StageMeter
from streamer.types import Result

log = logging.getLogger(__name__)

_POLL_S = 0.1  # how often blocked threads re-check the stop flags


class Stage(ABC):
    """One step of the pipeline, run by its own thread.

    ``open()`` runs before any item (load a model, open a file); ``process()`` runs once per
    item; ``flush()`` runs when end of stream arrives; ``close()`` runs at the end, only if
    ``open()`` succeeded. A stage with ``batch_size > 1`` receives up to that many items at
    once in ``process_batch``.
    """

    name: str = "stage"
    batch_size: int = 1
    #: Threads running this stage at once. Each takes whole batches, and results still leave
    #: in input order; ``process``/``process_batch`` must then be safe to call concurrently.
    workers: int = 1
    #: How long to wait for a batch to fill once its first item arrived.
    batch_timeout_s: float = 0.0

    def open(self) -> None:  # noqa: B027 - optional hook
        pass

    @abstractmethod
    def process(self, item: Result) -> Result | None:
        """Transform one item; return None to drop it from the stream."""

    def process_batch(self, items: list[Result]) -> list[Result]:
        out = []
        for item in items:
            result = self.process(item)
            if result is not None:
                out.append(result)
        return out

    def idle(self) -> None:  # noqa: B027 - optional hook
        """Called about every 0.1 s while no item arrives (periodic flushes)."""

    def flush(self) -> None:  # noqa: B027 - optional hook
        """End of stream: write out anything buffered."""

    def close(self) -> None:  # noqa: B027 - optional hook
        pass

    def abandon(self) -> None:  # noqa: B027 - optional hook
        """Called from the closing thread when this stage's threads did not end in time.

        Release what can be released safely while a thread of the stage may still be inside
        ``process`` (a sink stage closes the sinks that are not busy, so their files are
        finalized). The default does nothing: a model or a decoder must not be freed while a
        call into it may still be running. ``close()`` may still follow if the thread returns.
        """

    def failure_count(self) -> int:
        """Failures of this stage's outputs that did not stop it (a sink stage's sinks)."""
        return 0

    def failure_lines(self) -> list[str]:
        """One summary line per output that failed while the stage kept running."""
        return []

    def incomplete_outputs(self) -> list[str]:
        """Names of this stage's outputs that were disabled or could not be finished."""
        return []

    def summary_lines(self) -> list[str]:
        """What the stage has to say in a run's summary (a classifier: objects and calls)."""
        return []


def source_key(item: Result) -> str:
    return item.frame.source_id


__all__ = ["Pipeline", "QueueConfig", "Stage", "source_key"]


class Pipeline:
    """Runs ``source`` and ``stages`` in threads.

    With ``output=True`` the results of the last stage are handed to the caller through
    iteration (``for result in pipeline``); otherwise they are discarded after the last stage
    and ``run()`` simply waits for the end.

    Its queues are ``queue`` when given, else the row of :data:`streamer.defaults.QUEUES` for
    the source's kind (see :func:`streamer.defaults.queue_for`).
    """

    def __init__(
        self,
        source: Source,
        stages: Sequence[Stage],
        *,
        queue: QueueConfig | None = None,
        queue_size: int | None = None,
        queue_policy: Policy | str | None = None,
        batch: int = 1,
        workers: int = 1,
        output: bool = False,
        put_timeout_s: float = _POLL_S,
        stage_timeout_s: float | None = 30.0,
    ) -> None:
        self.source = source
        self.stages = list(stages)
        if queue is None:
            # The table's row for what the source is, sized for the model's ``batch`` and
            # ``workers``; a pipeline file's ``queue:`` section (``queue_size``, ``queue_policy``) wins.
            queue = queue_for(source.kind, batch=batch, cameras=source.streams, size=queue_size, policy=queue_policy,
                              workers=workers)
        self.queue_config = queue
        self._put_timeout = put_timeout_s
        self.stage_timeout_s = stage_timeout_s
        names = [s.name for s in self.stages]
        # Every queue knows each frame's source: latest_per_key needs it, and the others
        # count their drops per source with it (a camera's drops in ``stats()``).
        key = source_key
        self.queues: list[BoundedQueue[Result]] = [
            BoundedQueue(size, policy, name=f"->{n}", key=key) for n, (size, policy) in zip(names, queue.edges(names))
        ]
        self.output: BoundedQueue[Result] | None = (
            BoundedQueue(queue.size, queue.policy, name="->output", key=key) if output else None
        )
        self.source_meter = StageMeter("source")
        self.meters = [StageMeter(n) for n in names]
        # Capture-to-end time of each frame that made it through the last stage.
        self.latency = StageMeter("latency")
        self._stop = threading.Event()  # graceful: source stops, in-flight items drain
        self._abort = threading.Event()  # immediate: every thread exits
        self._errors: list[StageError] = []
        self._error_lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._stage_threads: list[list[threading.Thread]] = []
        self._turns: list[_Turns] = []
        self._watchdog_thread: threading.Thread | None = None
        self._watch_stop = threading.Event()
        self._opened: list[Stage] = []
        self._source_open = False
        self._started = False
        self._finished = threading.Event()
        self.started_at: float | None = None
        self.frames_read = 0

    # ---------------------------------------------------------------- lifecycle

    def open(self) -> None:
        """Open the source and every stage, in order, in the calling thread.

        Opening up front reports a bad model or an unreadable file before any thread starts.
        On failure, what was opened is closed again and the error propagates.
        """
        try:
            # A file is checked before the model loads (a bad path fails at once); a live
            # source starts capturing only once every stage is ready for its frames.
            if not self.source.live:
                self.source.open()
                self._source_open = True
            for stage in self.stages:
                stage.open()
                self._opened.append(stage)
            if self.source.live:
                self.source.open()
                self._source_open = True
        except BaseException:
            self._close_all()
            raise

    def start(self) -> Pipeline:
        if self._started:
            raise RuntimeError("pipeline already started")
        if not self._source_open:
            self.open()
        self._started = True
        self.started_at = time.monotonic()
        self._threads = [threading.Thread(target=self._run_source, name="streamer-source", daemon=True)]
        self._turns = [_Turns(max(1, stage.workers)) for stage in self.stages]
        for i, stage in enumerate(self.stages):
            threads = []
            for w in range(max(1, stage.workers)):
                suffix = f"-{w}" if stage.workers > 1 else ""
                threads.append(threading.Thread(target=self._run_stage, args=(i, w), name=f"streamer-{stage.name}{suffix}",
                                                daemon=True))
            self._stage_threads.append(threads)
            self._threads.extend(threads)
        for thread in self._threads:
            thread.start()
        if self.stage_timeout_s:
            # Not among the stage threads (``alive()`` is about those): it only reads counters,
            # and ``_finish`` ends and joins it.
            self._watchdog_thread = threading.Thread(target=self._watchdog, name="streamer-watchdog", daemon=True)
            self._watchdog_thread.start()
        return self

    def _watchdog(self) -> None:
        """Report, by name, any stage stuck on one item for longer than ``stage_timeout_s``."""
        assert self.stage_timeout_s is not None
        limit = self.stage_timeout_s
        while self.alive() and not self._watch_stop.wait(min(0.5, limit / 4)):
            now = time.monotonic()
            for meter in [self.source_meter, *self.meters]:
                since = meter.busy_since
                if since is not None and now - since > limit:
                    if not meter.stalled_reported:
                        meter.stalled_reported = True
                        meter.state = "stalled"
                        log.error("stage '%s' has made no progress for %.1f s (stage_timeout %g s)",
                                  meter.name, now - since, limit)
                elif meter.stalled_reported:
                    meter.stalled_reported = False
                    if meter.state == "stalled":
                        meter.state = "running"
                    log.warning("stage '%s' is making progress again", meter.name)

    def stop(self) -> None:
        """Stop reading; frames already read still go through every stage and sink."""
        self._stop.set()

    def abort(self) -> None:
        """Stop everything now; items in flight are discarded (sinks still close)."""
        self._stop.set()
        self._abort.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def alive(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    def join(self, timeout: float | None = None) -> bool:
        """Wait for all threads; return True when they all ended. Never blocks past ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in self._threads:
            while thread.is_alive():
                remaining = _POLL_S if deadline is None else min(_POLL_S, deadline - time.monotonic())
                if remaining <= 0:
                    return False
                thread.join(remaining)
        return True

    def run(self) -> None:
        """Start (if needed), wait for the end, and raise the first stage error if any."""
        if not self._started:
            self.start()
        try:
            if self.output is not None:
                for _ in self:
                    pass
            else:
                self.join()
        finally:
            self._finish()
        self.raise_error()

    def __iter__(self) -> Iterator[Result]:
        """Yield the last stage's results until end of stream (requires ``output=True``)."""
        if self.output is None:
            raise RuntimeError("pipeline was built without output=True")
        if not self._started:
            self.start()
        try:
            while True:
                try:
                    item = self.output.get(_POLL_S)
                except Empty:
                    if self._abort.is_set() or not self.alive():
                        if len(self.output) == 0:
                            break
                    continue
                if item is END:
                    break
                yield item
        finally:
            # Reached on normal end, on error and when the consumer stops iterating early.
            if not self._finished.is_set():
                self.abort()
            self._finish()
        self.raise_error()

    def next_result(self, timeout: float) -> Result | None:
        """The next output result, or None after ``timeout`` s; ``StopIteration`` at the end.

        For callers that must keep doing something while waiting (a window's event loop).
        """
        if self.output is None:
            raise RuntimeError("pipeline was built without output=True")
        if not self._started:
            self.start()
        try:
            item = self.output.get(timeout)
        except Empty:
            if (self._abort.is_set() or not self.alive()) and len(self.output) == 0:
                raise StopIteration from None
            return None
        if item is END:
            raise StopIteration
        return item

    def close(self, timeout_s: float = 10.0) -> None:
        """Abort if still running and release everything; safe to call more than once.

        Threads get ``timeout_s`` to end. A stage still stuck after that (a sink or model call
        that never returns) is left to its daemon thread, and what it holds that can be
        finalized safely is (``Stage.abandon``: the recording still gets its index).
        """
        if self._started:
            self.abort()
            self._finish(timeout_s)
        else:
            self._close_all()

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def raise_error(self) -> None:
        with self._error_lock:
            if self._errors:
                error = self._errors[0]
                raise error from error.cause

    @property
    def error(self) -> StageError | None:
        with self._error_lock:
            return self._errors[0] if self._errors else None

    def stats(self) -> PipelineStats:
        """Counters of the source, every stage and every queue; safe from any thread."""
        source_dropped = self.source.dropped
        rows = [self.source_meter.snapshot(dropped=int(source_dropped), queue_depth=0)]
        for stage, meter, q in zip(self.stages, self.meters, self.queues, strict=True):
            rows.append(meter.snapshot(dropped=q.dropped, queue_depth=len(q), workers=max(1, stage.workers)))
        by_source: collections.Counter[str] = collections.Counter()
        for q in self._all_queues():
            by_source.update(q.dropped_by_key)
        return PipelineStats(
            stages=tuple(rows),
            dropped=self.dropped,
            dropped_by_source=dict(by_source),
            source_description=self.source.describe(),
            source=self.source.status(),
            output_failures=sum(stage.failure_count() for stage in self.stages),
            failure_lines=tuple(line for stage in self.stages for line in stage.failure_lines()),
            incomplete_outputs=tuple(name for stage in self.stages for name in stage.incomplete_outputs()),
            notes=tuple(line for stage in self.stages for line in stage.summary_lines()),
        )

    @property
    def dropped(self) -> int:
        """Frames evicted from every queue (the source's own drops are the source's)."""
        return sum(q.dropped for q in self._all_queues())

    def _all_queues(self) -> list[BoundedQueue[Result]]:
        return [*self.queues, *([self.output] if self.output is not None else [])]

    # ---------------------------------------------------------------- internals

    def _finish(self, timeout_s: float = 10.0) -> None:
        if not self.join(timeout=timeout_s):
            stuck = [t.name for t in self._threads if t.is_alive()]
            log.warning("threads still running after %g s: %s", timeout_s, ", ".join(stuck))
            self.abort()
            if not self.join(timeout=min(2.0, timeout_s)):
                self._abandon_stuck()
        self._watch_stop.set()
        if self._watchdog_thread is not None:
            self._watchdog_thread.join(timeout=1.0)
        self._finished.set()

    def _abandon_stuck(self) -> None:
        """Give up on the stages whose threads are still running; finalize what they allow."""
        for stage, threads in zip(self.stages, self._stage_threads, strict=True):
            if not any(t.is_alive() for t in threads):
                continue
            log.error("stage '%s' did not stop; leaving its thread and finalizing what it holds", stage.name)
            try:
                stage.abandon()
            except Exception as exc:  # noqa: BLE001 - shutdown goes on
                log.warning("abandoning stage '%s' failed: %s", stage.name, exc)

    def _fail(self, stage: str, exc: BaseException) -> None:
        error = exc if isinstance(exc, StageError) else StageError(stage, exc)
        with self._error_lock:
            self._errors.append(error)
        if not isinstance(exc, StreamerError):
            log.error("stage '%s' failed", stage, exc_info=exc)
        self.abort()

    def _put(self, q: BoundedQueue[Result] | None, item: object) -> bool:
        """Put with periodic re-checks of the abort flag; False if aborted before it fit."""
        if q is None:
            return True
        while not self._abort.is_set():
            if q.put(item, self._put_timeout):  # type: ignore[arg-type]
                return True
        return False

    def _run_source(self) -> None:
        meter = self.source_meter
        meter.state = "running"
        out = self.queues[0] if self.queues else self.output
        # A live source feeding a lossless edge (cameras feeding the model on demand) takes a
        # frame only once there is room for it, so frames are shed in the source's slot.
        on_demand = self.source.live and out is not None and out.policy is Policy.BLOCK
        try:
            while not self._stop.is_set():
                if on_demand and not out.wait_for_room(_POLL_S):  # type: ignore[union-attr]
                    continue
                t0 = time.perf_counter()
                meter.begin()
                try:
                    frame = self.source.read(_POLL_S)
                finally:
                    meter.end()
                if frame is TIMEOUT:
                    continue
                if frame is None:
                    break
                meter.record((time.perf_counter() - t0) * 1000.0)
                self.frames_read += 1
                if not self._put(out, Result(frame=frame)):  # type: ignore[arg-type]
                    break
        except BaseException as exc:  # noqa: BLE001 - any failure stops the pipeline by design
            meter.record_error(str(exc))
            self._fail("source", exc)
        finally:
            meter.state = "ended"
            self._put(out, END)
            if self._source_open:
                self._source_open = False
                try:
                    self.source.close()
                except Exception as exc:  # noqa: BLE001
                    log.warning("closing the source failed: %s", exc)

    def _next_batch(self, q: BoundedQueue[Result], stage: Stage) -> tuple[list[Result], bool]:
        """Collect up to ``batch_size`` items; the flag says END was reached."""
        first = q.get(_POLL_S)
        if first is END:
            return [], True
        batch = [first]
        if stage.batch_size <= 1:
            return batch, False
        deadline = time.monotonic() + stage.batch_timeout_s
        while len(batch) < stage.batch_size:
            try:
                remaining = deadline - time.monotonic()
                nxt = q.get(remaining) if remaining > 0 else q.get_nowait()
            except Empty:
                break
            if nxt is END:
                return batch, True
            batch.append(nxt)
        return batch, False

    def _run_stage(self, index: int, worker: int = 0) -> None:
        """One thread of a stage: take a batch, process it, pass the results on in input order.

        A stage with ``workers > 1`` runs this in that many threads. They take batches one at a
        time, each with the next turn number, and leave their results in ``_Turns``; whichever
        thread completes the oldest outstanding turn passes on every result that is ready, in
        turn order, so the stream leaves the stage in the order it came in and no thread waits
        for a slower one. END is passed on (after ``flush()``) once every earlier turn has
        gone out; the last thread to exit closes the stage.
        """
        stage = self.stages[index]
        meter = self.meters[index]
        inbox = self.queues[index]
        turns = self._turns[index]
        meter.state = "running"
        try:
            while not self._abort.is_set():
                with turns.take_lock:
                    if turns.ended:
                        break
                    if not turns.room():
                        # Far enough ahead of the oldest outstanding turn: let it catch up.
                        turns.wait_for_room(self._abort)
                        continue
                    try:
                        batch, ended = self._next_batch(inbox, stage)
                    except Empty:
                        batch = None
                    else:
                        turn = turns.next_turn
                        turns.next_turn += 1
                        turns.ended = ended
                if batch is None:
                    stage.idle()
                    continue
                results: list[Result] = []
                elapsed = 0.0
                if batch:
                    t0 = time.perf_counter()
                    meter.begin(worker)
                    try:
                        results = stage.process_batch(batch) if stage.batch_size > 1 else _one(stage, batch[0])
                    finally:
                        meter.end(worker)
                    elapsed = (time.perf_counter() - t0) * 1000.0
                    meter.record(elapsed / max(len(batch), 1), items=len(batch))
                if turns.deposit(turn, (results, elapsed, ended)):
                    self._pass_on(index, turns)
        except BaseException as exc:  # noqa: BLE001 - any failure stops the pipeline by design
            meter.record_error(str(exc))
            self._fail(stage.name, exc)
        finally:
            out = self._outbox(index)
            if self._abort.is_set() and out is not None:
                out.put(END, 0)  # never blocks; lets the next stage see the end at once
            if turns.leave():
                meter.state = "ended"
                if self._take_opened(stage):
                    try:
                        stage.close()
                    except Exception as exc:  # noqa: BLE001
                        meter.record_error(str(exc))
                        self._fail(stage.name, exc)

    def _outbox(self, index: int) -> BoundedQueue[Result] | None:
        """Where stage ``index`` puts its results (None: the last stage of a pipeline without output)."""
        return self.queues[index + 1] if index + 1 < len(self.queues) else self.output

    def _pass_on(self, index: int, turns: _Turns) -> None:
        """Pass on every deposited turn that is next in order (this thread holds the right)."""
        stage = self.stages[index]
        out = self._outbox(index)
        last = index == len(self.stages) - 1
        while (payload := turns.next_ready()) is not None:
            results, elapsed, ended = payload
            done_at = time.monotonic()
            for result in results:
                result.timings_ms[stage.name] = elapsed
                if last:
                    self.latency.record((done_at - result.frame.captured_at) * 1000.0)
                if not self._put(out, result):
                    return  # aborted: every thread exits, nothing more is passed on
            if ended:
                stage.flush()
                self._put(out, END)

    def _take_opened(self, stage: Stage) -> bool:
        """Claim the right to close ``stage``: True exactly once per opened stage."""
        with self._error_lock:
            if stage in self._opened:
                self._opened.remove(stage)
                return True
            return False

    def _close_all(self) -> None:
        with self._error_lock:
            opened, self._opened = list(self._opened), []
        for stage in reversed(opened):
            try:
                stage.close()
            except Exception as exc:  # noqa: BLE001
                log.warning("closing stage '%s' failed: %s", stage.name, exc)
        if self._source_open:
            self._source_open = False
            try:
                self.source.close()
            except Exception as exc:  # noqa: BLE001
                log.warning("closing the source failed: %s", exc)


class _Turns:
    """The order bookkeeping shared by the threads of one stage.

    Results are deposited under their turn number; the thread that deposits the oldest
    outstanding turn becomes the one that passes results on (one at a time), and keeps doing
    so while the next turn is ready. Takers stay at most ``2 * workers`` turns ahead of the
    oldest outstanding one, so a stuck item cannot make the others pile up results.
    """

    def __init__(self, workers: int) -> None:
        self.take_lock = threading.Lock()  # held while a thread takes its batch and turn
        self.next_turn = 0
        self.ended = False  # some thread took END: the others stop taking
        self._window = 2 * workers
        self._cond = threading.Condition()
        self._ready: dict[int, tuple[list[Result], float, bool]] = {}
        self._current = 0  # the oldest turn not yet passed on
        self._passing = False  # some thread is passing results on
        self._running = workers

    def room(self) -> bool:
        return self.next_turn - self._current < self._window

    def wait_for_room(self, abort: threading.Event) -> None:
        with self._cond:
            if not self.room() and not abort.is_set():
                self._cond.wait(_POLL_S)

    def deposit(self, turn: int, payload: tuple[list[Result], float, bool]) -> bool:
        """Leave a turn's results; True if the caller must now pass results on."""
        with self._cond:
            self._ready[turn] = payload
            if self._passing or self._current not in self._ready:
                return False
            self._passing = True
            return True

    def next_ready(self) -> tuple[list[Result], float, bool] | None:
        """The next turn's results, or None (and the passing right given up) if not ready."""
        with self._cond:
            payload = self._ready.pop(self._current, None)
            if payload is None:
                self._passing = False
                return None
            self._current += 1
            self._cond.notify_all()
            return payload

    def leave(self) -> bool:
        """A thread exits; True for the last one."""
        with self._cond:
            self._running -= 1
            return self._running == 0


def _one(stage: Stage, item: Result) -> list[Result]:
    result = stage.process(item)
    return [] if result is None else [result]
