# -*- coding: utf-8 -*-
# Copyright: kubepki.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE to the collection kubepki.fleet. Do not use this from other collections or roles.

"""Where each distribution keeps its certificates, and which endpoints should serve which.

Facts come from the kubeadm, k3s, RKE and RKE2 sources (see the project's research notes).
Every path here is a node path; ``NodeFS`` maps it under ``rootfs``.
"""

from __future__ import annotations

import errno
import glob
import os
import stat

from ansible.module_utils.common import yaml as common_yaml  # yaml_load exists only with PyYAML

from ansible_collections.kubepki.fleet.plugins.module_utils._x509 import CertError

DISTRIBUTIONS = ("kubeadm", "rke1", "k3s", "rke2")

KUBEADM_PKI = "/etc/kubernetes/pki"
KUBEADM_MANIFESTS = "/etc/kubernetes/manifests"
KUBELET_PKI = "/var/lib/kubelet/pki"
RKE1_SSL = "/etc/kubernetes/ssl"

# kubeadm handle, file under pki/ without .crt, component that uses it, CA handle that signs it.
KUBEADM_CERTS = (
    ("ca", "ca", "ca", "ca"),
    ("front-proxy-ca", "front-proxy-ca", "ca", "front-proxy-ca"),
    ("apiserver", "apiserver", "kube-apiserver", "ca"),
    ("apiserver-kubelet-client", "apiserver-kubelet-client", "kube-apiserver", "ca"),
    ("front-proxy-client", "front-proxy-client", "kube-apiserver", "front-proxy-ca"),
)
KUBEADM_ETCD_CERTS = (
    ("etcd-ca", "etcd/ca", "ca", "etcd-ca"),
    ("apiserver-etcd-client", "apiserver-etcd-client", "kube-apiserver", "etcd-ca"),
    ("etcd-server", "etcd/server", "etcd", "etcd-ca"),
    ("etcd-peer", "etcd/peer", "etcd", "etcd-ca"),
    ("etcd-healthcheck-client", "etcd/healthcheck-client", "etcd", "etcd-ca"),
)
KUBEADM_KUBECONFIGS = (
    ("admin.conf", "admin"),
    ("super-admin.conf", "admin"),
    ("controller-manager.conf", "kube-controller-manager"),
    ("scheduler.conf", "kube-scheduler"),
)

# First matching prefix of a file's base name gives the component (RKE1 and k3s/RKE2 names).
_COMPONENT_PREFIXES = (
    ("kube-apiserver-requestheader-ca", "ca"),
    ("kube-ca", "ca"),
    ("kube-apiserver", "kube-apiserver"),
    ("kube-service-account-token", "kube-apiserver"),
    ("kube-controller-manager", "kube-controller-manager"),
    ("kube-scheduler", "kube-scheduler"),
    ("kube-etcd", "etcd"),
    ("kube-node", "kubelet"),
    ("kube-kubelet", "kubelet"),
    ("kube-proxy", "kube-proxy"),
    ("client-admin", "admin"),
    ("client-controller", "kube-controller-manager"),
    ("client-scheduler", "kube-scheduler"),
    ("client-kube-apiserver", "kube-apiserver"),
    ("serving-kube-apiserver", "kube-apiserver"),
    ("client-auth-proxy", "kube-apiserver"),
    ("client-kube-proxy", "kube-proxy"),
    ("client-kubelet", "kubelet"),
    ("serving-kubelet", "kubelet"),
    ("client-k3s-cloud-controller", "cloud-controller-manager"),
    ("client-rke2-cloud-controller", "cloud-controller-manager"),
    ("client-cloud-controller", "cloud-controller-manager"),
)


# Linux gives up after 40 links in one lookup (MAXSYMLINKS); so do we.
_MAX_LINKS = 40
# Certificates, keys and kubeconfigs are a few KiB (a kubeconfig with dozens of embedded CAs stays under
# 200 KiB); anything bigger is not one of them and is not read whole.
MAX_FILE_BYTES = 1024 * 1024
_FILE_KINDS = ((stat.S_ISDIR, "directory"), (stat.S_ISFIFO, "FIFO"), (stat.S_ISSOCK, "socket"),
               (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"))


class MissingFile(CertError):
    """The file is not there: state ``missing`` rather than ``invalid``."""


class NodeFS:
    """Node paths read under a ``rootfs`` prefix, like kubeadm's ``--rootfs``."""

    def __init__(self, rootfs="/"):
        self.rootfs = rootfs or "/"

    def real(self, path, follow=True):
        """The path on this machine, resolved as inside a chroot at ``rootfs``.

        Every symlink on the way (the last one only with ``follow``) is resolved here: absolute
        targets start again at ``rootfs`` and ``..`` never climbs above it, so a copied tree (the
        kubelet's absolute ``kubelet-client-current.pem`` link, a hostile ``../../..`` link) can
        neither read nor write this machine's own files. OSError ELOOP on a link loop.
        """
        if self.rootfs == "/":
            return os.path.join("/", path.lstrip("/"))
        pending = [part for part in path.split("/") if part not in ("", ".")]
        resolved, links = [], 0
        while pending:
            part = pending.pop(0)
            if part == "..":
                # what is resolved so far holds no links, so dropping its last part is the parent
                resolved = resolved[:-1]
                continue
            candidate = os.path.join(self.rootfs, *(resolved + [part]))
            if (pending or follow) and os.path.islink(candidate):
                links += 1
                if links > _MAX_LINKS:
                    raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), path)
                target = os.readlink(candidate)
                if target.startswith("/"):
                    resolved = []
                pending[:0] = [p for p in target.split("/") if p not in ("", ".")]
                continue
            resolved.append(part)
        return os.path.join(self.rootfs, *resolved)

    def missing_root(self):
        """Why ``rootfs`` cannot hold a node's files (a message saying what to give), or None."""
        if os.path.isdir(self.rootfs):
            return None
        what = "is not a directory" if os.path.lexists(self.rootfs) else "does not exist"
        return "rootfs %s %s: give the directory holding the node's files (/ on the node itself)" % (self.rootfs, what)

    def node_path(self, real_path):
        rel = os.path.relpath(real_path, self.rootfs)
        return "/" + ("" if rel == "." else rel)

    def exists(self, path):
        try:
            return os.path.lexists(self.real(path, follow=False))
        except OSError:
            return True  # a link loop on the way: something is there, and reading it says what

    def glob(self, pattern):
        return sorted(self.node_path(p) for p in glob.glob(self.real(pattern)))


def read_node_file(fs, path):
    """Bytes of the regular file at node ``path``; MissingFile or CertError naming the file and the fix.

    Opened non-blocking and checked with fstat, so a FIFO, socket or device in place of a
    certificate is refused instead of blocking or being read without end.
    """
    try:
        fd = os.open(fs.real(path), os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
    except OSError as exc:
        raise _open_error(fs, path, exc)
    with os.fdopen(fd, "rb") as handle:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise CertError(_not_regular(path, mode))
        data = handle.read(MAX_FILE_BYTES + 1)
        if len(data) > MAX_FILE_BYTES:
            raise CertError("%s is %d bytes, more than %d: not a certificate file; point the setting at the "
                            "certificate, key or kubeconfig" % (path, os.fstat(fd).st_size, MAX_FILE_BYTES))
    return data


def _not_regular(path, mode):
    kind = next((name for test, name in _FILE_KINDS if test(mode)), "special file")
    return "%s is a %s, not a regular file: put the certificate file there (or point the setting at it)" % (path, kind)


def _open_error(fs, path, exc):
    if exc.errno == errno.ENOENT:
        try:
            link = fs.real(path, follow=False)
        except OSError:
            link = None
        if link and os.path.islink(link):
            return MissingFile("%s is a dangling symlink to %s" % (path, os.readlink(link)))
        return MissingFile("%s is absent" % path)
    if exc.errno == errno.ENXIO:  # what opening a socket gives
        return CertError(_not_regular(path, stat.S_IFSOCK))
    if exc.errno == errno.ELOOP:
        return CertError("%s: too many levels of symlinks (a symlink loop); make it a file or a link to one" % path)
    if exc.errno == errno.EACCES:
        return CertError("cannot read %s: permission denied (run the play with become: true)" % path)
    return CertError("cannot read %s: %s" % (path, exc.strerror or exc))


class FileSpec:
    """A certificate file (PEM chain, DER, or a dynamiclistener secret JSON) and its key."""

    def __init__(self, entry_id, name, path, component, distribution, key_path=None, required=False, kind="pem"):
        self.id = entry_id
        self.name = name
        self.path = path
        self.component = component
        self.distribution = distribution
        self.key_path = key_path
        self.required = required
        self.kind = kind

    @property
    def holds_ca(self):
        """A CA's own file (kubeadm's and RKE's CA handles, k3s/RKE2 ``*-ca.crt``), which starts with its CA."""
        return self.component == "ca" or self.name.endswith("-ca")


class KubeconfigSpec:
    def __init__(self, entry_id, name, path, component, distribution, required=False):
        self.id = entry_id
        self.name = name
        self.path = path
        self.component = component
        self.distribution = distribution
        self.required = required


class EndpointSpec:
    """``host:port`` where ``component`` should serve the first existing file of ``expects``."""

    def __init__(self, component, host, port, expects=()):
        self.component = component
        self.host = host
        self.port = int(port)
        self.expects = tuple(expects)

    @property
    def id(self):
        host = "[%s]" % self.host if ":" in self.host else self.host
        return "endpoint/%s:%d" % (host, self.port)


class Layout:
    def __init__(self, distribution, node_role):
        self.distribution = distribution
        self.node_role = node_role
        self.files = []
        self.kubeconfigs = []
        self.endpoints = []


def component_of(base_name):
    for prefix, component in _COMPONENT_PREFIXES:
        if base_name.startswith(prefix):
            return component
    if base_name.endswith("-ca"):
        return "ca"
    return None


def detect(fs):
    """``(distribution, node_role)`` from the files present; ``("none", "unknown")`` if nothing."""
    for program in ("rke2", "k3s"):
        if fs.exists("/var/lib/rancher/%s/server/tls" % program):
            return program, "server"
        if fs.exists("/var/lib/rancher/%s/agent" % program):
            return program, "agent"
    if fs.exists(RKE1_SSL + "/kube-ca.pem"):
        control_plane = fs.exists(RKE1_SSL + "/kube-apiserver.pem")
        return "rke1", "control-plane" if control_plane else "worker"
    if fs.exists(KUBEADM_PKI + "/ca.crt") or fs.exists("/etc/kubernetes/kubelet.conf"):
        control_plane = fs.exists(KUBEADM_MANIFESTS + "/kube-apiserver.yaml") or fs.exists(KUBEADM_PKI + "/apiserver.crt")
        return "kubeadm", "control-plane" if control_plane else "worker"
    return "none", "unknown"


def _static_pod_container(fs, path):
    """The first container of a static pod manifest, or None if unusable."""
    if not common_yaml.HAS_YAML:
        return None
    try:
        manifest = common_yaml.yaml_load(read_node_file(fs, path))
        container = manifest["spec"]["containers"][0]
        return container if isinstance(container, dict) else None
    except Exception:  # pylint: disable=broad-except  # a broken manifest only costs us its hints
        return None


def static_pod_flags(fs, path):
    """``{flag: value}`` of the first container command of a static pod manifest; {} if unusable."""
    container = _static_pod_container(fs, path) or {}
    argv = list(container.get("command") or []) + list(container.get("args") or [])
    flags = {}
    for arg in argv:
        if isinstance(arg, str) and arg.startswith("--") and "=" in arg:
            key, value = arg[2:].split("=", 1)
            flags[key] = value
    return flags


def static_pod_image(fs, component):
    """The image of a kubeadm static pod (its tag is the component's version), or None."""
    container = _static_pod_container(fs, "%s/%s.yaml" % (KUBEADM_MANIFESTS, component)) or {}
    image = container.get("image")
    return image if isinstance(image, str) else None


def _url_host_port(url, default_port):
    rest = url.split("://", 1)[-1].split("/", 1)[0]
    if rest.startswith("["):
        host, _sep, port = rest[1:].partition("]")
        port = port.lstrip(":")
    else:
        host, _sep, port = rest.rpartition(":") if rest.count(":") == 1 else (rest, "", "")
    return host, int(port or default_port)


def _bind(host, probe_host):
    """A listen address turned into one we can dial: wildcards become the node's own address."""
    return probe_host if host in (None, "", "0.0.0.0", "::") else host


KUBELET_CONFIG = "/var/lib/kubelet/config.yaml"
KUBEADM_FLAGS_ENV = "/var/lib/kubelet/kubeadm-flags.env"


def kubelet_serving_settings(fs):
    """``(tlsCertFile, serverTLSBootstrap)`` from the kubelet config file and kubeadm's flags file (flags win)."""
    config = {}
    if common_yaml.HAS_YAML and fs.exists(KUBELET_CONFIG):
        try:
            config = common_yaml.yaml_load(read_node_file(fs, KUBELET_CONFIG)) or {}
        except Exception:  # pylint: disable=broad-except  # a broken config only costs us the hint
            config = {}
    config = config if isinstance(config, dict) else {}
    cert, bootstrap = config.get("tlsCertFile"), bool(config.get("serverTLSBootstrap"))
    try:
        flags = read_node_file(fs, KUBEADM_FLAGS_ENV).decode("utf-8", "replace") if fs.exists(KUBEADM_FLAGS_ENV) else ""
    except CertError:
        flags = ""  # an unreadable flags file only costs us the hint, as a broken config does
    for word in flags.replace('"', " ").split():
        if word.startswith("--tls-cert-file="):
            cert = word.split("=", 1)[1]
        elif word.split("=", 1)[0] == "--rotate-server-certificates":
            bootstrap = word.split("=", 1)[-1] != "false"
    return cert, bootstrap


def _kubelet_endpoint(fs, probe_host, extra_candidates=()):
    """The kubelet's :10250 and the file it serves, chosen as upstream does (kubernetes cmd/kubelet/app/server.go
    InitializeTLS; corrections.md §2): tlsCertFile; else, only with serverTLSBootstrap, kubelet-server-current.pem;
    else ``extra_candidates`` (RKE1 passes --tls-cert-file) and the self-signed kubelet.crt."""
    cert, bootstrap = kubelet_serving_settings(fs)
    if cert:
        candidates = [cert]
    elif bootstrap:
        candidates = [KUBELET_PKI + "/kubelet-server-current.pem"]
    else:
        candidates = list(extra_candidates) + [KUBELET_PKI + "/kubelet.crt"]
    return EndpointSpec("kubelet", probe_host, 10250, [c for c in candidates if fs.exists(c)])


def _kubelet_files(fs, distribution):
    files = []
    for base, key in (("kubelet-client-current.pem", "kubelet-client-current.pem"),
                      ("kubelet-server-current.pem", "kubelet-server-current.pem"),
                      ("kubelet.crt", "kubelet.key")):
        path = KUBELET_PKI + "/" + base
        if fs.exists(path):
            files.append(FileSpec("kubelet/" + base, base.rsplit(".", 1)[0], path, "kubelet", distribution,
                                  key_path=KUBELET_PKI + "/" + key))
    return files


def kubeadm_local_etcd(fs):
    """Stacked etcd (a static pod kubeadm manages and its certs), not an external one whose CA only was copied in.

    kubeadm itself renews etcd certs only for local etcd (cmd/kubeadm/app/phases/certs/renewal/manager.go:
    GetCertsWithoutEtcd when etcd is external)."""
    return fs.exists(KUBEADM_MANIFESTS + "/etcd.yaml") or fs.exists(KUBEADM_PKI + "/etcd/server.crt")


def kubeadm_layout(fs, node_role, probe_host):
    layout = Layout("kubeadm", node_role)
    control_plane = node_role == "control-plane"
    local_etcd = kubeadm_local_etcd(fs)
    certs = KUBEADM_CERTS + (KUBEADM_ETCD_CERTS if local_etcd else ()) if control_plane else KUBEADM_CERTS[:1]
    for name, base, component, _ca in certs:
        layout.files.append(FileSpec("kubeadm/" + name, name, "%s/%s.crt" % (KUBEADM_PKI, base), component, "kubeadm",
                                     key_path="%s/%s.key" % (KUBEADM_PKI, base), required=True))
    if control_plane and not local_etcd:
        # external etcd: the client cert and CA the user copied in (kubeadm docs, setup-ha-etcd-with-kubeadm) expire too
        flags = static_pod_flags(fs, KUBEADM_MANIFESTS + "/kube-apiserver.yaml")
        for name, flag, key_flag in (("etcd-ca", "etcd-cafile", None), ("apiserver-etcd-client", "etcd-certfile", "etcd-keyfile")):
            if flags.get(flag):
                layout.files.append(FileSpec("kubeadm/" + name, name, flags[flag], "ca" if name == "etcd-ca" else "kube-apiserver",
                                             "kubeadm", key_path=flags.get(key_flag) if key_flag else None, required=True))
    if control_plane:
        for name, component in KUBEADM_KUBECONFIGS:
            path = "/etc/kubernetes/" + name
            # super-admin.conf exists only on the node that ran `kubeadm init` (>= 1.29): absent is normal.
            if name != "super-admin.conf" or fs.exists(path):
                layout.kubeconfigs.append(KubeconfigSpec("kubeconfig/" + name, name, path, component, "kubeadm", required=True))
    layout.kubeconfigs.append(KubeconfigSpec("kubeconfig/kubelet.conf", "kubelet.conf", "/etc/kubernetes/kubelet.conf",
                                             "kubelet", "kubeadm", required=True))
    layout.files.extend(_kubelet_files(fs, "kubeadm"))

    if control_plane:
        apiserver = static_pod_flags(fs, KUBEADM_MANIFESTS + "/kube-apiserver.yaml")
        host = _bind(apiserver.get("bind-address") or apiserver.get("advertise-address"), probe_host)
        layout.endpoints.append(EndpointSpec("kube-apiserver", host, apiserver.get("secure-port", 6443),
                                             [apiserver.get("tls-cert-file", KUBEADM_PKI + "/apiserver.crt")]))
        if local_etcd:
            etcd = static_pod_flags(fs, KUBEADM_MANIFESTS + "/etcd.yaml")
            for urls, cert_flag, default_port, component, default_cert in (
                    ("listen-client-urls", "cert-file", 2379, "etcd", "/etcd/server.crt"),
                    ("listen-peer-urls", "peer-cert-file", 2380, "etcd-peer", "/etcd/peer.crt")):
                url = (etcd.get(urls) or "https://%s:%d" % (probe_host, default_port)).split(",")[-1]
                host, port = _url_host_port(url, default_port)
                layout.endpoints.append(EndpointSpec(component, _bind(host, probe_host), port,
                                                     [etcd.get(cert_flag, KUBEADM_PKI + default_cert)]))
        for component, port in (("kube-controller-manager", 10257), ("kube-scheduler", 10259)):
            flags = static_pod_flags(fs, "%s/%s.yaml" % (KUBEADM_MANIFESTS, component))
            # Without --tls-cert-file they serve an in-memory self-signed cert: nothing on disk to compare.
            expects = [flags["tls-cert-file"]] if flags.get("tls-cert-file") else []
            layout.endpoints.append(EndpointSpec(component, _bind(flags.get("bind-address", "127.0.0.1"), probe_host),
                                                 flags.get("secure-port", port), expects))
    layout.endpoints.append(_kubelet_endpoint(fs, probe_host))
    return layout


def rke1_layout(fs, node_role, probe_host, rke1_address=None):
    """``rke1_address``: the node's internal_address in cluster.yml when set and not its address; RKE names the
    node's kube-etcd-/kube-kubelet- certs after it (rancher/rke pki/util.go GetCrtNameForHost)."""
    layout = Layout("rke1", node_role)
    required = {"kube-ca", "kube-node", "kube-proxy"}
    if node_role == "control-plane":
        required |= {"kube-apiserver", "kube-controller-manager", "kube-scheduler"}
    present = {os.path.basename(p)[:-4] for p in fs.glob(RKE1_SSL + "/*.pem") if not p.endswith("-key.pem")}
    for name in sorted(present | required):
        layout.files.append(FileSpec("rke1/" + name, name, "%s/%s.pem" % (RKE1_SSL, name), component_of(name), "rke1",
                                     key_path="%s/%s-key.pem" % (RKE1_SSL, name), required=name in required))
    for path in fs.glob(RKE1_SSL + "/kubecfg-*.yaml"):
        base = os.path.basename(path)
        layout.kubeconfigs.append(KubeconfigSpec("kubeconfig/" + base, base, path, component_of(base[len("kubecfg-"):-5]), "rke1"))
    layout.files.extend(_kubelet_files(fs, "rke1"))

    address = (rke1_address or probe_host).replace(".", "-").replace(":", "-").lower()
    if "kube-apiserver" in present:
        layout.endpoints.append(EndpointSpec("kube-apiserver", probe_host, 6443, [RKE1_SSL + "/kube-apiserver.pem"]))
    if "kube-etcd-" + address in present:
        etcd_cert = ["%s/kube-etcd-%s.pem" % (RKE1_SSL, address)]
        layout.endpoints.append(EndpointSpec("etcd", probe_host, 2379, etcd_cert))
        layout.endpoints.append(EndpointSpec("etcd-peer", probe_host, 2380, etcd_cert))
    layout.endpoints.append(_kubelet_endpoint(fs, probe_host, ["%s/kube-kubelet-%s.pem" % (RKE1_SSL, address)]))
    return layout


def rancher_layout(fs, program, node_role, probe_host):
    """k3s and RKE2 share one code base: the same layout with the program name substituted."""
    layout = Layout(program, node_role)
    data_dir = "/var/lib/rancher/" + program
    tls = data_dir + "/server/tls"
    if node_role == "server":
        for real_dir, _dirs, names in sorted(os.walk(fs.real(tls))):
            rel_dir = os.path.relpath(real_dir, fs.real(tls))
            if rel_dir.split(os.sep)[0] == "temporary-certs":
                continue  # the apiserver's loopback pair, remade at every start
            for name in sorted(names):
                if not name.endswith(".crt") or name.endswith(".nochain.crt"):
                    continue  # .nochain.crt repeats the CA already listed
                rel = os.path.normpath(os.path.join(rel_dir, name[:-4]))
                base = name[:-4]
                component = "etcd" if rel.startswith("etcd/") else component_of(base) or program
                layout.files.append(FileSpec("%s/server/%s" % (program, rel), base, "%s/%s.crt" % (tls, rel), component,
                                             program, key_path="%s/%s.key" % (tls, rel)))
        layout.files.append(FileSpec("%s/server/dynamic-cert.json" % program, "dynamic-cert", tls + "/dynamic-cert.json",
                                     program + "-supervisor", program, kind="secret-json"))
        kubeconfig = "/etc/rancher/%s/%s.yaml" % (program, program)
        layout.kubeconfigs.append(KubeconfigSpec("kubeconfig/%s.yaml" % program, program + ".yaml", kubeconfig, "admin", program))
    for path in fs.glob(data_dir + "/agent/*.crt"):
        base = os.path.basename(path)[:-4]
        layout.files.append(FileSpec("%s/agent/%s" % (program, base), base, path, component_of(base) or program, program,
                                     key_path=path[:-4] + ".key"))

    supervisor_port, apiserver_port = (6443, 6444) if program == "k3s" else (9345, 6443)
    if node_role == "server":
        layout.endpoints.append(EndpointSpec(program + "-supervisor", probe_host, supervisor_port, [tls + "/dynamic-cert.json"]))
        # k3s binds its apiserver to loopback behind the supervisor; RKE2 serves it on 6443 directly.
        apiserver_host = "127.0.0.1" if program == "k3s" else probe_host
        layout.endpoints.append(EndpointSpec("kube-apiserver", apiserver_host, apiserver_port, [tls + "/serving-kube-apiserver.crt"]))
        if program == "rke2" or fs.exists(data_dir + "/server/db/etcd"):
            layout.endpoints.append(EndpointSpec("etcd", probe_host, 2379, [tls + "/etcd/server-client.crt"]))
            layout.endpoints.append(EndpointSpec("etcd-peer", probe_host, 2380, [tls + "/etcd/peer-server-client.crt"]))
    serving_kubelet = data_dir + "/agent/serving-kubelet.crt"
    if fs.exists(serving_kubelet):
        layout.endpoints.append(EndpointSpec("kubelet", probe_host, 10250, [serving_kubelet]))
    return layout


def layout_for(fs, distribution, node_role, probe_host, rke1_address=None):
    if distribution == "kubeadm":
        return kubeadm_layout(fs, node_role, probe_host)
    if distribution == "rke1":
        return rke1_layout(fs, node_role, probe_host, rke1_address)
    if distribution in ("k3s", "rke2"):
        return rancher_layout(fs, distribution, node_role, probe_host)
    return Layout("none", node_role)


def user_kubeconfigs(fs):
    """The operators' own kubeconfigs, which go stale after every renewal."""
    return fs.glob("/root/.kube/config") + fs.glob("/home/*/.kube/config")
