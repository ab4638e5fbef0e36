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
    local project
    project="$(sha256sum < "$ROOT/pyproject.toml" | cut -c1-16)"
    # The stamp reads "<pyproject hash> <extras> <torch spec>". A venv that already has every
    # extra asked for is kept (the demo after the tests installs nothing); otherwise the
    # extras installed before are kept alongside the new ones, so the two commands never
    # take turns reinstalling.
    local had=""
    if [[ -f "$stamp" ]]; then
        local stamp_project stamp_extras stamp_torch
        read -r stamp_project stamp_extras stamp_torch < "$stamp" || true
        if [[ "$stamp_project" == "$project" && "$stamp_torch" == "$TORCH_SPEC" ]]; then
            had="$stamp_extras"
            local missing=0 e
            for e in ${extras//,/ }; do
                [[ ",$had," == *",$e,"* ]] || missing=1
            done
            if [[ "$missing" == "0" ]]; then
                return
            fi
        fi
    fi
    extras="$(printf '%s\n' ${had//,/ } ${extras//,/ } | sort -u | paste -sd, -)"
    local want="$project $extras $TORCH_SPEC"
    echo "installing streamer[$extras] into $VENV (first time: a few minutes)" >&2
    local pip=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
    "${pip[@]}" install --upgrade pip >/dev/null
    "${pip[@]}" install "$TORCH_SPEC"
    "${pip[@]}" install -e "$ROOT[$extras]"
    echo "$want" > "$stamp"
}
