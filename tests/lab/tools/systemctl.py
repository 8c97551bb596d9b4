"""systemctl for lab nodes: the units of the node's supervisor (kubelet, k3s, k3s-agent, etcd).

start, stop, restart, try-restart, reload-or-restart, status, is-active, is-enabled, show
(Key=Value, what Ansible's systemd module reads), daemon-reload, enable, disable. Exit codes as
systemd's: is-active/status 3 when inactive, 4 (status) / 5 (start...) for an unknown unit.
"""
from __future__ import annotations

import datetime
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import supervisor  # noqa: E402  pylint: disable=wrong-import-position

DESCRIPTIONS = {"kubelet": "kubelet: The Kubernetes Node Agent", "k3s": "Lightweight Kubernetes",
                "k3s-agent": "Lightweight Kubernetes", "etcd": "etcd - highly-available key value store"}
ACTIONS = {"start": "start", "stop": "stop", "restart": "restart", "try-restart": "restart",
           "reload-or-restart": "restart", "force-reload": "restart"}


def active(unit: dict) -> str:
    if unit["state"] == "running":
        return "active"
    return "failed" if unit["want"] and unit["exit_code"] not in (None, 0) else "inactive"


def when(stamp: str) -> str:
    t = datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")) if stamp else None
    return f"{t:%a %Y-%m-%d %H:%M:%S UTC}" if t else ""


def main(argv=None) -> int:
    argv = [a for a in (sys.argv[1:] if argv is None else argv) if a not in ("--no-pager", "-l", "--full", "-q", "--quiet")]
    props = [a.split("=", 1)[1] for a in argv if a.startswith("--property=")]
    while "-p" in argv:   # repeatable, as systemctl(1) documents for -p/--property
        props.append(argv.pop(argv.index("-p") + 1))
        argv.remove("-p")
    argv = [a for a in argv if not a.startswith("-")]
    if not argv:
        print("usage: systemctl start|stop|restart|status|is-active|show|... UNIT", file=sys.stderr)
        return 1
    cmd, names = argv[0], [n.removesuffix(".service") for n in argv[1:]]
    if cmd in ("daemon-reload", "reset-failed"):
        return 0
    try:
        units = supervisor.call("units")
    except supervisor.SupervisorError as e:
        print(f"System has not been booted with systemd as init system (PID 1). Can't operate.\n{e}", file=sys.stderr)
        return 1
    missing = [n for n in names if n not in units]
    if cmd in ACTIONS:
        if missing:
            print(f"Failed to {cmd} {missing[0]}.service: Unit {missing[0]}.service not found.", file=sys.stderr)
            return 5
        for name in names:
            supervisor.call("unit", name=name, action=ACTIONS[cmd])
        return 0
    if cmd == "is-active":
        states = [active(units[n]) if n in units else "inactive" for n in names]
        print("\n".join(states))
        return 0 if all(s == "active" for s in states) else 3
    if cmd in ("is-enabled", "enable", "disable"):
        if missing:
            print(f"Failed to get unit file state for {missing[0]}.service: No such file or directory", file=sys.stderr)
            return 1
        if cmd == "is-enabled":
            print("\n".join("enabled" for n in names))
        return 0
    if cmd == "status":
        code = 0
        for name in names:
            if name not in units:
                print(f"Unit {name}.service could not be found.", file=sys.stderr)
                code = 4
                continue
            u = units[name]
            state = active(u)
            since = u["started_at"] if state == "active" else u["finished_at"]
            print(f"{'●' if state == 'active' else '○'} {name}.service - {DESCRIPTIONS.get(name, name)}\n"
                  f"     Loaded: loaded (/lib/systemd/system/{name}.service; enabled; preset: enabled)\n"
                  f"     Active: {state} ({'running' if state == 'active' else 'dead'}) since {when(since)}")
            if state == "active":
                print(f"   Main PID: {u['pid']} ({Path(u['argv'][0]).name})")
            code = code or (0 if state == "active" else 3)
        return code
    if cmd == "show":
        for name in names:
            u = units.get(name)
            state = active(u) if u else "inactive"
            values = {"Id": f"{name}.service", "Names": f"{name}.service", "LoadState": "loaded" if u else "not-found",
                      "ActiveState": state, "SubState": {"active": "running", "failed": "failed"}.get(state, "dead"),
                      "UnitFileState": "enabled" if u else "", "MainPID": u["pid"] if u else 0,
                      "ExecMainPID": u["pid"] if u else 0, "ExecMainStartTimestamp": when(u["started_at"]) if u else "",
                      "ActiveEnterTimestamp": when(u["started_at"]) if u else "",
                      "NRestarts": u["attempt"] if u else 0, "Description": DESCRIPTIONS.get(name, name),
                      "Restart": "always"}
            print("".join(f"{k}={v}\n" for k, v in values.items() if not props or k in ",".join(props).split(",")))
        return 0
    print(f'Unknown command verb {cmd}.', file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
