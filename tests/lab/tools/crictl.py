"""crictl for lab nodes: ps, pods, inspect, inspectp, stopp, rmp, logs on the supervisor's pods.

Output follows the real crictl's columns; -q prints ids only, -o json the CRI-shaped JSON of
inspect/inspectp. Global flags (-r/--runtime-endpoint, ...) are accepted and ignored.
"""
from __future__ import annotations

import datetime
import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import supervisor  # noqa: E402  pylint: disable=wrong-import-position

STATES = {"running": "Running", "exited": "Exited", "created": "Created"}


def ago(stamp: str) -> str:
    if not stamp:
        return ""
    secs = int((datetime.datetime.now(datetime.timezone.utc)
                - datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00"))).total_seconds())
    for unit, size in (("hours", 3600), ("minutes", 60)):
        if secs >= 2 * size:
            return f"{secs // size} {unit} ago"
    return "About a minute ago" if secs >= 60 else f"{max(secs, 1)} seconds ago"


def table(header: list, rows: list, minwidth: int = 20) -> str:
    """Columns as Go's tabwriter lays them out (minimum width, 3 spaces of padding)."""
    rows = [[str(c) for c in row] for row in [header, *rows]]
    widths = [max(minwidth, *(len(r[i]) + 3 for r in rows)) for i in range(len(header))]
    return "".join("".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() + "\n" for row in rows)


def containers(flags: dict) -> list:
    out = []
    for pod in supervisor.call("pods", kind="pod"):
        for c in pod["containers"]:
            if c["state"] != "running" and flags.get("a") != "true" and flags.get("all") != "true":
                continue
            if flags.get("name") and not re.search(flags["name"], c["name"]):
                continue
            if flags.get("pod") and not pod["id"].startswith(flags["pod"]):
                continue
            out.append((pod, c))
    return out


def inspect(pod: dict, c: dict) -> dict:
    return {"status": {"id": c["id"], "metadata": {"name": c["name"], "attempt": c["attempt"]},
                       "state": "CONTAINER_" + c["state"].upper(), "createdAt": c["created"],
                       "startedAt": c["started_at"], "finishedAt": c["finished_at"], "exitCode": c["exit_code"] or 0,
                       "image": {"image": c["image"]}, "logPath": c["log"],
                       "labels": {"io.kubernetes.container.name": c["name"], "io.kubernetes.pod.name": pod["name"],
                                  "io.kubernetes.pod.namespace": pod["namespace"], "io.kubernetes.pod.uid": pod["uid"]}},
            "info": {"pid": c["pid"], "sandboxID": pod["id"], "config": {"args": c["argv"]}}}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    cmd_at = next((i for i, a in enumerate(argv) if not a.startswith("-")), None)
    if cmd_at is None:
        print("usage: crictl [global flags] ps|pods|inspect|inspectp|stopp|rmp|logs ...", file=sys.stderr)
        return 1
    cmd, flags = argv[cmd_at], supervisor.parse_flags(argv[cmd_at + 1:], ("a", "q", "f", "all", "quiet", "force"))
    quiet = "true" in (flags.get("q"), flags.get("quiet"))
    try:
        if cmd == "ps":
            rows = containers(flags)
            if flags.get("o") == "json" or flags.get("output") == "json":
                print(json.dumps({"containers": [inspect(p, c)["status"] for p, c in rows]}, indent=2))
            elif quiet:
                print("".join(c["id"] + "\n" for p, c in rows), end="")
            else:
                print(table(["CONTAINER", "IMAGE", "CREATED", "STATE", "NAME", "ATTEMPT", "POD ID", "POD"],
                            [[c["id"][:13], c["image"], ago(c["created"]), STATES[c["state"]], c["name"], c["attempt"],
                              p["id"][:13], p["name"]] for p, c in rows]), end="")
        elif cmd == "pods":
            pods = [p for p in supervisor.call("pods", kind="pod")
                    if (not flags.get("name") or re.search(flags["name"], p["name"]))
                    and (not flags.get("namespace") or p["namespace"] == flags["namespace"])
                    and (not flags.get("state") or p["state"].endswith(flags["state"].upper()))]
            if quiet:
                print("".join(p["id"] + "\n" for p in pods), end="")
            else:
                print(table(["POD ID", "CREATED", "STATE", "NAME", "NAMESPACE", "ATTEMPT", "RUNTIME"],
                            [[p["id"][:13], ago(p["created"]), "Ready" if p["state"] == "SANDBOX_READY" else "NotReady",
                              p["name"], p["namespace"], 0, "(default)"] for p in pods]), end="")
        elif cmd == "inspect":
            for ref in flags["-args"]:
                c = supervisor.call("container", id=ref, kind="pod")
                print(json.dumps(inspect(c["pod"], c), indent=2))
        elif cmd == "inspectp":
            for ref in flags["-args"]:
                pod = next((p for p in supervisor.call("pods", kind="pod") if p["id"].startswith(ref)), None)
                if pod is None:
                    raise supervisor.SupervisorError(f'getting the pod sandbox status for "{ref}": not found')
                print(json.dumps({"status": {"id": pod["id"], "state": pod["state"], "createdAt": pod["created"],
                                             "metadata": {"name": pod["name"], "namespace": pod["namespace"],
                                                          "uid": pod["uid"], "attempt": 0},
                                             "labels": pod["labels"], "annotations": pod["annotations"]}}, indent=2))
        elif cmd in ("stopp", "rmp"):
            if not flags["-args"]:
                raise supervisor.SupervisorError("ID cannot be empty")
            for ref in flags["-args"]:
                pod = supervisor.call(cmd, id=ref, force="true" in (flags.get("f"), flags.get("force")))
                print(f"{'Stopped' if cmd == 'stopp' else 'Removed'} sandbox {pod['id']}")
        elif cmd == "logs":
            c = supervisor.call("container", id=flags["-args"][0], kind="pod")
            lines = Path(c["log"]).read_text(errors="replace").splitlines(keepends=True)
            tail = int(flags.get("tail", -1))
            sys.stdout.write("".join(lines[-tail:] if tail >= 0 else lines))
        else:
            print(f'crictl: no such command "{cmd}" in the lab stand-in', file=sys.stderr)
            return 1
    except (supervisor.SupervisorError, OSError, IndexError) as e:
        print(f"time=\"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%dT%H:%M:%SZ}\" level=fatal msg=\"{e}\"",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
