#!/usr/bin/env bash
# Install the optional FFCV loader backend into a virtualenv.
#
#   bash scripts/install_ffcv.sh [VENV_DIR]      (default VENV_DIR: .venv)
#
# FFCV (https://ffcv.io) ships only as a source distribution whose C extension links against
# OpenCV and libjpeg-turbo, found with pkg-config. So the system packages come first:
#   apt-get install pkg-config libopencv-dev libturbojpeg0-dev
# This script installs them itself when it runs as root on a machine with apt-get; otherwise it
# says what to run and exits 1. Then it pip-installs ffcv (which pulls in opencv-python, numba and
# pytorch-pfn-extras) and checks that `import ffcv` works.
#
# Exit status: 0 when `import ffcv` works afterwards, 1 otherwise (the Makefile then leaves its
# stamp untouched, and tests/test_ffcv*.py fail loudly instead of skipping).
set -euo pipefail

VENV=${1:-.venv}
PIP="$VENV/bin/pip"
PY="$VENV/bin/python"
APT_PKGS=(pkg-config libopencv-dev libturbojpeg0-dev)

if [[ ! -x "$PY" ]]; then
    echo "install_ffcv: no Python at $PY; create the virtualenv first (make install)" >&2
    exit 1
fi

if "$PY" -c "import ffcv" 2>/dev/null; then
    echo "install_ffcv: ffcv already importable in $VENV"
    exit 0
fi

missing=()
for p in "${APT_PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
        echo "install_ffcv: apt-get install ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    else
        echo "install_ffcv: missing system packages: ${missing[*]}." >&2
        echo "  Install them (e.g. 'sudo apt-get install ${APT_PKGS[*]}'; conda: opencv libjpeg-turbo" >&2
        echo "  pkg-config), then run: bash scripts/install_ffcv.sh $VENV" >&2
        exit 1
    fi
fi

# ffcv's setup.py needs a C++ compiler as well; build-essential is the usual source.
if ! command -v g++ >/dev/null; then
    echo "install_ffcv: no C++ compiler (g++); install build-essential and retry" >&2
    exit 1
fi

# Build without isolation: ffcv's setup.py imports nothing beyond setuptools, and isolation would
# download a second copy of the build tools on every attempt.
"$PIP" install -q setuptools wheel
"$PIP" install -q --no-build-isolation "ffcv==1.0.2"

if ! "$PY" -c "import ffcv, ffcv.loader, ffcv.writer" ; then
    echo "install_ffcv: ffcv installed but does not import; see the error above" >&2
    exit 1
fi
echo "install_ffcv: ffcv $("$PY" -c 'import importlib.metadata as m; print(m.version("ffcv"))') ready in $VENV"
