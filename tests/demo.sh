#!/usr/bin/env bash
# The main job on the built-in lab fleet: bring the lab up (kubeadm alpha/bravo, RKE1 charlie,
# k3s delta; see tests/lab/fleet.yml), dry-run renew.yml as operators do first, then run it.
# The lab stays up afterwards to explore; `python tests/lab/lab.py down` removes it.
set -euo pipefail
cd "$(dirname "$0")/.."

.venv/bin/python tests/lab/lab.py up --recreate
inventory=tests/lab/output/inventory.ini

echo; echo "=== Dry run: ansible-playbook playbooks/renew.yml --check --diff ==="
ansible-playbook playbooks/renew.yml -i "$inventory" --check --diff "$@"

echo; echo "=== Renewal: ansible-playbook playbooks/renew.yml ==="
ansible-playbook playbooks/renew.yml -i "$inventory" "$@"

echo; echo "The lab is still up: ssh with 'python tests/lab/lab.py ssh alpha-cp1', remove it with 'python tests/lab/lab.py down'."
