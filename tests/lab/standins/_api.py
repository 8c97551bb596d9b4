"""What the lab's API servers share: standins/kube_apiserver.py (objects in etcd) and tools/k3s.py (objects in kine).

API errors as a v1 Status, resources and their discovery, and how the apiserver's generic registry creates and
updates an object in its storage (kubernetes staging/src/k8s.io/apiserver/pkg/registry/generic/registry/store.go,
v1.31: Create, Update). Storage is any object with ``get(key)`` (the object, its metadata.resourceVersion set, or
None), ``create(key, obj)`` -> ``(revision, None)`` or ``(None, existing)``, and ``update(key, obj, revision=None)`` ->
``(revision, None)`` or ``(None, current or None)``.
"""
import datetime
import secrets
import uuid

ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
# store.go OptimisticLockErrorMsg
OPTIMISTIC_LOCK = "the object has been modified; please apply your changes to the latest version and try again"


class ApiError(Exception):
    """An API error answered as a v1 Status."""

    def __init__(self, code, reason, message, details=None):
        super().__init__(message)
        self.code, self.reason, self.details = code, reason, details

    def status(self):
        out = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": str(self),
               "reason": self.reason, "details": self.details, "code": self.code}
        if self.details is None:        # omitempty: 401 answers carry no details
            del out["details"]
        return out


class Resource:
    """One served resource; ``columns``: the Table columns after NAME (kubectl's printers). ``create_on_update`` and
    ``unconditional_update``: its registry strategy's AllowCreateOnUpdate and AllowUnconditionalUpdate."""

    def __init__(self, group, version, plural, kind, namespaced, short=(), prefix=None, columns=(), verbs=ALL_VERBS,
                 create_on_update=False, unconditional_update=True):
        self.group, self.version, self.plural, self.kind = group, version, plural, kind
        self.namespaced, self.short, self.prefix, self.columns, self.verbs = namespaced, list(short), prefix, columns, list(verbs)
        self.create_on_update, self.unconditional_update = create_on_update, unconditional_update

    @property
    def api_version(self):
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self):
        return f"{self.plural}.{self.group}" if self.group else self.plural

    def key(self, namespace, name=""):
        return f"/registry/{self.prefix}/" + (f"{namespace}/" if self.namespaced and namespace else "") + name

    def discovery(self):
        return {"name": self.plural, "singularName": self.kind.lower(), "namespaced": self.namespaced,
                "kind": self.kind, "verbs": self.verbs, **({"shortNames": self.short} if self.short else {})}


def lease_resource(columns=()):
    """coordination.k8s.io/v1 leases (pkg/registry/coordination/lease/strategy.go: AllowCreateOnUpdate true,
    AllowUnconditionalUpdate false)."""
    return Resource("coordination.k8s.io", "v1", "leases", "Lease", True, (), "leases", columns,
                    create_on_update=True, unconditional_update=False)


def group_versions(resources):
    return list(dict.fromkeys((r.group, r.version) for r in resources))


def resource_list(resources, group, version):
    gv = f"{group}/{version}" if group else version
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv,
            "resources": [r.discovery() for r in resources if (r.group, r.version) == (group, version)]}


def api_group(resources, group):
    versions = [{"groupVersion": f"{group}/{v}", "version": v} for g, v in group_versions(resources) if g == group]
    return {"kind": "APIGroup", "apiVersion": "v1", "name": group, "versions": versions, "preferredVersion": versions[0]}


def group_list(resources):
    """/apis: kubectl falls back to it (and the group's /apis/<group>/<version>) when it gets no aggregated discovery."""
    return {"kind": "APIGroupList", "apiVersion": "v1",
            "groups": [api_group(resources, g) for g in dict.fromkeys(g for g, _v in group_versions(resources) if g)]}


def not_found(res, name):
    return ApiError(404, "NotFound", f'{res.qualified} "{name}" not found', {"name": name, "group": res.group, "kind": res.plural})


def new_object(res, body, namespace):
    """The object a create stores (rest.FillObjectMetaSystemFields): a new uid and creationTimestamp, no resourceVersion."""
    obj = dict(body, apiVersion=res.api_version, kind=res.kind)
    meta = dict(obj.get("metadata") or {})
    if not meta.get("name") and meta.get("generateName"):
        meta["name"] = meta["generateName"] + "".join(secrets.choice("bcdfghjklmnpqrstvwxz2456789") for i in range(5))
    meta.pop("resourceVersion", None)
    meta.update(uid=str(uuid.uuid4()),
                creationTimestamp=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))
    if res.namespaced:
        meta["namespace"] = namespace
    obj["metadata"] = meta
    return obj


def create(store, res, namespace, obj):
    """Store.Create of ``obj`` (from new_object): 409 AlreadyExists when the key holds one."""
    name = obj["metadata"].get("name")
    if not name:
        raise ApiError(422, "Invalid", f"{res.kind} \"\" is invalid: metadata.name: Required value: name or generateName is required")
    revision, _existing = store.create(res.key(namespace, name), obj)
    if revision is None:
        raise ApiError(409, "AlreadyExists", f'{res.qualified} "{name}" already exists',
                       {"name": name, "group": res.group, "kind": res.plural})
    obj["metadata"]["resourceVersion"] = str(revision)
    return obj


def update(store, res, namespace, name, obj):
    """Store.Update of ``obj``; ``(object, created)``. Created when absent and the resource allows it (a uid in it is a
    precondition on the absent object, 409), written only at the resourceVersion it carries (409 Conflict when stale;
    422 without one, unless the resource allows unconditional updates)."""
    meta = obj.setdefault("metadata", {})
    current = store.get(res.key(namespace, name))
    if current is None:
        if not res.create_on_update:
            raise not_found(res, name)
        if meta.get("uid"):     # rest.defaultUpdatedObjectInfo.Preconditions, checked by GuaranteedUpdate
            raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on {res.qualified} "{name}": Precondition failed: '
                                            f'UID in precondition: {meta["uid"]}, UID in object meta: ',
                           {"name": name, "group": res.group, "kind": res.plural})
        return create(store, res, namespace, new_object(res, dict(obj, metadata=dict(meta, name=name)), namespace)), True
    revision = meta.pop("resourceVersion", None)
    if not revision and not res.unconditional_update:
        raise ApiError(422, "Invalid", f'{res.qualified} "{name}" is invalid: metadata.resourceVersion: Invalid value: 0x0: '
                                       'must be specified for an update',
                       {"name": name, "group": res.group, "kind": res.plural})
    for field in ("uid", "creationTimestamp", "namespace"):
        if current["metadata"].get(field):
            meta[field] = current["metadata"][field]
    meta["name"] = name
    obj.update(apiVersion=res.api_version, kind=res.kind)
    new_rev, found = store.update(res.key(namespace, name), obj, revision)
    if new_rev is None:
        if found is None:
            raise not_found(res, name)
        raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on {res.qualified} "{name}": {OPTIMISTIC_LOCK}',
                       {"name": name, "group": res.group, "kind": res.plural})
    meta["resourceVersion"] = str(new_rev)
    return obj, False
