"""Bad lines, zones, tracking and event settings: exit code 2 and one line naming the key and
the problem, from the CLI's own entry point (in-process: the process is not the point here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamer.cli import main

MONITOR = """\
cameras:
  door:
    url: synthetic
    zones:
      porch: [[0, 0], [100, 0], [100, 100]]
events:
  track: [person]
"""

CASES = [
    ("lines:\n  gate: [[400, 0], [400, 100], [400, 200]]\n", "x.yaml:2: lines.gate must have 2 points, but got 3"),
    ("lines:\n  gate: {start: [400, 0]}\n", "lines.gate"),
    ("lines:\n  gate: {start: [1, 1], end: [1, 1]}\n", "lines.gate"),
    ("zones:\n  drive: [[0, 0], [10, 10]]\n", "x.yaml:2: zones.drive must have at least 3 points, but got 2"),
    ("zones:\n  drive: [[0, 0], [10, 10], [x, 3]]\n", "zones.drive"),
    ("track:\n  track_buffer: 0\n", "x.yaml:3: track.track_buffer must be >= 1, but got 0"),
    ("track:\n  buffer: 30\n", "x.yaml:3: unknown key 'buffer' in 'track', expecting one of"),
    ("track: maybe\n", "track must be a mapping or true/false"),
    (MONITOR + "  zones: [garden]\n", "events.zones names an unknown zone 'garden', expecting one of ['porch']"),
    ("events:\n  zones: [porch]\n", "events.zones is for monitor pipelines"),
]


@pytest.mark.parametrize(("text", "expected"), CASES, ids=[c[1][:40] for c in CASES])
def test_bad_geometry_and_tracking_settings(tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str,
                                            expected: str) -> None:
    path = tmp_path / "x.yaml"
    body = text if text.startswith("cameras") else "source: sample:bikes\n" + text
    path.write_text(body)
    code = main(["run", str(path)])
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert expected.replace("x.yaml", str(path)) in lines[0] or expected in lines[0], lines[0]
