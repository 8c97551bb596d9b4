"""A lab fleet of any size from 12 nodes, light enough for a 2-core machine (tests/bench/bench_fleet_scale.py).

    python tests/lab/fleet_scale.py --size 48 > /tmp/fleet.yml
    python tests/lab/lab.py up --fleet /tmp/fleet.yml --output /tmp/scale

Full clusters, where renew.yml has real work (the default fleet's scenarios, moved to 127.0.8.x and 10.213.20.x):
    fb  kubeadm v1.28, one control plane, expired 7 days ago      127.0.8.21
    fc  RKE1, expired kubelet serving cert                        127.0.8.31-32
    fd  k3s v1.23.9, expired served k3s-serving cert             10.213.20.11-12 (own network namespaces)
    fa  kubeadm HA (3 control planes + worker), expiring in 17-19 days, from 24 nodes on   127.0.8.11-14
The rest are light kubeadm clusters (nodes.py `light: true`: real PKI and manifests, one process serving the
node's endpoints), all fresh: one HA cluster (3 control planes + worker) per 16 nodes of the fleet, then
single control planes, on 127.0.9.2-254, then 127.0.10.x.
"""
from __future__ import annotations

import argparse
import sys

import yaml

MIN_SIZE = 12
HOOKS = {"populate": ["tests.lab.nodes:populate"], "start": ["tests.lab.nodes:start"]}


def _full(size: int) -> list:
    clusters = [
        {"name": "fb", "distribution": "kubeadm", "kubeadm_version": "v1.28", "scenario": "expired_7d",
         "nodes": [{"name": "fb-cp1", "role": "control-plane", "address": "127.0.8.21"}]},
        {"name": "fc", "distribution": "rke1", "scenario": "kubelet_expired",
         "nodes": [{"name": "fc-cp1", "role": "control-plane", "address": "127.0.8.31"},
                   {"name": "fc-w1", "role": "worker", "address": "127.0.8.32"}]},
        # private addresses: k3s binds 127.0.0.1:6444, which the default lab's delta holds
        {"name": "fd", "distribution": "k3s", "k3s_version": "v1.23.9+k3s1", "scenario": "serving_expired",
         "nodes": [{"name": "fd-server", "role": "server", "address": "10.213.20.11"},
                   {"name": "fd-agent", "role": "agent", "address": "10.213.20.12"}]}]
    if size >= 24:
        clusters.insert(0, {"name": "fa", "distribution": "kubeadm", "scenario": "expiring_20d", "nodes": [
            {"name": f"fa-cp{i}", "role": "control-plane", "address": f"127.0.8.1{i}"} for i in (1, 2, 3)]
            + [{"name": "fa-w1", "role": "worker", "address": "127.0.8.14"}]})
    return clusters


def _light_addresses():
    for third in range(9, 256):
        for last in range(2, 255):   # lab.py keeps .1 for a bridge
            yield f"127.0.{third}.{last}"


def spec(size: int) -> dict:
    """The fleet spec (as tests/lab/fleet.yml) of ``size`` nodes."""
    if size < MIN_SIZE:
        raise ValueError(f"size {size}: a scale fleet has at least {MIN_SIZE} nodes")
    clusters = _full(size)
    left = size - sum(len(c["nodes"]) for c in clusters)
    addresses = _light_addresses()
    for i in range(1, max(1, size // 16) + 1):
        name = f"lh{i:02d}"
        clusters.append({"name": name, "distribution": "kubeadm", "light": True, "nodes": [
            {"name": f"{name}-cp{j}", "role": "control-plane", "address": next(addresses)} for j in (1, 2, 3)]
            + [{"name": f"{name}-w1", "role": "worker", "address": next(addresses)}]})
        left -= 4
    for i in range(1, left + 1):
        clusters.append({"name": f"ls{i:03d}", "distribution": "kubeadm", "light": True,
                         "nodes": [{"name": f"ls{i:03d}-cp1", "role": "control-plane", "address": next(addresses)}]})
    return {"packages": ["etcd-server", "etcd-client"], "hooks": HOOKS, "clusters": clusters}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=48, help=f"nodes in the fleet (at least {MIN_SIZE}; default 48)")
    args = ap.parse_args()
    try:
        yaml.safe_dump(spec(args.size), sys.stdout, sort_keys=False)
    except ValueError as e:
        sys.exit(f"fleet_scale.py: {e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
