# -*- coding: utf-8 -*-
# Copyright: kubepki.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import copy
import datetime
import json
import re

import pytest

from ansible_collections.kubepki.fleet.plugins.plugin_utils import _report
from ansible_collections.kubepki.fleet.plugins.plugin_utils._report import (
    NO_FACTS_ID,
    ReportError,
    below_days,
    fleet_rows,
    query,
    render_json,
    render_markdown,
    render_prometheus,
    render_table,
    report_document,
    select_rows,
    summarize,
)

NOW = "2026-11-23T17:50:00Z"


def _days(not_after):
    now = datetime.datetime(2026, 11, 23, 17, 50, tzinfo=datetime.timezone.utc)
    end = datetime.datetime.fromisoformat(not_after.replace("Z", "+00:00"))
    return round((end - now).total_seconds() / 86400.0, 2)


def _state(days, warn=30):
    if days < 0:
        return "expired"
    return "warning" if days < warn else "ok"


def file_cert(id_, path, not_after, component="kube-apiserver", cn="kube-apiserver",
              serial="53BF2ED29A3F0F2B", distribution="kubeadm", **extra):
    """A certificate entry shaped like docs/facts.md (file source)."""
    days = _days(not_after)
    state = extra.pop("state", _state(days))
    entry = {
        "id": id_,
        "name": id_.rsplit("/", 1)[-1],
        "source": "file",
        "distribution": distribution,
        "component": component,
        "path": path,
        "subject": "CN=%s" % cn,
        "subject_cn": cn,
        "subject_o": [],
        "issuer": "CN=kubernetes",
        "issuer_cn": "kubernetes",
        "serial": serial,
        "fingerprint_sha256": "AB:CD:EF",
        "not_before": "2025-11-23T10:00:00Z",
        "not_after": not_after,
        "days_left": days,
        "state": state,
        "message": None if state == "ok" else "expires in %.1f days" % days,
        "is_ca": False,
        "self_signed": False,
        "ca": "ca",
        "chain_length": 1,
        "sans": ["DNS:kubernetes", "IP:10.96.0.1"],
        "key_type": "RSA-2048",
        "key_usage": ["Digital Signature", "Key Encipherment"],
        "extended_key_usage": ["TLS Web Server Authentication"],
        "key_path": path.replace(".crt", ".key"),
        "key_matches": True,
        "externally_managed": False,
        "in_use": None,
        "served_on": None,
    }
    entry.update(extra)
    return entry


def host_facts(certs, distribution="kubeadm", node_role="control-plane"):
    by_state = dict.fromkeys(("ok", "warning", "expired", "not_yet_valid", "invalid", "missing"), 0)
    for c in certs:
        by_state[c["state"]] += 1
    dated = sorted((c for c in certs if c.get("not_after")), key=lambda c: c["not_after"])
    return {
        "distribution": distribution,
        "node_role": node_role,
        "rootfs": "/",
        "now": NOW,
        "warn_days": 30,
        "certs": dated + [c for c in certs if not c.get("not_after")],
        "summary": {
            "total": len(certs),
            "by_state": by_state,
            "soonest": ({"id": dated[0]["id"], "not_after": dated[0]["not_after"],
                         "days_left": dated[0]["days_left"]} if dated else None),
            "not_in_use": [],
        },
    }


@pytest.fixture
def hostvars():
    cp1 = host_facts([
        file_cert("kubeadm/apiserver", "/etc/kubernetes/pki/apiserver.crt", "2026-12-06T10:00:00Z"),
        file_cert("kubeadm/ca", "/etc/kubernetes/pki/ca.crt", "2035-11-21T10:00:00Z",
                  component="ca", cn="kubernetes", serial="0", is_ca=True, self_signed=True),
        file_cert("kubeconfig/admin.conf", "/etc/kubernetes/admin.conf", "2026-11-20T10:00:00Z",
                  component="admin", cn="kubernetes-admin", serial="0A", source="kubeconfig",
                  subject="CN=kubernetes-admin,O=kubeadm:cluster-admins",
                  subject_o=["kubeadm:cluster-admins"], kubeconfig_user="kubernetes-admin",
                  kubeconfig_server="https://10.0.0.1:6443"),
        {
            "id": "kubeadm/front-proxy-client", "name": "front-proxy-client", "source": "file",
            "distribution": "kubeadm", "component": "kube-apiserver",
            "path": "/etc/kubernetes/pki/front-proxy-client.crt",
            "state": "invalid", "message": 'not PEM: "BEGIN" | missing\nsee the file',
        },
    ])
    cp2 = host_facts([
        file_cert("kubeadm/apiserver", "/etc/kubernetes/pki/apiserver.crt", "2027-01-06T10:00:00Z"),
        {
            "id": "endpoint/127.0.0.1:6443", "name": "kube-apiserver", "source": "endpoint",
            "distribution": "kubeadm", "component": "kube-apiserver", "endpoint": "127.0.0.1:6443",
            "subject_cn": "kube-apiserver", "issuer_cn": "kubernetes", "serial": "FF",
            "not_before": "2026-01-06T10:00:00Z", "not_after": "2027-01-06T10:00:00Z",
            "days_left": _days("2027-01-06T10:00:00Z"), "state": "ok", "message": None,
            "expected": "kubeadm/apiserver",
        },
        {
            "id": "kubeadm/etcd-peer", "name": "etcd-peer", "source": "file",
            "distribution": "kubeadm", "component": "etcd",
            "path": "/etc/kubernetes/pki/etcd/peer.crt", "state": "missing",
            "message": "expected but absent",
        },
    ])
    w1 = host_facts([
        file_cert("k3s/agent/serving-kubelet", "/var/lib/rancher/k3s/agent/serving-kubelet.crt",
                  "2026-12-01T00:00:00Z", component="kubelet", cn="w1", serial="1234",
                  distribution="k3s"),
    ], distribution="k3s", node_role="agent")
    return {
        # hostvars shape: facts under ansible_facts, cluster as a host var
        "cp1": {"ansible_facts": {"kubepki": cp1}, "kubepki_cluster": "prod", "ansible_host": "10.0.0.1"},
        # set_fact shape: top-level kubepki var
        "cp2": {"kubepki": cp2, "kubepki_cluster": "prod"},
        # facts given directly, no cluster var -> distribution
        "w1": w1,
        # unreachable: no facts
        "down1": {"ansible_host": "10.0.0.9"},
    }


# ---------------------------------------------------------------------------
# rows and sorting


def test_rows_flatten_every_cert_plus_hosts_without_facts(hostvars):
    rows = fleet_rows(hostvars)
    assert len(rows) == 4 + 3 + 1 + 1
    ids = {(r["host"], r["id"]) for r in rows}
    assert ("cp1", "kubeconfig/admin.conf") in ids
    assert ("cp2", "endpoint/127.0.0.1:6443") in ids
    assert ("down1", NO_FACTS_ID) in ids
    for row in rows:
        for key in _report.ROW_BASE_KEYS:
            assert key in row


def test_rows_sorted_soonest_first_undated_last(hostvars):
    rows = fleet_rows(hostvars)
    dated = [r for r in rows if r["not_after"]]
    assert [r["not_after"] for r in dated] == sorted(r["not_after"] for r in dated)
    assert rows[0]["id"] == "kubeconfig/admin.conf" and rows[0]["state"] == "expired"
    assert rows[1]["host"] == "w1"
    first_undated = next(i for i, r in enumerate(rows) if not r["not_after"])
    assert all(not r["not_after"] for r in rows[first_undated:])
    assert {r["state"] for r in rows[first_undated:]} == {"invalid", "missing", "unknown"}


def test_rows_carry_host_fields_and_cluster(hostvars):
    rows = fleet_rows(hostvars)
    by = {(r["host"], r["id"]): r for r in rows}
    assert by[("cp1", "kubeadm/apiserver")]["cluster"] == "prod"
    assert by[("cp2", "kubeadm/apiserver")]["cluster"] == "prod"
    assert by[("w1", "k3s/agent/serving-kubelet")]["cluster"] == "k3s"
    assert by[("down1", NO_FACTS_ID)]["cluster"] == "default"
    row = by[("cp1", "kubeadm/apiserver")]
    assert row["node_role"] == "control-plane"
    assert row["host_distribution"] == "kubeadm"
    assert row["now"] == NOW
    assert row["sans"] == ["DNS:kubernetes", "IP:10.96.0.1"]


def test_rows_hosts_select_and_custom_cluster_var(hostvars):
    hostvars["w1"] = {"ansible_facts": {"kubepki": hostvars["w1"]}, "site": "edge"}
    rows = fleet_rows(hostvars, hosts=["w1", "w1", "ghost"], cluster_var="site")
    assert [(r["host"], r["cluster"]) for r in rows] == [("w1", "edge"), ("ghost", "default")]
    assert rows[1]["state"] == "unknown" and "playbooks/check.yml" in rows[1]["message"]


def test_rows_report_warn_days_restates(hostvars):
    rows = fleet_rows(hostvars, warn_days=60)
    by = {(r["host"], r["id"]): r for r in rows}
    cp2 = by[("cp2", "kubeadm/apiserver")]
    assert cp2["days_left"] < 60 and cp2["state"] == "warning"
    assert "60" in cp2["message"]
    assert by[("cp1", "kubeconfig/admin.conf")]["state"] == "expired"
    assert by[("cp1", "kubeadm/front-proxy-client")]["state"] == "invalid"
    rows = fleet_rows(hostvars, warn_days=5)
    by = {(r["host"], r["id"]): r for r in rows}
    assert by[("cp1", "kubeadm/apiserver")]["state"] == "ok"
    assert by[("cp1", "kubeadm/apiserver")]["message"] is None


def test_rows_do_not_mutate_input(hostvars):
    before = copy.deepcopy(hostvars)
    fleet_rows(hostvars, warn_days=90)
    assert hostvars == before


@pytest.mark.parametrize("bad", [["cp1"], "cp1", None, 3])
def test_rows_reject_non_mapping(bad):
    with pytest.raises(ReportError, match="mapping of host name"):
        fleet_rows(bad)


def test_rows_reject_bad_warn_days(hostvars):
    with pytest.raises(ReportError, match="warn_days must be a number"):
        fleet_rows(hostvars, warn_days="soon")


# ---------------------------------------------------------------------------
# queries


def test_query_empty_returns_all(hostvars):
    rows = fleet_rows(hostvars)
    assert query(rows, "") == rows
    assert query(rows, None) == rows
    assert select_rows(rows, "  ") == rows


def test_query_filters_not_ok(hostvars):
    rows = fleet_rows(hostvars)
    out = select_rows(rows, "[?state!='ok']")
    assert out and all(r["state"] != "ok" for r in out)
    assert len(out) == sum(1 for r in rows if r["state"] != "ok")
    assert [r["not_after"] for r in out if r["not_after"]] == sorted(
        r["not_after"] for r in out if r["not_after"])


def test_query_numeric_and_functions(hostvars):
    rows = fleet_rows(hostvars)
    out = select_rows(rows, "[?days_left < `30`]")
    assert {(r["host"], r["id"]) for r in out} == {
        ("cp1", "kubeconfig/admin.conf"), ("cp1", "kubeadm/apiserver"),
        ("w1", "k3s/agent/serving-kubelet")}
    out = select_rows(rows, "[?starts_with(id, 'kubeadm/') && cluster=='prod']")
    assert {r["id"] for r in out} == {
        "kubeadm/apiserver", "kubeadm/ca", "kubeadm/front-proxy-client", "kubeadm/etcd-peer"}
    assert query(rows, "length([?host=='cp2'])") == 3


def test_query_bad_expression_names_it(hostvars):
    rows = fleet_rows(hostvars)
    with pytest.raises(ReportError) as exc:
        query(rows, "[?state=='ok'")
    msg = str(exc.value)
    assert "[?state=='ok'" in msg and "invalid JMESPath expression" in msg


def test_select_rows_rejects_projection(hostvars):
    rows = fleet_rows(hostvars)
    with pytest.raises(ReportError, match="(?i)keep whole rows"):
        select_rows(rows, "[].id")
    with pytest.raises(ReportError, match="must return a list of rows"):
        select_rows(rows, "length(@)")


def test_query_without_jmespath(monkeypatch, hostvars):
    monkeypatch.setattr(_report, "HAS_JMESPATH", False)
    with pytest.raises(ReportError, match="pip install jmespath"):
        query(fleet_rows(hostvars), "[?state!='ok']")
    # an empty query still works without the library
    assert query([1], "") == [1]


# ---------------------------------------------------------------------------
# fail_under_days selection and the document


def test_below_days_selects_expired_and_soon(hostvars):
    rows = fleet_rows(hostvars)
    below = below_days(rows, 14)
    assert [(r["host"], r["id"]) for r in below] == [
        ("cp1", "kubeconfig/admin.conf"), ("w1", "k3s/agent/serving-kubelet"),
        ("cp1", "kubeadm/apiserver")]
    assert below_days(rows, None) == []
    assert below_days(rows, 0) == [rows[0]]
    assert [r["id"] for r in below_days(rows, "8")] == ["kubeconfig/admin.conf", "k3s/agent/serving-kubelet"]


def test_below_days_ignores_undated(hostvars):
    rows = fleet_rows(hostvars)
    assert all(r["days_left"] is not None for r in below_days(rows, 100000))


def test_document_and_summary(hostvars):
    rows = fleet_rows(hostvars)
    doc = report_document(rows, generated_at="2026-11-23T18:00:00+00:00", query_expr="",
                          warn_days=30, fail_under_days=14, total_rows=8)
    assert doc["generated_at"] == "2026-11-23T18:00:00Z"
    assert doc["query"] is None
    s = doc["summary"]
    assert s["total"] == 8
    assert s["by_state"] == {"ok": 3, "warning": 2, "expired": 1, "not_yet_valid": 0,
                             "invalid": 1, "missing": 1}
    assert sum(s["by_state"].values()) == s["total"]
    assert s["hosts"] == 4
    assert s["clusters"] == ["default", "k3s", "prod"]
    assert s["hosts_without_facts"] == ["down1"]
    assert s["hosts_needing_attention"] == ["cp1", "cp2", "down1", "w1"]
    assert s["soonest"]["id"] == "kubeconfig/admin.conf" and s["soonest"]["host"] == "cp1"
    assert s["below_fail_under_days"] == 3
    assert s["hosts_below_fail_under_days"] == ["cp1", "w1"]
    assert [b["id"] for b in doc["below_fail_under_days"]][0] == "kubeconfig/admin.conf"
    assert len(doc["certs"]) == len(rows)
    again = json.loads(render_json(doc))
    assert again == doc


def test_summary_empty():
    s = summarize([])
    assert s["total"] == 0 and s["soonest"] is None and s["hosts"] == 0


def test_document_bad_time():
    with pytest.raises(ReportError, match="ISO 8601"):
        report_document([], generated_at="yesterday")


# ---------------------------------------------------------------------------
# table


def test_table_shape(hostvars):
    rows = fleet_rows(hostvars)
    lines = render_table(rows)
    assert lines[0].split() == ["HOST", "CLUSTER", "CERT", "EXPIRES", "DAYS", "LEFT", "STATE"]
    assert set(lines[1].replace(" ", "")) == {"="}
    body = lines[2:-1]
    assert len(body) == len(rows)
    assert body[0].split()[:3] == ["cp1", "prod", "kubeconfig/admin.conf"]
    assert body[0].split()[-2:] == ["-3.3", "expired"]
    assert body[-1].split() == ["down1", "default", NO_FACTS_ID, "-", "-", "unknown"]
    # columns are aligned: STATE starts at the same offset on every line
    offset = lines[0].index("STATE")
    assert all(len(line) >= offset for line in body)
    assert lines[-1].startswith("8 certificate(s) on 3 host(s): 3 ok, 2 warning, 1 expired")
    assert "no facts from down1" in lines[-1]


def test_table_empty_and_custom_columns(hostvars):
    assert "No certificates" in render_table([])[0]
    lines = render_table(fleet_rows(hostvars), columns=[["H", "host"], ["WHY", "message"]],
                         summary_line=False)
    assert lines[0].split() == ["H", "WHY"]
    assert all("\n" not in line for line in lines)
    with pytest.raises(ReportError, match="pairs"):
        render_table(fleet_rows(hostvars), columns=["host"])


def test_renderers_reject_projection_output():
    with pytest.raises(ReportError, match="fleet_rows"):
        render_table(["kubeadm/apiserver"])
    with pytest.raises(ReportError, match="row list"):
        render_prometheus("text")


# ---------------------------------------------------------------------------
# Markdown


def test_markdown_table_shape(hostvars):
    rows = fleet_rows(hostvars)
    doc = report_document(rows, generated_at=NOW, query_expr="[?state!='ok']", fail_under_days=14)
    md = render_markdown(doc, title="Prod | certs")
    lines = md.splitlines()
    assert lines[0] == "# Prod \\| certs"
    assert "Query: `[?state!='ok']`" in md
    assert "run playbooks/renew.yml for cp1, w1." in md
    start = lines.index("## Certificates") + 2
    table = lines[start:]
    header_cells = table[0].count(" | ") + 1
    assert header_cells == len(_report.MD_COLUMNS)
    assert re.match(r"^\|(-{3}:?\|)+$", table[1])
    assert table[1].count("|") == len(_report.MD_COLUMNS) + 1
    assert len(table) == 2 + len(rows)
    for line in [table[0]] + table[2:]:
        assert line.startswith("| ") and line.endswith(" |")
        # unescaped pipes separate exactly the columns
        assert len(re.findall(r"(?<!\\)\|", line)) == len(_report.MD_COLUMNS) + 1
    invalid = next(line for line in table if "front-proxy-client" in line)
    assert '\\| missing<br>see the file' in invalid


def test_markdown_from_rows(hostvars):
    md = render_markdown(fleet_rows(hostvars), generated_at=NOW)
    assert "## Summary" in md and "| expired | 1 |" in md and md.endswith("\n")


# ---------------------------------------------------------------------------
# Prometheus exposition: parse it back

_SAMPLE_RE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
_LABEL_NAME_RE = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


def parse_labels(text):
    """Parse the inside of {...} per the text format, unescaping \\\\, \\" and \\n."""
    labels = {}
    i = 0
    while i < len(text):
        m = _LABEL_NAME_RE.match(text, i)
        assert m, "bad label name at %r" % text[i:]
        name = m.group(0)
        i = m.end()
        assert text[i:i + 2] == '="', "expected =\" after %s" % name
        i += 2
        value = []
        while True:
            ch = text[i]
            if ch == "\\":
                nxt = text[i + 1]
                assert nxt in ('\\', '"', 'n'), "bad escape \\%s" % nxt
                value.append({"\\": "\\", '"': '"', "n": "\n"}[nxt])
                i += 2
            elif ch == '"':
                i += 1
                break
            else:
                assert ch != "\n"
                value.append(ch)
                i += 1
        assert name not in labels, "duplicate label %s" % name
        labels[name] = "".join(value)
        if i < len(text):
            assert text[i] == ",", "expected , at %r" % text[i:]
            i += 1
    return labels


def parse_exposition(text):
    assert text.endswith("\n")
    families = {}
    order = []
    current = None
    for line in text.splitlines():
        assert line, "blank line"
        if line.startswith("# HELP "):
            name, _help = line[7:].split(" ", 1)
            assert name not in families, "family %s repeated" % name
            families[name] = {"help": _help, "type": None, "samples": []}
            order.append(name)
            current = name
        elif line.startswith("# TYPE "):
            name, typ = line[7:].split(" ")
            assert name == current and families[name]["type"] is None
            assert typ == "gauge"
            families[name]["type"] = typ
        else:
            assert not line.startswith("#")
            m = _SAMPLE_RE.match(line)
            assert m, "bad sample line %r" % line
            name, labels, value = m.groups()
            assert name == current, "sample of %s outside its family block" % name
            assert families[name]["type"] == "gauge"
            float(value)
            families[name]["samples"].append((parse_labels(labels or ""), float(value)))
    return order, families


def test_prometheus_exposition_parses(hostvars):
    rows = fleet_rows(hostvars)
    text = render_prometheus(rows, generated_at="2026-11-23T18:00:00Z")
    order, fam = parse_exposition(text)
    assert order == ["x509_cert_not_after", "x509_cert_not_before", "x509_cert_expired",
                     "x509_cert_expires_in_seconds", "x509_cert_error",
                     "kubepki_host_facts", "kubepki_report_timestamp_seconds"]
    certs = [r for r in rows if r["id"] != NO_FACTS_ID]
    dated = [r for r in certs if r["not_after"]]
    for name in ("x509_cert_not_after", "x509_cert_expired", "x509_cert_expires_in_seconds"):
        keys = [(lab["host"], lab["cert_id"]) for lab, _v in fam[name]["samples"]]
        assert sorted(keys) == sorted((r["host"], r["id"]) for r in dated)
        assert len(set(keys)) == len(keys)
    keys = [(lab["host"], lab["cert_id"]) for lab, _v in fam["x509_cert_error"]["samples"]]
    assert sorted(keys) == sorted((r["host"], r["id"]) for r in certs)
    for name in order[:5]:
        label_sets = {tuple(sorted(lab)) for lab, _v in fam[name]["samples"]}
        assert label_sets == {tuple(sorted(_report.PROM_LABELS))}
    assert fam["kubepki_report_timestamp_seconds"]["samples"] == [({}, 1795456800.0)]
    assert sorted(fam["kubepki_host_facts"]["samples"], key=lambda s: s[0]["host"]) == [
        ({"host": "cp1", "cluster": "prod"}, 1.0), ({"host": "cp2", "cluster": "prod"}, 1.0),
        ({"host": "down1", "cluster": "default"}, 0.0), ({"host": "w1", "cluster": "k3s"}, 1.0)]


def test_prometheus_values_and_enix_labels(hostvars):
    rows = fleet_rows(hostvars)
    _order, fam = parse_exposition(render_prometheus(rows, generated_at=NOW))

    def sample(name, host, cert_id):
        found = [(lab, v) for lab, v in fam[name]["samples"]
                 if lab["host"] == host and lab["cert_id"] == cert_id]
        assert len(found) == 1
        return found[0]

    lab, value = sample("x509_cert_not_after", "cp1", "kubeadm/apiserver")
    assert value == datetime.datetime(2026, 12, 6, 10, tzinfo=datetime.timezone.utc).timestamp()
    assert lab["serial_number"] == str(int("53BF2ED29A3F0F2B", 16))
    assert lab["filepath"] == "/etc/kubernetes/pki/apiserver.crt"
    assert lab["filename"] == "apiserver.crt"
    assert lab["subject_CN"] == "kube-apiserver" and lab["issuer_CN"] == "kubernetes"
    assert lab["embedded_kind"] == "" and lab["state"] == "warning" and lab["cluster"] == "prod"
    lab, value = sample("x509_cert_expired", "cp1", "kubeconfig/admin.conf")
    assert value == 1.0
    assert lab["embedded_kind"] == "user" and lab["embedded_key"] == "kubernetes-admin"
    assert lab["subject_O"] == "kubeadm:cluster-admins" and lab["serial_number"] == "10"
    _lab, value = sample("x509_cert_expires_in_seconds", "cp1", "kubeconfig/admin.conf")
    assert value == -(3 * 86400 + 7 * 3600 + 50 * 60)
    assert sample("x509_cert_expired", "cp1", "kubeadm/apiserver")[1] == 0.0
    lab, _v = sample("x509_cert_not_after", "cp2", "endpoint/127.0.0.1:6443")
    assert lab["endpoint"] == "127.0.0.1:6443" and lab["filepath"] == "" and lab["source"] == "endpoint"
    assert sample("x509_cert_error", "cp1", "kubeadm/front-proxy-client")[1] == 1.0
    assert sample("x509_cert_error", "cp2", "kubeadm/etcd-peer")[1] == 1.0
    assert sample("x509_cert_error", "cp1", "kubeadm/ca")[1] == 0.0
    assert sample("x509_cert_not_after", "cp1", "kubeadm/ca")[0]["serial_number"] == "0"


def test_prometheus_label_escaping():
    nasty = 'a "quoted" back\\slash\nnew line'
    facts = host_facts([file_cert("file//tmp/x.crt", '/tmp/we"ird\\dir\n/x.crt', "2027-01-01T00:00:00Z",
                                  cn=nasty, distribution="extra")])
    rows = fleet_rows({'h"1': facts})
    text = render_prometheus(rows, generated_at=NOW)
    assert "\n" + "new line" not in text  # no raw newline inside a sample
    _order, fam = parse_exposition(text)
    lab, _v = fam["x509_cert_not_after"]["samples"][0]
    assert lab["subject_CN"] == nasty
    assert lab["filepath"] == '/tmp/we"ird\\dir\n/x.crt'
    assert lab["host"] == 'h"1'
    assert '\\"quoted\\" back\\\\slash\\nnew line' in text


def test_prometheus_accepts_document_and_empty(hostvars):
    doc = report_document(fleet_rows(hostvars), generated_at=NOW)
    assert render_prometheus(doc, generated_at=NOW) == render_prometheus(doc["certs"], generated_at=NOW)
    order, fam = parse_exposition(render_prometheus([], generated_at=NOW))
    assert fam["x509_cert_not_after"]["samples"] == []
    assert len(order) == 7
