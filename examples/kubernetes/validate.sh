#!/usr/bin/env bash
# Validates the Kubernetes manifests offline: every resource against the Kubernetes OpenAPI
# schemas bundled in `kubernetes-validate` (PyPI), in strict mode (unknown fields are errors),
# for the oldest and newest Kubernetes versions listed below; then the properties the
# deployment relies on (one writer, no --replica on it; replicas with --replica --remote and
# readiness on /readyz; Services that select the right pods; uid 10001; resource requests;
# every referenced ConfigMap, Secret and $(VAR) defined). No cluster and no network needed.
#
#   examples/kubernetes/validate.sh            # uses ./.venv-k8s, created on first use
#   VENV=/path/to/venv examples/kubernetes/validate.sh
#
# Exit status 3 means kubernetes-validate could not be installed (nothing was validated); any
# other non-zero status is a validation failure.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="${VENV:-$root/.venv-k8s}"
K8S_VERSIONS="1.28.0 1.37.0"
if [ ! -x "$venv/bin/kubernetes-validate" ] || ! "$venv/bin/python" -c 'import yaml' 2>/dev/null; then
  if ! { python3 -m venv "$venv" && "$venv/bin/pip" install -q --disable-pip-version-check "kubernetes-validate==1.37.0"; }; then
    echo "validate.sh: could not install kubernetes-validate==1.37.0 into $venv; nothing validated" >&2
    exit 3
  fi
fi
manifests=("$here"/*.yaml)
for v in $K8S_VERSIONS; do
  "$venv/bin/kubernetes-validate" --strict --quiet -k "$v" "${manifests[@]}"
  echo "ok: ${#manifests[@]} files valid (strict) against Kubernetes $v"
done
"$venv/bin/python" - "${manifests[@]}" <<'PY'
import os
import re
import sys

import yaml

docs = []
for path in sys.argv[1:]:
    with open(path, encoding="utf-8") as f:
        for d in yaml.safe_load_all(f):
            if d:
                docs.append((os.path.basename(path), d))
by = {(d["kind"], d["metadata"]["name"]): d for _, d in docs}


def check(cond, msg):
    if not cond:
        sys.exit(f"FAIL: {msg}")


def get(kind, name):
    check((kind, name) in by, f"{kind} {name} is defined")
    return by[(kind, name)]


def flag(args, name):
    """The value of `--name=V` or `--name V`; True for a bare flag; None when absent."""
    for i, a in enumerate(args):
        if a == name:
            nxt = args[i + 1] if i + 1 < len(args) else None
            return True if nxt is None or nxt.startswith("-") else nxt
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
    return None


def main_container(workload):
    cs = workload["spec"]["template"]["spec"]["containers"]
    check(len(cs) == 1, f"{workload['metadata']['name']}: one container")
    return cs[0]


config = get("ConfigMap", "glimpse-config")["data"]
secret = get("Secret", "glimpse-credentials")
secret_keys = set(secret.get("stringData", {})) | set(secret.get("data", {}))
check(all(v == "REPLACE_ME" for v in secret.get("stringData", {}).values()) and "data" not in secret,
      "the example Secret holds placeholders only")

# The writer: exactly one pod, a volume for /data, --remote and no --replica.
writer = get("StatefulSet", "glimpse-writer")
check(writer["spec"]["replicas"] == 1, "writer replicas == 1")
check(writer["spec"]["serviceName"] == "glimpse-writer", "writer's governing Service")
w = main_container(writer)
check(w["args"][0] == "serve", "writer runs glimpse serve")
check(flag(w["args"], "--replica") is None, "the writer has no --replica")
check(flag(w["args"], "--remote") not in (None, True), "the writer has --remote")
check(flag(w["args"], "--data-dir") == "/data", "writer --data-dir /data")
claims = {c["metadata"]["name"] for c in writer["spec"].get("volumeClaimTemplates", [])}
data_mounts = [m for m in w.get("volumeMounts", []) if m["mountPath"] == "/data"]
check(len(data_mounts) == 1 and data_mounts[0]["name"] in claims, "writer's /data is a PVC")

# The replicas: 2+, --replica --remote --sync-secs, readiness /readyz, liveness /healthz,
# an emptyDir cache, and a rolling update that never drops below the current count.
dep = get("Deployment", "glimpse")
check(dep["spec"]["replicas"] >= 2, "at least two replicas")
r = main_container(dep)
check(r["args"][0] == "serve", "replicas run glimpse serve")
check(flag(r["args"], "--replica") is True, "replicas run --replica")
check(flag(r["args"], "--remote") == flag(w["args"], "--remote"), "replicas and writer share --remote")
check(flag(r["args"], "--sync-secs") not in (None, True), "replicas set --sync-secs")
check(flag(r["args"], "--data-dir") == "/data", "replica --data-dir /data")
check(r["readinessProbe"]["httpGet"]["path"] == "/readyz", "replica readiness on /readyz")
check(r["livenessProbe"]["httpGet"]["path"] == "/healthz", "replica liveness on /healthz")
vols = {v["name"]: v for v in dep["spec"]["template"]["spec"].get("volumes", [])}
rdata = [m for m in r.get("volumeMounts", []) if m["mountPath"] == "/data"]
check(len(rdata) == 1 and "emptyDir" in vols.get(rdata[0]["name"], {}), "replica /data is an emptyDir")
ru = dep["spec"]["strategy"].get("rollingUpdate", {})
check(dep["spec"]["strategy"]["type"] == "RollingUpdate" and ru.get("maxUnavailable") == 0,
      "rolling update with maxUnavailable 0")

# $(VAR) in args must come from the container's env or envFrom; --remote must be a bucket URL.
for workload in [d for _, d in docs if d["kind"] in ("Deployment", "StatefulSet", "Job")]:
    name = workload["metadata"]["name"]
    c = main_container(workload)
    env = {e["name"] for e in c.get("env", [])}
    for src in c.get("envFrom", []):
        if "configMapRef" in src:
            check(src["configMapRef"]["name"] == "glimpse-config", f"{name}: envFrom ConfigMap exists")
            env |= set(config)
        if "secretRef" in src:
            check(src["secretRef"]["name"] == "glimpse-credentials", f"{name}: envFrom Secret exists")
            env |= secret_keys
    for e in c.get("env", []):
        ref = e.get("valueFrom", {}).get("secretKeyRef")
        if ref:
            check(ref["name"] == "glimpse-credentials" and ref["key"] in secret_keys,
                  f"{name}: secretKeyRef {ref}")
    for a in c.get("args", []):
        for var in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", a):
            check(var in env, f"{name}: $({var}) in args is defined")
    remote = flag(c.get("args", []), "--remote")
    if remote not in (None, True):
        url = re.sub(r"\$\(([A-Za-z_0-9]+)\)", lambda m: config.get(m.group(1), ""), remote)
        check(re.match(r"^(s3|gs|az)://[^/]+/.+|^file:///.+", url), f"{name}: --remote {url}")
    sel = workload["spec"].get("selector", {}).get("matchLabels", {})
    tl = workload["spec"]["template"]["metadata"].get("labels", {})
    check(all(tl.get(k) == v for k, v in sel.items()), f"{name}: selector matches its pod labels")
    # Non-root as the image's uid, resource requests on every container.
    pod = workload["spec"]["template"]["spec"]
    psc, csc = pod.get("securityContext", {}), c.get("securityContext", {})
    check(csc.get("runAsNonRoot", psc.get("runAsNonRoot")) is True, f"{name}: runAsNonRoot")
    check(csc.get("runAsUser", psc.get("runAsUser")) == 10001, f"{name}: runAsUser 10001")
    req = c.get("resources", {}).get("requests", {})
    check("cpu" in req and "memory" in req, f"{name}: cpu and memory requests")
    check(c["image"] == w["image"], f"{name}: the same image as the writer")

# Each Service selects exactly its pods, on the container's port 8000.
def selects(svc, workload):
    labels = workload["spec"]["template"]["metadata"]["labels"]
    return all(labels.get(k) == v for k, v in svc["spec"]["selector"].items())


for svc_name, target, other in (("glimpse-writer", writer, dep), ("glimpse", dep, writer)):
    svc = get("Service", svc_name)
    check(selects(svc, target) and not selects(svc, other), f"Service {svc_name} selects only its pods")
    c = main_container(target)
    ports = {p.get("name"): p["containerPort"] for p in c["ports"]}
    for p in svc["spec"]["ports"]:
        tp = p.get("targetPort", p["port"])
        check(ports.get(tp, tp) == 8000, f"Service {svc_name} reaches port 8000")
pdb = get("PodDisruptionBudget", "glimpse")
check(all(dep["spec"]["template"]["metadata"]["labels"].get(k) == v
          for k, v in pdb["spec"]["selector"]["matchLabels"].items()), "PDB selects the replicas")
job = get("Job", "glimpse-load")
ja = main_container(job)["args"]
check(ja[0] == "load" and flag(ja, "--url") == "http://glimpse-writer:8000", "the load Job targets the writer")
print("all Kubernetes manifests valid")
PY
