"""The overlay window for real: Xvfb, a screenshot of the root window, keys sent with xdotool."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from streamer.render import class_colour
from tests.conftest import require_tool


@pytest.fixture(scope="module")
def xvfb() -> Iterator[str]:
    require_tool("Xvfb")
    read_fd, write_fd = os.pipe()
    proc = subprocess.Popen(
        ["Xvfb", "-displayfd", str(write_fd), "-screen", "0", "1280x720x24", "-nolisten", "tcp"],
        pass_fds=(write_fd,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    os.close(write_fd)
    with os.fdopen(read_fd) as f:
        number = f.readline().strip()
    assert number, "Xvfb did not report a display"
    try:
        yield f":{number}"
    finally:
        proc.terminate()
        proc.wait(5)


def wait_for_window(display: str, name: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = subprocess.run(["xdotool", "search", "--name", name], capture_output=True, text=True,
                             env=dict(os.environ, DISPLAY=display))
        ids = out.stdout.split()
        if ids:
            return ids[0]
        time.sleep(0.2)
    raise AssertionError(f"no window named {name!r} within {timeout} s")


def screenshot(display: str, path: Path) -> np.ndarray:
    subprocess.run(["import", "-window", "root", str(path)], check=True, env=dict(os.environ, DISPLAY=display), timeout=30)
    image = cv2.imread(str(path))
    assert image is not None
    return image


def test_window_shows_boxes_and_q_quits(xvfb: str, bikes: Path, tmp_path: Path) -> None:
    require_tool("xdotool")
    require_tool("import")
    env = dict(os.environ, DISPLAY=xvfb, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamer", "watch", str(bikes), "--loop", "--status-interval", "1",
         "--jsonl", str(tmp_path / "w.jsonl")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    try:
        window = wait_for_window(xvfb, "streamer")
        # Wait until frames with detections went through (the JSONL has lines with cars).
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            jsonl = tmp_path / "w.jsonl"
            if jsonl.exists() and jsonl.read_text().count('"label":"car"') >= 5:
                break
            time.sleep(0.5)
        # Label backgrounds are filled with their class colour exactly (cars, people, bicycles are on
        # most frames); the raw frames have no pixels of exactly these colours. A busy machine can
        # lag the window's repaint behind the JSONL, so look a few times before judging.
        deadline = time.monotonic() + 15
        while True:
            time.sleep(1.0)
            shot = screenshot(xvfb, tmp_path / "root.png")
            drawn = sum(int(np.all(shot == np.array(class_colour(c), np.uint8), axis=2).sum()) for c in range(20))
            if drawn > 60 or time.monotonic() > deadline:
                break
        assert drawn > 60, f"only {drawn} label-coloured pixels on screen"
        # The picture itself is on screen: the top-left 640x272 area is not blank.
        assert shot[:272, :640].std() > 20
        subprocess.run(["xdotool", "key", "--window", window, "q"], env=env, check=True)
        out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "processed" in out and "Traceback" not in err
    assert "fps" in err and "latency p50" in err


def test_no_display_is_a_clear_error(bikes: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    proc = subprocess.run([sys.executable, "-m", "streamer", "watch", str(bikes)], capture_output=True, text=True,
                          env=env, timeout=60)
    assert proc.returncode == 2
    assert "no display available" in proc.stderr and "--no-window" in proc.stderr
    assert "Traceback" not in proc.stderr
