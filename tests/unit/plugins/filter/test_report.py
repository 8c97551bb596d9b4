# -*- coding: utf-8 -*-
# Copyright: kubepki.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The filter plugins: registration, documentation, ansible-core data and error wording."""

from __future__ import annotations

import importlib

import pytest
import yaml

from ansible.errors import AnsibleFilterError

FILTERS = ("fleet_rows", "cert_query", "fleet_report", "fleet_table", "fleet_markdown", "fleet_prometheus", "failure_reason",
           "agent_renewal")

try:  # ansible-core >= 2.19 hands filters tagged values
    from ansible._internal._datatag._tags import Origin
except ImportError:  # pragma: no cover - older ansible-core
    Origin = None


def _module(name):
    return importlib.import_module("ansible_collections.kubepki.fleet.plugins.filter.%s" % name)


def _filter(name):
    return _module(name).FilterModule().filters()[name]


def cert(id_, not_after, days_left, state, **extra):
    entry = {
        "id": id_, "name": id_.rsplit("/", 1)[-1], "source": "file", "distribution": "kubeadm",
        "component": "kube-apiserver", "path": "/etc/kubernetes/pki/%s.crt" % id_.rsplit("/", 1)[-1],
        "subject": "CN=kube-apiserver", "subject_cn": "kube-apiserver", "subject_o": [],
        "issuer": "CN=kubernetes", "issuer_cn": "kubernetes", "serial": "1F",
        "not_before": "2025-11-23T10:00:00Z", "not_after": not_after, "days_left": days_left,
        "state": state, "message": None if state == "ok" else "check %s" % id_,
    }
    entry.update(extra)
    return entry


def facts(certs):
    return {
        "distribution": "kubeadm", "node_role": "control-plane", "rootfs": "/",
        "now": "2026-11-23T17:50:00Z", "warn_days": 30, "certs": certs,
        "summary": {"total": len(certs), "by_state": {}, "soonest": None, "not_in_use": []},
    }


@pytest.fixture
def hostvars():
    return {
        "cp1": {"ansible_facts": {"kubepki": facts([
            cert("kubeadm/apiserver", "2026-12-06T10:00:00Z", 12.68, "warning"),
            cert("kubeadm/ca", "2035-11-21T10:00:00Z", 3284.67, "ok"),
        ])}, "kubepki_cluster": "prod"},
        "cp2": {"ansible_facts": {"kubepki": facts([
            cert("kubeadm/apiserver", "2026-11-20T10:00:00Z", -3.33, "expired"),
        ])}, "kubepki_cluster": "staging"},
    }


@pytest.mark.parametrize("name", FILTERS)
def test_one_documented_filter_per_file(name):
    mod = _module(name)
    assert list(mod.FilterModule().filters()) == [name]
    doc = yaml.safe_load(mod.DOCUMENTATION)
    assert doc["name"] == name
    assert doc["short_description"] and doc["description"] and doc["version_added"]
    assert "_input" in doc["options"]
    examples = yaml.safe_load(mod.EXAMPLES)
    assert examples and all("name" in task for task in examples)
    assert "kubepki.fleet.%s" % name in mod.EXAMPLES
    ret = yaml.safe_load(mod.RETURN)
    assert "_value" in ret and ret["_value"]["type"]


def test_pipeline_rows_query_table(hostvars):
    rows = _filter("fleet_rows")(hostvars)
    assert [(r["host"], r["id"]) for r in rows] == [
        ("cp2", "kubeadm/apiserver"), ("cp1", "kubeadm/apiserver"), ("cp1", "kubeadm/ca")]
    not_ok = _filter("cert_query")(rows, "[?state!='ok']")
    assert [r["state"] for r in not_ok] == ["expired", "warning"]
    lines = _filter("fleet_table")(not_ok)
    assert lines[2].split() == ["cp2", "staging", "kubeadm/apiserver", "2026-11-20T10:00:00Z", "-3.3", "expired"]
    assert lines[3].split() == ["cp1", "prod", "kubeadm/apiserver", "2026-12-06T10:00:00Z", "12.7", "warning"]


def test_fleet_rows_hosts_positional(hostvars):
    rows = _filter("fleet_rows")(hostvars, ["cp1"])
    assert {r["host"] for r in rows} == {"cp1"}


def test_fleet_report_query_and_threshold(hostvars):
    rows = _filter("fleet_rows")(hostvars)
    doc = _filter("fleet_report")(rows, query="[?cluster=='prod']", generated_at="2026-11-23T18:00:00Z",
                                  fail_under_days=30)
    assert doc["query"] == "[?cluster=='prod']"
    assert doc["unfiltered_total"] == 3
    assert doc["summary"]["total"] == 2
    assert [b["id"] for b in doc["below_fail_under_days"]] == ["kubeadm/apiserver"]
    assert doc["summary"]["hosts_below_fail_under_days"] == ["cp1"]
    md = _filter("fleet_markdown")(doc, title="Prod")
    assert md.startswith("# Prod\n") and "Query: `[?cluster=='prod']`" in md
    table = _filter("fleet_table")(doc)
    assert len(table) == 2 + 2 + 1


def test_fleet_report_no_threshold(hostvars):
    doc = _filter("fleet_report")(_filter("fleet_rows")(hostvars))
    assert doc["fail_under_days"] is None and doc["below_fail_under_days"] == []
    assert doc["summary"]["below_fail_under_days"] == 0


def test_prometheus_filter(hostvars):
    text = _filter("fleet_prometheus")(_filter("fleet_rows")(hostvars), generated_at="2026-11-23T18:00:00Z")
    samples = [line for line in text.splitlines() if line.startswith("x509_cert_not_after{")]
    assert len(samples) == 3
    assert 'host="cp2"' in samples[0] and 'state="expired"' in samples[0]
    assert text.count("# TYPE x509_cert_not_after gauge") == 1


def test_bad_jmespath_expression_raises_filter_error(hostvars):
    rows = _filter("fleet_rows")(hostvars)
    with pytest.raises(AnsibleFilterError) as exc:
        _filter("cert_query")(rows, "[?state=='ok'")
    msg = str(exc.value)
    assert "kubepki.fleet.cert_query" in msg
    assert "[?state=='ok'" in msg
    assert "invalid JMESPath expression" in msg
    with pytest.raises(AnsibleFilterError, match="fleet_report.*invalid JMESPath expression"):
        _filter("fleet_report")(rows, query="[?")


def test_projection_query_in_report_raises(hostvars):
    rows = _filter("fleet_rows")(hostvars)
    with pytest.raises(AnsibleFilterError, match="(?i)keep whole rows"):
        _filter("fleet_report")(rows, query="[].id")
    with pytest.raises(AnsibleFilterError, match="fleet_table expects"):
        _filter("fleet_table")(_filter("cert_query")(rows, "[].id"))


def test_bad_inputs_raise_filter_errors():
    with pytest.raises(AnsibleFilterError, match="fleet_rows.*mapping of host name"):
        _filter("fleet_rows")(["cp1"])
    with pytest.raises(AnsibleFilterError, match="fleet_markdown"):
        _filter("fleet_markdown")("not rows")
    with pytest.raises(AnsibleFilterError, match="fail_under_days must be a number"):
        _filter("fleet_report")([], fail_under_days="two weeks")
    with pytest.raises(AnsibleFilterError, match="fleet_prometheus.*ISO 8601"):
        _filter("fleet_prometheus")([], generated_at="now-ish")


@pytest.mark.skipif(Origin is None, reason="needs ansible-core data tagging (2.19+)")
def test_tagged_ansible_values_work_with_jmespath_functions(hostvars):
    tag = Origin(path="/inventory/host_vars/cp1.yml")
    tagged = {tag.tag(h): {"ansible_facts": {"kubepki": dict(v["ansible_facts"]["kubepki"], certs=tag.tag([
        {tag.tag(k): (tag.tag(val) if isinstance(val, str) else val) for k, val in c.items()}
        for c in v["ansible_facts"]["kubepki"]["certs"]]))}, "kubepki_cluster": tag.tag(v["kubepki_cluster"])}
        for h, v in hostvars.items()}
    rows = _filter("fleet_rows")(tagged)
    assert all(type(r["id"]) is str for r in rows)  # pylint: disable=unidiomatic-typecheck  # str subclasses are what 2.19 tags
    out = _filter("cert_query")(tag.tag(rows), "[?starts_with(id, 'kubeadm/') && contains(cluster, 'prod')].id")
    assert out == ["kubeadm/apiserver", "kubeadm/ca"]
