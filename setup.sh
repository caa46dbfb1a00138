#!/usr/bin/env bash
# Set everything up on a fresh machine (only Python 3.11 needed), then run a job:
#   bash setup.sh demo [vp demo options]   -> the whole pipeline on a simulated study
#   bash setup.sh test [pytest options]    -> the test suite (installs Chromium for browser tests)
#   bash setup.sh vp COMMAND ...           -> any vp command
set -euo pipefail
cd "$(dirname "$0")"

job=${1:-demo}
shift || true

python=${PYTHON:-}
if [ -z "$python" ]; then
    for candidate in python3.11 python3; do
        if command -v "$candidate" >/dev/null 2>&1; then python=$candidate; break; fi
    done
fi
[ -n "$python" ] || { echo "setup.sh: Python 3.11 is needed (python3.11 not found)" >&2; exit 1; }

# The virtual environment, reinstalled only when pyproject.toml changes.
stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -f "$stamp" ]; then
    [ -x .venv/bin/python ] || "$python" -m venv .venv
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -e '.[test,export]'
    rm -f .venv/.installed-*
    touch "$stamp"
fi
# Our modules' bytecode, written here once (and again only for a changed file): where
# PYTHONDONTWRITEBYTECODE is set, Python would otherwise compile them on every command
# (about 0.1 s of each vp command's start).
.venv/bin/python -m compileall -q -j 0 analysis valueportrait instruments collection_app >/dev/null || true

install_chromium() {
    # Browser tests drive Debian's Chromium (Playwright cannot download its own browser here).
    if [ -x /usr/bin/chromium ]; then return 0; fi
    local sudo=""
    if [ "$(id -u)" != 0 ]; then sudo=sudo; fi
    echo "setup.sh: installing Chromium from Debian for the browser tests" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null
}

case "$job" in
    demo) exec .venv/bin/vp demo "$@" ;;
    test)
        install_chromium
        exec .venv/bin/python -m pytest "$@" ;;
    vp) exec .venv/bin/vp "$@" ;;
    *) echo "setup.sh: unknown job '$job' (demo, test or vp)" >&2; exit 2 ;;
esac
