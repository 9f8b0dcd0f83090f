#!/usr/bin/env bash
# Validates the SkyPilot task files offline with the real `skypilot` package (no cloud
# credentials needed): each YAML must parse with sky.Task.from_yaml, and the properties the
# pipeline relies on are checked (GPU choices with spot + on-demand fallback, slice envs,
# HF_TOKEN as a secret, bucket mounts, the service's readiness probe and port).
#
#   examples/skypilot/validate.sh            # uses ./.venv-sky, created on first use
#   VENV=/path/to/venv examples/skypilot/validate.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="${VENV:-$root/.venv-sky}"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import sky' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "skypilot==0.14.1"
fi
# SkyPilot writes its state under $HOME/.sky; keep that out of the user's home.
export HOME="$(mktemp -d)"
trap 'rm -rf "$HOME"' EXIT
"$venv/bin/python" - "$here" <<'PY'
import os
import sys

import sky
import yaml

here = sys.argv[1]


def load(name, envs=(), secrets=()):
    """Parses like `sky jobs launch --env K=V --secret K=V FILE` would."""
    path = os.path.join(here, name)
    sky.Task.from_yaml(path)  # the file as written
    with open(path, encoding="utf-8") as f:
        config = yaml.safe_load(f)
    task = sky.Task.from_yaml_config(
        config, env_overrides=list(envs) or None, secrets_overrides=list(secrets) or None
    )
    print(f"ok: {name} parses ({len(task.resources)} resource choice(s))")
    return task


def check(cond, msg):
    if not cond:
        sys.exit(f"FAIL: {msg}")


# compute_vectors.yaml: the slice envs are overridable, as `glimpse sky-launch` does.
t = load(
    "compute_vectors.yaml",
    envs=[("START_IDX", "10000"), ("END_IDX", "20000")],
    secrets=[("HF_TOKEN", "hf_dummy")],
)
check(t.envs["START_IDX"] == "10000" and t.envs["END_IDX"] == "20000", "START_IDX/END_IDX overrides")
accs = set()
spot = set()
for r in t.resources:
    accs.update((r.accelerators or {}).keys())
    spot.add(r.use_spot)
check(accs == {"T4", "L4", "A10G", "A10", "V100"}, f"GPU choices are {sorted(accs)}")
check(spot == {True, False}, "spot with on-demand fallback")
check("HF_TOKEN" in t.secrets, "HF_TOKEN is a secret")
check("HF_TOKEN" not in t.envs, "HF_TOKEN is not a plain env")
mounts = t.storage_mounts
check(set(mounts) >= {"/vectors", "/images"}, f"bucket mounts {sorted(mounts)}")
check(mounts["/vectors"].name == "glimpse-vectors", "output bucket name from OUTPUT_BUCKET")
check("glimpse embed" in t.run.replace("./target/release/", "") and "$START_IDX" in t.run, "run embeds the slice")

t = load("build_vectordb.yaml", secrets=[("GLIMPSE_API_KEY", "dummy")])
check("glimpse load" in t.run.replace("./target/release/", ""), "build runs glimpse load")
check("/vectors" in t.storage_mounts, "build mounts the vectors bucket")

t = load("serve_vectordb.yaml", secrets=[("HF_TOKEN", "hf_dummy")])
svc = t.service
check(svc is not None, "serve has a service section")
check(svc.readiness_path == "/health", f"readiness probe {svc.readiness_path}")
check(svc.min_replicas >= 2, "at least two replicas")
ports = {p for r in t.resources for p in (r.ports or [])}
check("8000" in {str(p) for p in ports}, f"port 8000 exposed ({ports})")
print("all SkyPilot task files valid")
PY
