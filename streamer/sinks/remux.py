"""A camera's recording by copy: its own H.264/H.265 packets written into an MP4 as they arrive.

No decode and no encode: a 1080p camera costs a few microseconds a packet instead of the
13 ms of CPU a frame that burning the boxes into a re-encoded copy takes (libx264
superfast), which no many-camera box can afford. The detections are in the camera's JSONL;
a copy with the boxes drawn is ``record_boxes: true``.

The copy starts at the first keyframe (a player cannot start anywhere else). Packets keep
their own spacing; a stream that restarts (a reconnect, or a replayed file starting over)
is placed on the recording's timeline by the wall clock, so the file lasts as long as the
time recorded, like the annotated live recordings. Like them it is written as MP4 fragments
under ``NAME.part`` and finished as a plain MP4 (``LIVE_MOVFLAGS``), so one killed outright
plays up to its last fragment.

Only the video is copied (a camera's audio is left out).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import cv2  # noqa: F401  # before av (streamer/__init__.py says why)

# isort: split

import av

from streamer.errors import SinkError
from streamer.sinks.video import LIVE_MOVFLAGS

log = logging.getLogger(__name__)

#: A jump forward of more than this in the stream's timestamps is a new timeline, like a jump back.
MAX_JUMP_S = 5.0


class StreamCopy:
    """Copies one camera's video packets into ``path`` (see the module's doc).

    ``write`` is called by the camera's capture thread with every packet it reads; ``close``
    (after that thread has stopped) finishes the file. A write that fails stops the copy and
    is reported once; ``error`` says why and ``close`` leaves the ``.part`` file.
    """

    def __init__(self, path: str | Path, name: str) -> None:
        self.path = Path(path)
        if self.path.suffix.lower() not in (".mp4", ".mov", ".m4v"):
            raise SinkError(f"{self.path}: a camera recording by copy is an MP4 file (.mp4, .mov or .m4v)")
        self.name = name
        self.temp_path = self.path.with_name(self.path.name + ".part")
        self.frames = 0
        self.error: str | None = None
        self.finished = False
        self._lock = threading.Lock()
        self._out: Any = None
        self._stream: Any = None
        self._source: Any = None  # the input stream the current timeline comes from
        self._wall_start = 0.0
        #: Where the current timeline starts, and what is added to its packets' timestamps
        #: (the output stream's ticks; None until its first timed packet).
        self._anchor = 0
        self._offset: int | None = None
        #: Input ticks to output ticks for the current timeline's stream, and the output's tick.
        self._scale = Fraction(1)
        self._out_tb = Fraction(1, 90000)
        self._written_here = 0
        self._last_dts: int | None = None
        self._last_in_s: float | None = None

    def write(self, packet: Any) -> None:
        with self._lock:
            if self.error is not None or self.finished:
                return
            try:
                self._write(packet)
            except (av.FFmpegError, OSError, ValueError) as exc:
                self.error = f"{self.path}: {exc}"
                log.error("%s: recording stopped (%s)", self.name, self.error)

    def _write(self, packet: Any) -> None:
        if packet.time_base is None:
            return
        tb = packet.time_base
        timed = packet.pts is not None
        in_s = float(packet.pts * tb) if timed else None
        jumped = (in_s is not None and self._last_in_s is not None
                  and not 0 <= in_s - self._last_in_s <= MAX_JUMP_S)
        if self._out is None or packet.stream is not self._source or jumped:
            if not packet.is_keyframe:
                return  # a player starts at a keyframe; so does every timeline of the copy
            if self._out is None:
                self._open(packet.stream)
            self._new_timeline(packet.stream, tb)
        scale = self._scale
        if not timed:
            # RTSP gives no timestamps before the sender's first report: one frame on.
            out_pts = out_dts = self._next_at(packet)
            self._offset = None  # the next timed packet carries on one frame after this one
        else:
            dts = packet.dts if packet.dts is not None else packet.pts
            if self._offset is None:
                self._offset = self._next_at(packet) - round(dts * scale)
            out_dts = round(dts * scale) + self._offset
            out_pts = round(packet.pts * scale) + self._offset
            self._last_in_s = in_s
        if self._last_dts is not None and out_dts <= self._last_dts:
            shift = self._last_dts + 1 - out_dts  # repeated or stepped-back clocks: one tick on
            out_dts, out_pts = out_dts + shift, out_pts + shift
        self._last_dts = out_dts
        packet.stream = self._stream
        packet.time_base = self._out_tb
        packet.pts, packet.dts = out_pts, out_dts
        self._out.mux(packet)
        self.frames += 1
        self._written_here += 1

    def _open(self, template: Any) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._out = av.open(str(self.temp_path), "w", format="mp4", options={"movflags": LIVE_MOVFLAGS})
        self._stream = self._out.add_stream_from_template(template)
        self._stream.time_base = self._out_tb
        self._wall_start = time.monotonic()
        log.info("%s: recording %s by copy (%s)", self.name, self.path, template.codec_context.name)

    def _new_timeline(self, source: Any, tb: Fraction) -> None:
        """Start a timeline at this keyframe: placed at the wall-clock time since the recording
        started (after the last packet written), its later packets at their own spacing
        (``tb``: the time base of ``source``'s packets)."""
        self._source = source
        self._scale = Fraction(tb) / self._out_tb
        at = round((time.monotonic() - self._wall_start) / self._out_tb)
        if self._last_dts is not None:
            at = max(at, self._last_dts + 1)
        self._anchor = at
        self._offset = None
        self._written_here = 0
        self._last_in_s = None

    def _next_at(self, packet: Any) -> int:
        """Where ``packet`` goes when its own timestamps do not say: the timeline's start, or
        one frame after the last packet written."""
        if self._written_here == 0 or self._last_dts is None:
            return self._anchor
        return self._last_dts + self._frame_ticks(packet)

    def _frame_ticks(self, packet: Any) -> int:
        """One frame's duration in the output's ticks: the packet's own, else the stream's rate."""
        if packet.duration:
            return max(1, round(packet.duration * self._scale))
        rate = packet.stream.average_rate or packet.stream.guessed_rate
        seconds = 1 / Fraction(rate) if rate and rate > 0 else Fraction(1, 30)
        return max(1, round(seconds / self._out_tb))

    def close(self) -> None:
        with self._lock:
            if self.finished:
                return
            self.finished = True
            if self._out is None:
                return
            try:
                self._out.close()
            except (av.FFmpegError, OSError) as exc:
                self.error = self.error or f"{self.path}: cannot finish ({exc})"
            if self.error is None:
                os.replace(self.temp_path, self.path)

    def summary(self) -> str:
        if self._out is None:
            return f"{self.name}: no recording (no keyframe arrived)"
        if self.error is not None:
            return f"{self.name}: recording not complete ({self.error}); kept {self.temp_path}"
        return f"{self.name}: recorded {self.frames} frames by copy to {self.path}"
