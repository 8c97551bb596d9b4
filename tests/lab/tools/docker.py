"""docker for RKE1 lab nodes: ps, restart, stop, start, exec, inspect, logs on the supervisor's containers.

RKE1 runs its components as docker containers named kubelet, kube-apiserver, etcd, ...; here they
are processes of the node's supervisor. `docker exec NAME CMD` runs CMD on the node (the lab's
containers share the node's files). --format understands {{.Field.Sub}}, {{json .Field}} and plain text.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import supervisor  # noqa: E402  pylint: disable=wrong-import-position
from crictl import ago, table  # noqa: E402  pylint: disable=wrong-import-position


def inspect(c: dict) -> dict:
    running = c["state"] == "running"
    return {
        "Id": c["id"], "Created": c["created"], "Path": c["argv"][0], "Args": c["argv"][1:], "Name": "/" + c["name"],
        "State": {"Status": "running" if running else "exited", "Running": running, "Restarting": False,
                  "Pid": c["pid"], "ExitCode": c["exit_code"] or 0, "StartedAt": c["started_at"],
                  "FinishedAt": c["finished_at"] or "0001-01-01T00:00:00Z"},
        "RestartCount": c["attempt"], "LogPath": c["log"],
        "HostConfig": {"NetworkMode": "host", "RestartPolicy": {"Name": "always", "MaximumRetryCount": 0}},
        "Config": {"Image": c["image"], "Cmd": c["argv"], "Labels": c["pod"]["labels"]},
    }


def fmt(template: str, obj: dict) -> str:
    def field(path: str):
        value = obj
        for part in path.strip(".").split("."):
            value = value.get(part, "") if part and isinstance(value, dict) else value
        return value

    def sub(m):
        func, path = m.group(1), m.group(2)
        value = field(path)
        if func == "json":
            return json.dumps(value)
        if isinstance(value, bool):
            return str(value).lower()
        return " ".join(map(str, value)).join("[]") if isinstance(value, list) else str(value)
    return re.sub(r"\{\{\s*(?:(json)\s+)?(\.[\w.]*)\s*\}\}", sub, template.replace("\\t", "\t"))


def ps_row(c: dict) -> dict:
    status = f"Up {ago(c['started_at']).removesuffix(' ago')}" if c["state"] == "running" else \
        f"Exited ({c['exit_code']}) {ago(c['finished_at'])}"
    return {"ID": c["id"][:12], "Image": c["image"], "Command": f'"{" ".join(c["argv"])[:20]}…"',
            "CreatedAt": c["created"], "RunningFor": ago(c["created"]), "Status": status,
            "State": "running" if c["state"] == "running" else "exited", "Names": c["name"], "Ports": ""}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        print("usage: docker ps|restart|stop|start|exec|inspect|logs ...", file=sys.stderr)
        return 1
    cmd, rest = argv[0], argv[1:]
    try:
        if cmd == "exec":
            # docker exec [-i] [-t] [-u USER] NAME CMD...: options end at the container name
            while rest and rest[0].startswith("-"):
                rest = rest[2:] if rest[0] in ("-u", "--user", "-e", "--env", "-w", "--workdir") else rest[1:]
            c = supervisor.call("container", id=rest[0], kind="docker")
            if c["state"] != "running":
                raise supervisor.SupervisorError(f"Error response from daemon: Container {c['id']} is not running")
            return subprocess.run(rest[1:], check=False).returncode
        flags = supervisor.parse_flags(rest, ("a", "q", "all", "quiet"))
        if cmd == "ps":
            show_all = "true" in (flags.get("a"), flags.get("all"))
            wanted = [f.split("=", 1)[1] for f in flags["-multi"].get("filter", []) + flags["-multi"].get("f", [])
                      if f.startswith("name=")]
            rows = []
            for pod in supervisor.call("pods", kind="docker"):
                c = {**pod["containers"][0], "pod": pod}
                if (show_all or c["state"] == "running") and all(re.search(w, c["name"]) for w in wanted):
                    rows.append(ps_row(c))
            if "true" in (flags.get("q"), flags.get("quiet")):
                print("".join(r["ID"] + "\n" for r in rows), end="")
            elif flags.get("format"):
                print("".join(fmt(flags["format"], r) + "\n" for r in rows), end="")
            else:
                keys = ["ID", "Image", "Command", "RunningFor", "Status", "Ports", "Names"]
                print(table(["CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES"],
                            [[x[k] for k in keys] for x in rows], 10), end="")
        elif cmd in ("restart", "stop", "start"):
            for name in flags["-args"]:
                supervisor.call("docker", id=name, action=cmd)
                print(name)
        elif cmd == "inspect":
            found = [inspect(supervisor.call("container", id=name, kind="docker")) for name in flags["-args"]]
            if flags.get("format") or flags.get("f"):
                print("".join(fmt(flags.get("format") or flags["f"], c) + "\n" for c in found), end="")
            else:
                print(json.dumps(found, indent=4))
        elif cmd == "logs":
            c = supervisor.call("container", id=flags["-args"][0], kind="docker")
            lines = Path(c["log"]).read_text(errors="replace").splitlines(keepends=True)
            tail = flags.get("tail", flags.get("n", "all"))
            sys.stdout.write("".join(lines if tail == "all" else lines[-int(tail):]))
        else:
            print(f"docker: '{cmd}' is not a docker command in the lab stand-in.", file=sys.stderr)
            return 1
    except (supervisor.SupervisorError, OSError, IndexError) as e:
        print(e if str(e).startswith("Error") else f"Error response from daemon: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
