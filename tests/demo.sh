#!/usr/bin/env bash
# The main job on the built-in default. Until the lab fleet carries renewal, that is the read-only
# fleet report (playbooks/check.yml) over sample nodes generated as kubeadm, RKE1 and k3s write them.
set -euo pipefail
cd "$(dirname "$0")/.."

out=$PWD/tests/output/demo
py=$PWD/.venv/bin/python
rm -rf "$out"
mkdir -p "$out"

echo "demo: generating sample nodes in $out"
"$py" tests/lab/pki.py kubeadm --root "$out/alpha-cp1" --node alpha-cp1 --ip 10.0.0.11 --expires-in-days 20 >/dev/null
"$py" tests/lab/pki.py kubeadm --root "$out/bravo-cp1" --node bravo-cp1 --ip 10.0.1.11 --expired-days-ago 7 \
    --style v1.28 --key ecdsa >/dev/null
"$py" tests/lab/pki.py rke1 --root "$out/charlie-cp1" --ip 10.0.2.11 --expires-in-days 400 >/dev/null
"$py" tests/lab/pki.py k3s --root "$out/delta-server" --node delta-server --ip 10.0.3.11 --expires-in-days 100 >/dev/null

cat > "$out/inventory.ini" <<INI
[demo]
alpha-cp1 kubepki_cluster=alpha kubepki_rootfs=$out/alpha-cp1
bravo-cp1 kubepki_cluster=bravo kubepki_rootfs=$out/bravo-cp1
charlie-cp1 kubepki_cluster=charlie kubepki_rootfs=$out/charlie-cp1
delta-server kubepki_cluster=delta kubepki_rootfs=$out/delta-server

[demo:vars]
ansible_connection=local
ansible_python_interpreter=$py
kubepki_probe=false
kubepki_become=false
INI

ansible-playbook playbooks/check.yml -i "$out/inventory.ini" "$@"
