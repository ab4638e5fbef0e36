"""Stopping with SIGINT/SIGTERM keeps everything already processed, playable and consistent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import pytest


def count_frames(path: Path) -> int:
    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened(), f"{path} is not playable"
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return n


def start(args: list[str], tmp_path: Path) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "streamer", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, cwd=tmp_path)


def wait_for_lines(path: Path, n: int, proc: subprocess.Popen[str], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().count("\n") >= n:
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    raise AssertionError(f"{path} never reached {n} lines")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_annotate_stop_keeps_a_consistent_playable_result(sig: signal.Signals, tmp_path: Path) -> None:
    video, jsonl = tmp_path / "o.mp4", tmp_path / "o.jsonl"
    proc = start(["annotate", "sample:bigbuckbunny", "-o", str(video), "--jsonl", str(jsonl)], tmp_path)
    wait_for_lines(jsonl, 10, proc)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 128 + sig.value, err
    lines = jsonl.read_text().splitlines()
    assert 10 <= len(lines) < 132
    assert count_frames(video) == len(lines)
    assert f"stopped after {len(lines)} of 132 frames" in out
    assert f"{sig.name} received" in err and "Traceback" not in err


def test_second_interrupt_exits_at_once(tmp_path: Path) -> None:
    jsonl = tmp_path / "o.jsonl"
    proc = start(["annotate", "sample:bigbuckbunny", "-o", str(tmp_path / "o.mp4"), "--jsonl", str(jsonl)], tmp_path)
    wait_for_lines(jsonl, 5, proc)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.05)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=10)
    assert time.monotonic() - t0 < 2.0
    assert proc.returncode == 130


def test_watch_record_stop_keeps_video_and_jsonl_consistent(tmp_path: Path) -> None:
    video, jsonl = tmp_path / "rec.mp4", tmp_path / "rec.jsonl"
    proc = start(["watch", "synthetic:320x240@15", "--no-window", "--record", str(video), "--jsonl", str(jsonl),
                  "--status-interval", "1"], tmp_path)
    wait_for_lines(jsonl, 20, proc)
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    lines = jsonl.read_text().splitlines()
    assert len(lines) >= 20
    assert count_frames(video) == len(lines)
    assert f"stopped after {len(lines)} frames" in out
    assert "latency p50" in err and "Traceback" not in err


@pytest.mark.parametrize("after_s", [0.25, 0.4, 0.5])
def test_ctrl_c_while_starting_stops_without_a_traceback(after_s: float, tmp_path: Path) -> None:
    """Ctrl+C before the job has started (the libraries loading, the model opening) is a stop
    too: exit 130 and one line, never a KeyboardInterrupt traceback. (Within the first few
    tens of milliseconds, while Python itself starts, its own traceback is out of reach.)"""
    proc = start(["annotate", "sample:bikes", "-o", str(tmp_path / "o.mp4"), "--no-progress"], tmp_path)
    time.sleep(after_s)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("streamer:"), err


def run_models_command(tmp_path: Path, body: str) -> subprocess.CompletedProcess[str]:
    """``streamer models`` in a fresh process, its listing replaced by ``body`` (a fault to inject)."""
    code = ("import streamer.models\n"
            "def listing():\n" + "".join(f"    {line}\n" for line in body.splitlines()) +
            "streamer.models.describe_builtin_models = listing\n"
            "from streamer.cli import main\n"
            "raise SystemExit(main(['models']))\n")
    return subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, cwd=tmp_path,
                          timeout=60)


def test_ctrl_c_during_an_import_is_delivered_once_the_import_is_done(tmp_path: Path) -> None:
    """Raised inside an extension module's set-up, a KeyboardInterrupt would become an
    ImportError, be swallowed by a library's ``except ImportError``, or leave CPython set to
    kill itself at exit. So it waits for the import to finish, then stops the command."""
    (tmp_path / "slow_to_import.py").write_text(
        "import os, signal, time\n"
        "os.kill(os.getpid(), signal.SIGINT)\n"
        "deadline = time.monotonic() + 0.3\n"
        "while time.monotonic() < deadline:\n"
        "    pass\n"
        "finished = True\n"
    )
    stopped_after(tmp_path, "import sys; sys.path.insert(0, '.')\n"
                            "import slow_to_import\n"
                            "print(f'imported {slow_to_import.finished}', flush=True)\n", "imported True")


def stopped_after(tmp_path: Path, body: str, printed: str) -> None:
    """``streamer models`` running ``body`` (which interrupts itself), then 5 s of sleep: it
    must print ``printed``, then stop with exit 130 and one line, never reaching its end."""
    proc = run_models_command(tmp_path, body + "import time; time.sleep(5)\nprint('not stopped')\nreturn []")
    assert proc.stdout.splitlines() == [printed], (proc.stdout, proc.stderr)
    assert proc.returncode == 130, proc.stderr
    assert proc.stderr.strip().splitlines() == ["streamer: interrupted"], proc.stderr


def test_ctrl_c_in_a_callback_from_c_is_delivered_again(tmp_path: Path) -> None:
    """A KeyboardInterrupt raised in a Python function that C code called (a ctypes callback,
    as Numba's compiler uses when it loads its cache) is printed and dropped by ctypes: the
    command would run on. It is delivered again once the callback has returned."""
    stopped_after(tmp_path, "import ctypes, ctypes.util, os, signal, time\n"
                            "libc = ctypes.CDLL(ctypes.util.find_library('c'))\n"
                            "CMP = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_int), "
                            "ctypes.POINTER(ctypes.c_int))\n"
                            "def compare(a, b):\n"
                            "    os.kill(os.getpid(), signal.SIGINT)\n"
                            "    deadline = time.monotonic() + 0.05\n"
                            "    while time.monotonic() < deadline:\n"
                            "        pass\n"
                            "    return a[0] - b[0]\n"
                            "values = (ctypes.c_int * 2)(2, 1)\n"
                            "libc.qsort(values, 2, ctypes.sizeof(ctypes.c_int), CMP(compare))\n"
                            "print(f'sorted {list(values)}', flush=True)\n", "sorted [1, 2]")


def test_an_import_error_a_ctrl_c_caused_is_an_interrupt(tmp_path: Path) -> None:
    """pybind11 turns a KeyboardInterrupt in a module's set-up into ImportError from it."""
    proc = run_models_command(tmp_path, "raise ImportError('initialization failed') from KeyboardInterrupt()")
    assert proc.returncode == 130, proc.stderr
    assert proc.stderr.strip().splitlines() == ["streamer: interrupted"], proc.stderr


def test_a_recording_killed_outright_plays_up_to_its_last_seconds(tmp_path: Path) -> None:
    """SIGKILL (an OOM kill, a power cut) gives no chance to finish the file: a live recording
    is fragmented MP4, so what reached the disk plays, all but the last fragment (2 s)."""
    video, jsonl = tmp_path / "rec.mp4", tmp_path / "rec.jsonl"
    proc = start(["watch", "synthetic:320x240@15", "--no-window", "--record", str(video), "--jsonl", str(jsonl)],
                 tmp_path)
    wait_for_lines(jsonl, 75, proc)  # 5 s at 15 fps
    proc.kill()
    proc.communicate(timeout=30)
    part = tmp_path / "rec.mp4.part"
    assert not video.exists() and part.exists()
    lines = len(jsonl.read_text().splitlines())
    frames = count_frames(part)
    assert lines - 2.5 * 15 <= frames <= lines, (frames, lines)
