# Shared by scripts/demo and scripts/test: create or update .venv with the given extras.
# Usage: source scripts/_venv.sh; ensure_venv "onnx,assets"
#
# torch is pinned first (TORCH_SPEC, default torch==2.13.0): an unpinned torch pulls a
# multi-GB CUDA build onto CPU-only machines. Re-installs only when pyproject.toml, the
# extras or the pin change.

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${STREAMER_VENV:-$ROOT/.venv}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"

pick_python() {
    if [[ -n "${PYTHON:-}" ]]; then echo "$PYTHON"; return; fi
    for candidate in python3.11 python3.12 python3.10 python3; do
        if command -v "$candidate" >/dev/null 2>&1 &&
           "$candidate" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' 2>/dev/null; then
            echo "$candidate"; return
        fi
    done
    echo "error: Python >= 3.10 is required (set PYTHON=/path/to/python3)" >&2
    exit 2
}

ensure_venv() {
    local extras="$1"
    if [[ ! -x "$VENV/bin/python" ]]; then
        local py; py="$(pick_python)"
        echo "creating $VENV with $($py --version)" >&2
        "$py" -m venv "$VENV"
    fi
    local stamp="$VENV/.streamer-installed"
    local want
    want="$(cat "$ROOT/pyproject.toml" | sha256sum | cut -c1-16) $extras $TORCH_SPEC"
    if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
        return
    fi
    echo "installing streamer[$extras] into $VENV (first time: a few minutes)" >&2
    local pip=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
    "${pip[@]}" install --upgrade pip >/dev/null
    "${pip[@]}" install "$TORCH_SPEC"
    "${pip[@]}" install -e "$ROOT[$extras]"
    echo "$want" > "$stamp"
}
