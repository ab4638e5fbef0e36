"""The overlay window: ``cv2.imshow`` driven from the main thread.

OpenCV's Qt HighGUI must be used from one thread, and its event loop only runs inside
``waitKey``; so the window is not a pipeline stage but is pumped by the job's main loop,
which calls :meth:`OverlayWindow.poll` even while no frame arrives (the window stays
responsive while a camera reconnects).

Keys: ``q``/Esc quit, space pauses and resumes the picture, ``s`` saves a PNG snapshot.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from streamer.errors import SinkError

log = logging.getLogger(__name__)

QUIT = "quit"


def check_display() -> None:
    """Raise ``SinkError`` with advice when no window can be shown here."""
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise SinkError(
            "no display available (DISPLAY is not set): use --no-window, and --record OUT.mp4 or --jsonl FILE "
            "to keep the results"
        )


class OverlayWindow:
    def __init__(self, title: str = "streamer", snapshot_dir: str | Path = "snapshots") -> None:
        self.title = title
        self.snapshot_dir = Path(snapshot_dir)
        self.paused = False
        self.shown = 0
        self.snapshots: list[Path] = []
        self._last: np.ndarray | None = None
        self._open = False

    def open(self) -> None:
        check_display()
        if "QT_QPA_FONTDIR" not in os.environ:
            # OpenCV's Qt looks for fonts inside the wheel, which ships none.
            for folder in ("/usr/share/fonts/truetype/dejavu", "/usr/share/fonts/truetype", "/usr/share/fonts"):
                if os.path.isdir(folder):
                    os.environ["QT_QPA_FONTDIR"] = folder
                    break
        try:
            cv2.namedWindow(self.title, cv2.WINDOW_NORMAL | cv2.WINDOW_KEEPRATIO | cv2.WINDOW_GUI_NORMAL)
        except cv2.error as exc:
            raise SinkError(
                f"cannot open a window: this OpenCV build has no GUI support ({str(exc).strip().splitlines()[-1][:120]}); "
                "install opencv-python instead of opencv-python-headless, or use --no-window"
            ) from None
        self._open = True

    def show(self, image: np.ndarray) -> None:
        """Display ``image`` unless paused (a paused window keeps its picture)."""
        if not self._open:
            return
        self._last = image
        if not self.paused:
            if self.shown == 0:
                cv2.resizeWindow(self.title, image.shape[1], image.shape[0])  # start at the frame's size
            cv2.imshow(self.title, image)
            self.shown += 1

    def poll(self, wait_ms: int = 1) -> str | None:
        """Run the window's event loop for ``wait_ms``; return ``QUIT`` when the user asked to."""
        if not self._open:
            return None
        key = cv2.waitKey(max(1, wait_ms)) & 0xFF
        if key in (ord("q"), ord("Q"), 27):
            return QUIT
        if key == ord(" "):
            self.paused = not self.paused
            log.warning("%s", "paused (space resumes)" if self.paused else "resumed")
        elif key in (ord("s"), ord("S")) and self._last is not None:
            self.save_snapshot(self._last)
        try:
            if cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) < 1:
                return QUIT  # closed with the window manager's close button
        except cv2.error:
            return QUIT
        return None

    def save_snapshot(self, image: np.ndarray) -> Path:
        self.snapshot_dir.mkdir(parents=True, exist_ok=True)
        path = self.snapshot_dir / f"snapshot-{time.strftime('%Y%m%d-%H%M%S')}-{len(self.snapshots):03d}.png"
        if not cv2.imwrite(str(path), image):
            log.error("could not write snapshot %s", path)
        else:
            self.snapshots.append(path)
            print(f"saved snapshot {path}", flush=True)
        return path

    def close(self) -> None:
        if self._open:
            self._open = False
            try:
                cv2.destroyWindow(self.title)
                cv2.waitKey(1)
            except cv2.error:
                pass
