# -*- coding: utf-8 -*-
# Copyright: kubepki.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE to the collection kubepki.fleet. Do not use this from other collections or roles.

"""Controller-side fleet report: facts -> rows -> table, Markdown, JSON document, Prometheus.

Pure Python (no Ansible imports) so the filters, the role and the unit tests share one
implementation. Input is the ``ansible_facts.kubepki`` contract described in docs/facts.md.
Errors raise ReportError with a message that says what to fix; the filters turn it into
AnsibleFilterError.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import re
from collections.abc import Mapping, Sequence

try:
    import jmespath
    from jmespath.exceptions import JMESPathError

    HAS_JMESPATH = True
    JMESPATH_IMPORT_ERROR = None
except ImportError as _exc:  # pragma: no cover - exercised only without jmespath
    jmespath = None

    class JMESPathError(Exception):
        """Stands in so except clauses stay valid; never raised without jmespath."""

    HAS_JMESPATH = False
    JMESPATH_IMPORT_ERROR = _exc

JMESPATH_MISSING_MSG = (
    "The jmespath Python library is required on the controller to apply a report query: "
    "pip install jmespath (into the Python that runs ansible-playbook), "
    "or leave the query empty to report every certificate."
)

# Certificate states of the facts contract (summary.by_state counts these).
STATES = ("ok", "warning", "expired", "not_yet_valid", "invalid", "missing")
# Hosts that were asked for but carry no kubepki facts get one row in this state.
NO_FACTS_STATE = "unknown"
NO_FACTS_ID = "host/no-facts"
NO_FACTS_MESSAGE = (
    "no kubepki facts for this host: kubepki.fleet.cert_facts did not run or failed there "
    "(unreachable, failed, or not in the play); fix access and rerun playbooks/check.yml"
)

# Keys every row carries (None when the entry has no value), so renderers and JMESPath
# queries see one shape. Entries keep every other key of the facts contract too.
ROW_BASE_KEYS = (
    "host", "cluster", "node_role", "host_distribution", "now",
    "id", "name", "source", "distribution", "component", "path", "endpoint",
    "subject", "subject_cn", "issuer", "issuer_cn", "serial",
    "not_before", "not_after", "days_left", "state", "message",
)

TABLE_COLUMNS = (
    ("HOST", "host"),
    ("CLUSTER", "cluster"),
    ("CERT", "id"),
    ("EXPIRES", "not_after"),
    ("DAYS LEFT", "days_left"),
    ("STATE", "state"),
)

_SECONDS_PER_DAY = 86400.0


class ReportError(Exception):
    """A problem with the input or the query, worded for the operator."""


# ---------------------------------------------------------------------------
# helpers


def plain(value):
    """Deep-copy into plain dict/list/str/int/float/bool/None.

    ansible-core hands filters tagged str subclasses and lazy list/dict wrappers; jmespath
    decides types by class name and json needs plain types, so normalise once.
    """
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)) or (
        isinstance(value, Sequence) and not isinstance(value, (bytes, bytearray))
    ):
        return [plain(v) for v in value]
    if isinstance(value, (datetime.datetime, datetime.date)):
        return value.isoformat()
    return str(value)


def parse_time(value):
    """ISO 8601 (``2027-11-23T10:00:00Z``) -> aware UTC datetime, or None."""
    if value in (None, ""):
        return None
    if isinstance(value, datetime.datetime):
        dt = value
    else:
        text = str(value).strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            dt = datetime.datetime.fromisoformat(text)
        except ValueError:
            return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=datetime.timezone.utc)
    return dt.astimezone(datetime.timezone.utc)


def format_time(dt):
    return dt.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _now_text(generated_at):
    if generated_at in (None, ""):
        return format_time(datetime.datetime.now(datetime.timezone.utc))
    dt = parse_time(generated_at)
    if dt is None:
        raise ReportError(
            "generated_at %r is not an ISO 8601 time; use a value like 2026-11-23T17:50:00Z"
            % (generated_at,)
        )
    return format_time(dt)


def _number(value):
    if value is None or isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _threshold(value, what):
    if value in (None, ""):
        return None
    number = _number(value)
    if number is None:
        raise ReportError("%s must be a number of days (e.g. 30), got %r" % (what, value))
    return number


def _facts_of(hostvars_entry):
    """Find the kubepki facts in one host's variables (or accept the facts themselves)."""
    if not isinstance(hostvars_entry, Mapping):
        return None
    facts = hostvars_entry.get("ansible_facts")
    if isinstance(facts, Mapping) and isinstance(facts.get("kubepki"), Mapping):
        return facts["kubepki"]
    if isinstance(hostvars_entry.get("kubepki"), Mapping):
        return hostvars_entry["kubepki"]
    if "certs" in hostvars_entry and "summary" in hostvars_entry:
        return hostvars_entry
    return None


def _cluster_of(hostvars_entry, facts, cluster_var):
    if isinstance(hostvars_entry, Mapping) and cluster_var:
        value = hostvars_entry.get(cluster_var)
        if value not in (None, ""):
            return str(value)
    if facts and facts.get("distribution") not in (None, "", "none"):
        return str(facts["distribution"])
    return "default"


def _sort_key(row):
    dt = parse_time(row.get("not_after"))
    if dt is not None:
        return (0, dt.timestamp(), str(row.get("host") or ""), str(row.get("id") or ""))
    days = _number(row.get("days_left"))
    if days is not None:
        return (1, days, str(row.get("host") or ""), str(row.get("id") or ""))
    return (2, 0.0, str(row.get("host") or ""), str(row.get("id") or ""))


def sort_rows(rows):
    """Soonest expiry first; rows without a date (invalid, missing, no facts) last."""
    return sorted(rows, key=_sort_key)


def _restate(row, warn_days):
    """Re-derive ok/warning from days_left with the report's own threshold."""
    if warn_days is None or row.get("state") not in ("ok", "warning"):
        return row
    days = _number(row.get("days_left"))
    if days is None:
        return row
    if days < warn_days:
        if row.get("state") == "ok":
            row["state"] = "warning"
            row["message"] = "expires in %.1f days, under the report threshold of %g days" % (
                days, warn_days)
    elif row.get("state") == "warning":
        row["state"] = "ok"
        row["message"] = None
    return row


def check_rows(rows, what):
    """Raise unless rows is a list of row dicts (what fleet_rows returns)."""
    if isinstance(rows, Mapping) and isinstance(rows.get("certs"), list):
        rows = rows["certs"]
    if not isinstance(rows, (list, tuple)) or isinstance(rows, str):
        raise ReportError(
            "%s expects the row list from kubepki.fleet.fleet_rows, got %s. If a report query "
            "produced this, keep whole rows: use a filter expression such as [?state!='ok'] "
            "rather than a projection." % (what, type(rows).__name__)
        )
    for index, row in enumerate(rows):
        if not isinstance(row, Mapping) or "id" not in row or "host" not in row:
            raise ReportError(
                "%s expects rows with at least 'host' and 'id' keys (from "
                "kubepki.fleet.fleet_rows); item %d is %r. Keep whole rows in the report query "
                "(e.g. [?state!='ok']), not projections like [].id." % (what, index, row)
            )
    return [plain(row) for row in rows]


# ---------------------------------------------------------------------------
# rows


def fleet_rows(data, hosts=None, cluster_var="kubepki_cluster", warn_days=None):
    """Flatten per-host kubepki facts into one row per certificate, soonest expiry first.

    ``data`` maps host name -> that host's variables (``hostvars``) or directly -> its kubepki
    facts. ``hosts`` selects and limits the hosts (default: every key of ``data``). A selected
    host without facts yields one row with state ``unknown`` so it cannot vanish from the
    report. ``warn_days`` (optional) re-derives ok/warning with the report's own threshold.
    """
    if not isinstance(data, Mapping):
        raise ReportError(
            "fleet_rows expects a mapping of host name to host variables (hostvars) or to "
            "kubepki facts, got %s" % type(data).__name__
        )
    warn = _threshold(warn_days, "warn_days")
    if hosts is None:
        host_list = [str(h) for h in data.keys()]
    elif isinstance(hosts, str):
        host_list = [hosts]
    elif isinstance(hosts, Sequence):
        host_list = [str(h) for h in hosts]
    else:
        raise ReportError("hosts must be a list of inventory host names, got %r" % (hosts,))

    rows = []
    seen = set()
    for host in host_list:
        if host in seen:
            continue
        seen.add(host)
        entry = data[host] if host in data else None
        facts = _facts_of(entry)
        cluster = _cluster_of(entry, facts, cluster_var)
        if facts is None or not isinstance(facts.get("certs"), Sequence) or isinstance(facts.get("certs"), str):
            row = dict.fromkeys(ROW_BASE_KEYS)
            row.update({
                "host": host, "cluster": cluster, "id": NO_FACTS_ID, "name": "no-facts",
                "source": "host", "state": NO_FACTS_STATE, "message": NO_FACTS_MESSAGE,
            })
            rows.append(row)
            continue
        host_fields = {
            "host": host,
            "cluster": cluster,
            "node_role": plain(facts.get("node_role")),
            "host_distribution": plain(facts.get("distribution")),
            "now": plain(facts.get("now")),
        }
        for cert in facts.get("certs") or []:
            if not isinstance(cert, Mapping):
                continue
            row = dict.fromkeys(ROW_BASE_KEYS)
            row.update(plain(cert))
            row.update(host_fields)
            rows.append(_restate(row, warn))
    return sort_rows(rows)


# ---------------------------------------------------------------------------
# queries


def compile_query(expr):
    if not HAS_JMESPATH:
        raise ReportError(JMESPATH_MISSING_MSG)
    try:
        return jmespath.compile(str(expr))
    except JMESPathError as exc:
        raise ReportError(
            "invalid JMESPath expression %r: %s. Quote strings with single quotes and numbers "
            "with backticks, e.g. \"[?state!='ok']\" or \"[?days_left < `30`]\"."
            % (str(expr), " ".join(str(exc).split()))
        )


def query(data, expr):
    """Evaluate a JMESPath expression on plain data; an empty expression returns data."""
    if expr is None or str(expr).strip() == "":
        return plain(data)
    compiled = compile_query(expr)
    try:
        return compiled.search(plain(data))
    except JMESPathError as exc:
        raise ReportError(
            "JMESPath expression %r failed on the rows: %s" % (str(expr), " ".join(str(exc).split()))
        )
    except (TypeError, ValueError) as exc:
        raise ReportError("JMESPath expression %r failed on the rows: %s" % (str(expr), exc))


def select_rows(rows, expr):
    """Apply a row-filtering query and insist the result is still a row list, re-sorted."""
    result = query(check_rows(rows, "the report query"), expr)
    if expr not in (None, "") and str(expr).strip() and not isinstance(result, list):
        raise ReportError(
            "report query %r must return a list of rows, it returned %s; use a filter "
            "expression such as \"[?state!='ok']\"" % (str(expr), type(result).__name__)
        )
    return sort_rows(check_rows(result, "report query %r" % (str(expr),)))


def below_days(rows, days):
    """Rows whose days_left is below ``days`` (expired ones included); None -> []."""
    limit = _threshold(days, "fail_under_days")
    if limit is None:
        return []
    out = []
    for row in check_rows(rows, "below_days"):
        left = _number(row.get("days_left"))
        if left is not None and left < limit:
            out.append(row)
    return sort_rows(out)


# ---------------------------------------------------------------------------
# document (JSON) and aggregate


def summarize(rows):
    rows = check_rows(rows, "summarize")
    by_state = dict.fromkeys(STATES, 0)
    hosts = []
    clusters = []
    attention = []
    no_facts = []
    for row in rows:
        state = str(row.get("state") or NO_FACTS_STATE)
        if row.get("id") != NO_FACTS_ID:
            by_state[state] = by_state.get(state, 0) + 1
        if row["host"] not in hosts:
            hosts.append(row["host"])
        if row.get("cluster") and row["cluster"] not in clusters:
            clusters.append(row["cluster"])
        if state != "ok" and row["host"] not in attention:
            attention.append(row["host"])
        if row.get("id") == NO_FACTS_ID:
            no_facts.append(row["host"])
    dated = [r for r in rows if parse_time(r.get("not_after")) is not None]
    soonest = None
    if dated:
        first = sort_rows(dated)[0]
        soonest = {k: first.get(k) for k in ("host", "cluster", "id", "not_after", "days_left", "state")}
    return {
        "total": sum(1 for r in rows if r.get("id") != NO_FACTS_ID),
        "by_state": by_state,
        "hosts": len(hosts),
        "clusters": sorted(clusters),
        "hosts_without_facts": sorted(no_facts),
        "hosts_needing_attention": sorted(attention),
        "soonest": soonest,
    }


def report_document(rows, generated_at=None, query_expr=None, warn_days=None,
                    fail_under_days=None, total_rows=None):
    """The JSON report: metadata, aggregate, the rows and the ones below fail_under_days."""
    rows = check_rows(rows, "fleet_report")
    limit = _threshold(fail_under_days, "fail_under_days")
    below = below_days(rows, limit) if limit is not None else []
    summary = summarize(rows)
    summary["below_fail_under_days"] = len(below)
    summary["hosts_below_fail_under_days"] = sorted({r["host"] for r in below})
    return {
        "kind": "kubepki.fleet/report",
        "version": 1,
        "generated_at": _now_text(generated_at),
        "query": None if query_expr in (None, "") else str(query_expr),
        "warn_days": _threshold(warn_days, "warn_days"),
        "fail_under_days": limit,
        "unfiltered_total": total_rows,
        "summary": summary,
        "below_fail_under_days": [
            {k: r.get(k) for k in ("host", "cluster", "id", "not_after", "days_left", "state", "message")}
            for r in below
        ],
        "certs": sort_rows(rows),
    }


def render_json(document):
    return json.dumps(plain(document), indent=2, sort_keys=False) + "\n"


# ---------------------------------------------------------------------------
# plain-text table


def _cell(key, value):
    if value is None or value == "":
        return "-"
    if key == "days_left":
        number = _number(value)
        return "-" if number is None else "%.1f" % number
    return str(value).replace("\n", " ")


def _state_line(rows):
    summary = summarize(rows)
    parts = ["%s %s" % (n, s) for s, n in summary["by_state"].items() if n]
    cert_hosts = len({r["host"] for r in rows if r.get("id") != NO_FACTS_ID})
    line = "%s certificate(s) on %s host(s): %s" % (
        summary["total"], cert_hosts, ", ".join(parts) if parts else "none")
    if summary["hosts_without_facts"]:
        line += "; no facts from %s" % ", ".join(summary["hosts_without_facts"])
    return line


def render_table(rows, columns=None, summary_line=True):
    """Aligned plain-text table, one string per line, soonest expiry first."""
    rows = sort_rows(check_rows(rows, "fleet_table"))
    cols = list(columns) if columns else list(TABLE_COLUMNS)
    for col in cols:
        if not (isinstance(col, (list, tuple)) and len(col) == 2):
            raise ReportError("columns must be [header, row key] pairs, got %r" % (col,))
    if not rows:
        return ["No certificates to report (the query matched nothing or no host was checked)."]
    cells = [[_cell(key, row.get(key)) for _header, key in cols] for row in rows]
    headers = [str(header) for header, _key in cols]
    widths = [max(len(headers[i]), *(len(c[i]) for c in cells)) for i in range(len(cols))]
    right = [key == "days_left" for _header, key in cols]

    def fmt(values):
        out = []
        for i, val in enumerate(values):
            out.append(val.rjust(widths[i]) if right[i] else val.ljust(widths[i]))
        return "  ".join(out).rstrip()

    lines = [fmt(headers), fmt(["=" * w for w in widths])]
    lines.extend(fmt(c) for c in cells)
    if summary_line:
        lines.append(_state_line(rows))
    return lines


# ---------------------------------------------------------------------------
# Markdown


def md_escape(value):
    if value is None or value == "":
        return ""
    text = str(value)
    text = text.replace("\\", "\\\\").replace("|", "\\|")
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\n", "<br>")
    return text


MD_COLUMNS = (
    ("Host", "host"),
    ("Cluster", "cluster"),
    ("Certificate", "id"),
    ("Source", "source"),
    ("Subject CN", "subject_cn"),
    ("Expires (UTC)", "not_after"),
    ("Days left", "days_left"),
    ("State", "state"),
    ("Message", "message"),
)


def render_markdown(data, title="Kubernetes certificate report", generated_at=None, query_expr=None):
    """Markdown report from a report document (fleet_report) or a row list."""
    if isinstance(data, Mapping) and "certs" in data:
        document = plain(data)
        rows = check_rows(document["certs"], "fleet_markdown")
    else:
        rows = check_rows(data, "fleet_markdown")
        document = report_document(rows, generated_at=generated_at, query_expr=query_expr)
    summary = document.get("summary") or summarize(rows)
    lines = ["# %s" % md_escape(title), ""]
    lines.append("Generated at %s by kubepki.fleet." % document.get("generated_at", _now_text(generated_at)))
    if document.get("query"):
        lines.append("Query: `%s`" % str(document["query"]).replace("`", "'"))
    lines.append("")
    lines.append("## Summary")
    lines.append("")
    lines.append("| State | Certificates |")
    lines.append("|---|---:|")
    for state, count in summary["by_state"].items():
        lines.append("| %s | %d |" % (md_escape(state), count))
    lines.append("| **total** | %d |" % summary["total"])
    lines.append("")
    if summary.get("soonest"):
        soon = summary["soonest"]
        lines.append("Soonest expiry: %s on %s, %s (%s days left)." % (
            md_escape(soon["id"]), md_escape(soon["host"]), md_escape(soon["not_after"]),
            _cell("days_left", soon["days_left"])))
        lines.append("")
    if summary.get("hosts_without_facts"):
        lines.append("Hosts without facts: %s." % ", ".join(md_escape(h) for h in summary["hosts_without_facts"]))
        lines.append("")
    if document.get("fail_under_days") is not None:
        below = document.get("below_fail_under_days") or []
        lines.append("Certificates under %g days: %d%s" % (
            document["fail_under_days"], len(below),
            " - run playbooks/renew.yml for %s." % ", ".join(
                md_escape(h) for h in sorted({b["host"] for b in below})) if below else "."))
        lines.append("")
    lines.append("## Certificates")
    lines.append("")
    if not rows:
        lines.append("No certificates to report.")
    else:
        lines.append("| " + " | ".join(h for h, _k in MD_COLUMNS) + " |")
        lines.append("|" + "|".join("---:" if k == "days_left" else "---" for _h, k in MD_COLUMNS) + "|")
        for row in sort_rows(rows):
            cells = []
            for _header, key in MD_COLUMNS:
                value = row.get(key)
                if key == "days_left":
                    cells.append("" if _number(value) is None else "%.1f" % _number(value))
                else:
                    cells.append(md_escape(value))
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------
# Prometheus text exposition (node_exporter textfile collector)

# Names and labels follow enix/x509-certificate-exporter (docs/metrics.md,
# pkg/registry/labels.go) where they fit; host/cluster/cert_id/source/state/... are ours.
PROM_LABELS = (
    "host", "cluster", "cert_id", "source", "component", "state",
    "filename", "filepath", "embedded_kind", "embedded_key", "endpoint",
    "serial_number", "subject_CN", "subject_O", "issuer_CN",
)

PROM_FAMILIES = (
    ("x509_cert_not_after", "Unix timestamp of the certificate's NotAfter (kubepki.fleet)."),
    ("x509_cert_not_before", "Unix timestamp of the certificate's NotBefore (kubepki.fleet)."),
    ("x509_cert_expired", "1 if the certificate is expired, 0 otherwise (kubepki.fleet)."),
    ("x509_cert_expires_in_seconds",
     "Seconds until NotAfter when the host was checked; negative once expired. "
     "Prefer x509_cert_not_after - time() (kubepki.fleet)."),
    ("x509_cert_error",
     "1 if the certificate could not be read or checked (state invalid or missing), "
     "0 otherwise (kubepki.fleet)."),
)

_LABEL_NAME_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


def prom_escape_label(value):
    """Escape a label value: backslash, double quote and line feed."""
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def prom_escape_help(value):
    return str(value).replace("\\", "\\\\").replace("\n", "\\n")


def prom_value(value):
    number = float(value)
    if math.isnan(number):
        return "NaN"
    if number in (float("inf"), float("-inf")):
        return "+Inf" if number > 0 else "-Inf"
    if number == int(number) and abs(number) < 1e15:
        return "%d" % int(number)
    return repr(round(number, 3))


def _serial_decimal(serial):
    """enix exposes serial_number in decimal; facts carry upper-case hex."""
    if serial in (None, ""):
        return ""
    try:
        return str(int(str(serial).replace(":", ""), 16))
    except ValueError:
        return ""


def prom_labels(row):
    source = row.get("source") or ""
    path = row.get("path") or ""
    labels = dict.fromkeys(PROM_LABELS, "")
    labels.update({
        "host": row.get("host") or "",
        "cluster": row.get("cluster") or "",
        "cert_id": row.get("id") or "",
        "source": source,
        "component": row.get("component") or "",
        "state": row.get("state") or "",
        "filename": os.path.basename(path) if path else "",
        "filepath": path,
        "endpoint": row.get("endpoint") or "",
        "serial_number": _serial_decimal(row.get("serial")),
        "subject_CN": row.get("subject_cn") or "",
        "subject_O": (row.get("subject_o") or [""])[0] if isinstance(row.get("subject_o"), list) else "",
        "issuer_CN": row.get("issuer_cn") or "",
    })
    if source == "kubeconfig":
        labels["embedded_kind"] = "user"
        labels["embedded_key"] = row.get("kubeconfig_user") or ""
    return labels


def _label_text(labels):
    parts = []
    for name in PROM_LABELS:
        if not _LABEL_NAME_RE.match(name):  # pragma: no cover - constant list
            raise ReportError("invalid Prometheus label name %r" % name)
        parts.append('%s="%s"' % (name, prom_escape_label(labels.get(name, ""))))
    return "{" + ",".join(parts) + "}"


def _samples(row, generated):
    """(family, value) pairs for one row; absent families are skipped for that row."""
    out = {}
    not_after = parse_time(row.get("not_after"))
    not_before = parse_time(row.get("not_before"))
    checked = parse_time(row.get("now")) or generated
    state = row.get("state")
    if not_after is not None:
        out["x509_cert_not_after"] = not_after.timestamp()
        out["x509_cert_expired"] = 1 if (state == "expired" or checked > not_after) else 0
        out["x509_cert_expires_in_seconds"] = (not_after - checked).total_seconds()
    if not_before is not None:
        out["x509_cert_not_before"] = not_before.timestamp()
    out["x509_cert_error"] = 1 if state in ("invalid", "missing") else 0
    return out


def render_prometheus(rows, generated_at=None):
    """Prometheus text exposition format 0.0.4 for node_exporter's textfile collector.

    Every sample of a family carries the same label names (node_exporter rejects mixed sets);
    one sample per certificate and family. Hosts without facts appear only in
    kubepki_host_facts (0) - they have no certificate to describe.
    """
    rows = sort_rows(check_rows(rows, "fleet_prometheus"))
    generated = parse_time(_now_text(generated_at))
    cert_rows = [r for r in rows if r.get("id") != NO_FACTS_ID]
    per_row = [(r, prom_labels(r), _samples(r, generated)) for r in cert_rows]
    lines = []
    for family, help_text in PROM_FAMILIES:
        lines.append("# HELP %s %s" % (family, prom_escape_help(help_text)))
        lines.append("# TYPE %s gauge" % family)
        for _row, labels, samples in per_row:
            if family in samples:
                lines.append("%s%s %s" % (family, _label_text(labels), prom_value(samples[family])))
    hosts = {}
    for r in rows:
        hosts.setdefault(r["host"], (r.get("cluster") or "", 0 if r.get("id") == NO_FACTS_ID else 1))
    lines.append("# HELP kubepki_host_facts 1 if kubepki.fleet.cert_facts reported on the host, 0 if the "
                 "host was asked for but has no facts (unreachable or failed).")
    lines.append("# TYPE kubepki_host_facts gauge")
    for host in sorted(hosts):
        cluster, value = hosts[host]
        lines.append('kubepki_host_facts{host="%s",cluster="%s"} %d' % (
            prom_escape_label(host), prom_escape_label(cluster), value))
    lines.append("# HELP kubepki_report_timestamp_seconds Unix time the kubepki.fleet report was generated.")
    lines.append("# TYPE kubepki_report_timestamp_seconds gauge")
    lines.append("kubepki_report_timestamp_seconds %s" % prom_value(generated.timestamp()))
    return "\n".join(lines) + "\n"
