"""Clips made with ffmpeg for tests and benchmarks: what IP cameras send."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from streamer.assets import sample_path


def make_camera_clip(path: Path, *, width: int = 1920, height: int = 1080, fps: int = 30, gop: int = 30,
                     loops: int = 2) -> Path:
    """H.264 like an IP camera's (one keyframe every ``gop`` frames, no B-frames, yuv420p),
    from the bigbuckbunny sample played ``loops`` times (132 frames each, about 4.4 s at 30 fps)
    and scaled to ``width`` x ``height``. Made once: an existing ``path`` is kept."""
    if path.exists():
        return path
    if shutil.which("ffmpeg") is None:
        raise FileNotFoundError("ffmpeg is needed to make the camera clip (Debian package ffmpeg)")
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name("part-" + path.name)
    subprocess.run(
        ["ffmpeg", "-loglevel", "error", "-y", "-stream_loop", str(loops - 1),
         "-i", str(sample_path("sample:bigbuckbunny")), "-vf", f"scale={width}:{height},fps={fps}",
         "-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency", "-g", str(gop), "-keyint_min", str(gop),
         "-sc_threshold", "0", "-bf", "0", "-pix_fmt", "yuv420p", "-an", str(part)],
        check=True,
    )
    part.rename(path)
    return path
