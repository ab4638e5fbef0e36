"""The input's sound, carried into an annotated video file.

Annotating changes the pictures, never the sound: the audio packets of the source file are
copied into the output as they are (no re-encode) when the output container takes their
codec, and transcoded to AAC otherwise. Packets are written as the video advances, so the
muxer interleaves both streams in one pass (no second pass over the file at close).

Times: the annotated video starts at the source's first frame. ``origin_s`` is that frame's
time on the source file's clock (its container time), and every audio timestamp is shifted by
it, so sound and pictures keep the offset they had in the source.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import cv2  # noqa: F401  # before av (streamer/__init__.py says why)

# isort: split

import av
import av.container
import av.stream

from streamer.errors import SinkError

log = logging.getLogger(__name__)

#: Audio codecs each output format takes as they are. MP4 is limited to those a browser
#: plays (AC-3 fits the container but Chromium refuses the whole file over it).
COPYABLE: dict[str, frozenset[str] | None] = {
    "mp4": frozenset({"aac", "mp3", "opus", "flac"}),
    "mov": frozenset({"aac", "mp3", "alac", "pcm_s16le", "pcm_s16be", "pcm_s24le", "pcm_f32le"}),
    "matroska": None,  # takes any codec FFmpeg can mux into it
}

#: How far ahead of the newest video frame audio is written. The muxer holds packets until
#: every stream has reached a time, so a bounded lead keeps that buffer small.
LEAD_S = 0.5

#: FFmpeg's usual layout for a channel count, for streams that give a count and no order
#: (PCM in AVI or Matroska reads as "2 channels"): the AAC encoder needs an ordered layout.
DEFAULT_LAYOUTS = {1: "mono", 2: "stereo", 3: "2.1", 4: "quad", 5: "5.0", 6: "5.1", 7: "6.1", 8: "7.1"}


def encoder_layout(layout: av.AudioLayout) -> str:
    """``layout``'s name, or the usual layout for its channel count when it has no order."""
    if layout.name.endswith("channels"):
        return DEFAULT_LAYOUTS.get(layout.nb_channels, layout.name)
    return layout.name


class NoAudio(SinkError):
    """The source has no audio stream to carry over (a silent clip: nothing is wrong)."""


def video_start_s(path: str | os.PathLike[str]) -> float:
    """The container time of ``path``'s first video timestamp (0 when it has none).

    The file source reports each frame's time from the video stream's start, so this is
    what turns a frame's ``pts_s`` into a time on the clock the audio is stamped with.
    """
    with av.open(str(path)) as container:
        if not container.streams.video:
            return 0.0
        stream = container.streams.video[0]
        if stream.start_time is None or stream.time_base is None:
            return 0.0
        return float(stream.start_time * stream.time_base)


class AudioCopy:
    """The first audio stream of ``source``, written into ``output`` shifted by ``origin_s``.

    Construct after the output's video stream is declared and before any packet is muxed
    (the container header lists every stream). ``pump(until_s)`` writes the packets that
    start before ``until_s`` (output time, seconds); ``finish(end_s)`` writes the rest up to
    the end of the video and closes the source. Packets that end before the first video frame
    are dropped (there is no picture for them).
    """

    def __init__(self, source: str | os.PathLike[str], output: av.container.OutputContainer, origin_s: float) -> None:
        self.source = Path(source)
        self.origin_s = origin_s
        self.packets = 0
        self.dropped = 0
        try:
            self._input = av.open(str(self.source))
        except av.FFmpegError as exc:
            raise SinkError(f"{self.source}: cannot read its audio ({exc})") from None
        if not self._input.streams.audio:
            self._input.close()
            raise NoAudio(f"{self.source}: has no audio stream")
        self._in = self._input.streams.audio[0]
        #: How many audio streams the source has; only the first is carried over.
        self.streams = len(self._input.streams.audio)
        self.codec = self._in.codec_context.codec.canonical_name  # "mp3", not the decoder's "mp3float"
        copyable = COPYABLE.get(output.format.name, frozenset())
        self.copied = copyable is None or self.codec in copyable
        self._out: av.stream.Stream
        if self.copied:
            try:
                self._out = output.add_stream_from_template(self._in)
            except ValueError:
                self.copied = False
        if not self.copied:
            ctx = self._in.codec_context
            try:
                self._out = output.add_stream("aac", rate=ctx.sample_rate, layout=encoder_layout(ctx.layout))
                self._out.codec_context.open()  # now, so that a refusal is known before any picture is written
            except (av.FFmpegError, ValueError) as exc:
                self._input.close()
                raise SinkError(f"{self.source}: cannot transcode its {self.codec} audio to AAC ({exc})") from None
        self._output = output
        self._packets: Iterator[av.Packet] = self._input.demux(self._in)
        self._next: av.Packet | None = None
        self._done = False

    def describe(self) -> str:
        what = f"audio {self.codec} copied" if self.copied else f"audio {self.codec} transcoded to aac"
        return what + (f" (the first of {self.streams} audio streams)" if self.streams > 1 else "")

    def _peek(self) -> av.Packet | None:
        while self._next is None and not self._done:
            try:
                packet = next(self._packets)
            except (StopIteration, av.FFmpegError):
                self._done = True
                break
            if packet.pts is None or packet.size == 0:
                continue  # the demuxer's empty flush packet, or one it cannot place in time
            self._next = packet
        return self._next

    def _start_s(self, packet: av.Packet) -> float:
        assert packet.pts is not None and packet.time_base is not None
        return float(packet.pts * packet.time_base) - self.origin_s

    def pump(self, until_s: float) -> None:
        """Write every packet that starts before ``until_s`` (output seconds)."""
        while (packet := self._peek()) is not None and self._start_s(packet) < until_s:
            self._next = None
            self._write(packet)

    def _write(self, packet: av.Packet) -> None:
        assert packet.pts is not None and packet.time_base is not None
        tb: Fraction = packet.time_base
        shift = round(self.origin_s / tb)
        end = packet.pts + (packet.duration or 0) - shift
        if end < 0:
            self.dropped += 1
            return
        if self.copied:
            packet.pts -= shift
            if packet.dts is not None:
                packet.dts -= shift
            packet.stream = self._out
            self._output.mux(packet)
            self.packets += 1
            return
        for frame in packet.decode():
            if frame.pts is None or frame.pts < shift:
                self.dropped += 1
                continue
            frame.pts -= shift
            for out in self._out.encode(frame):  # type: ignore[attr-defined]
                self._output.mux(out)
                self.packets += 1

    def finish(self, end_s: float) -> None:
        """Write the packets that start before the video ends, flush the encoder, close the source."""
        try:
            self.pump(end_s)
            if not self.copied:
                for out in self._out.encode(None):  # type: ignore[attr-defined]
                    self._output.mux(out)
                    self.packets += 1
        finally:
            self.close()

    def close(self) -> None:
        self._done = True
        self._input.close()
