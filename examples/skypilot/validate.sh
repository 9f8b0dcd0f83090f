#!/usr/bin/env bash
# Validates the SkyPilot task files offline with the real `skypilot` package (no cloud
# credentials needed): each YAML must parse with sky.Task.from_yaml, its setup and run must parse
# as bash, and the properties the pipeline relies on are checked (GPU choices with spot +
# on-demand fallback, slice envs, HF_TOKEN as a secret, bucket mounts; a build that loads through
# a `--remote` writer and copies no data dir; replicas that run `--replica --remote`, with the
# service's readiness probe on /readyz and its port).
#
#   examples/skypilot/validate.sh            # uses ./.venv-sky, created on first use
#   VENV=/path/to/venv examples/skypilot/validate.sh
#
# Exit status 3 means skypilot could not be installed (nothing was validated); any other
# non-zero status is a validation failure.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="${VENV:-$root/.venv-sky}"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import sky' 2>/dev/null; then
  if ! { python3 -m venv "$venv" && "$venv/bin/pip" install -q --disable-pip-version-check "skypilot==0.14.1"; }; then
    echo "validate.sh: could not install skypilot==0.14.1 into $venv; nothing validated" >&2
    exit 3
  fi
fi
# SkyPilot writes its state under $HOME/.sky; keep that out of the user's home.
HOME="$(mktemp -d)"
export HOME
trap 'rm -rf "$HOME"' EXIT
"$venv/bin/python" - "$here" <<'PY'
import os
import shlex
import subprocess
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
    for part in ("setup", "run"):
        script = getattr(task, part)
        if script:
            r = subprocess.run(["bash", "-n"], input=script, text=True, capture_output=True)
            check(r.returncode == 0, f"{name}: {part} is not valid bash: {r.stderr.strip()}")
    print(f"ok: {name} parses ({len(task.resources)} resource choice(s))")
    return task


def check(cond, msg):
    if not cond:
        sys.exit(f"FAIL: {msg}")


def glimpse_commands(run):
    """Each `glimpse SUB ...` command line of a run script, as shell words (continuations joined)."""
    cmds = []
    for line in run.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        for i, w in enumerate(words):
            if os.path.basename(w) == "glimpse" and i + 1 < len(words):
                cmds.append(words[i + 1 :])
                break
    return cmds


def flag(args, name):
    """The value of `--name VALUE` (None when absent; True for a flag without value)."""
    for i, a in enumerate(args):
        if a == name:
            nxt = args[i + 1] if i + 1 < len(args) else None
            return True if nxt is None or nxt.startswith("--") else nxt
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
    return None


def copies_data_dir(run):
    return any(
        w[0] in ("cp", "rsync") and any("glimpse-data" in x or x.startswith("/db") for x in w[1:])
        for w in (shlex.split(l, comments=True) for l in run.replace("\\\n", " ").splitlines())
        if w
    )


REMOTE = "s3://${DB_BUCKET}/glimpse"

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

# build_vectordb.yaml: a writer on the bucket, then glimpse load; the data dir is scratch.
# Keys for a bucket off AWS come as --secret at launch (not declared in the file).
t = load(
    "build_vectordb.yaml",
    secrets=[("GLIMPSE_API_KEY", "dummy"), ("AWS_ACCESS_KEY_ID", "AKIA_dummy"),
             ("AWS_SECRET_ACCESS_KEY", "dummy")],
)
check({"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= set(t.secrets), "AWS keys as --secret")
cmds = glimpse_commands(t.run)
serves = [c for c in cmds if c[0] == "serve"]
check(len(serves) == 1, f"build starts one glimpse serve ({len(serves)})")
check(flag(serves[0], "--remote") == REMOTE, f"build writer --remote {flag(serves[0], '--remote')}")
check(flag(serves[0], "--replica") is None, "the build's writer is not a --replica")
check(any(c[0] == "load" for c in cmds), "build runs glimpse load")
check("/readyz" in t.run, "build waits for the writer's /readyz")
check(not copies_data_dir(t.run), "build copies no data dir (the bucket is the copy)")
check("/vectors" in t.storage_mounts, "build mounts the vectors bucket")
check("DB_BUCKET" in t.envs and "AWS_REGION" in t.envs, "build sets DB_BUCKET and AWS_REGION")

# serve_vectordb.yaml: read-only replicas that sync from the bucket.
t = load("serve_vectordb.yaml", secrets=[("HF_TOKEN", "hf_dummy")])
svc = t.service
check(svc is not None, "serve has a service section")
check(svc.readiness_path == "/readyz", f"readiness probe {svc.readiness_path}")
check(svc.min_replicas >= 2, "at least two replicas")
ports = {p for r in t.resources for p in (r.ports or [])}
check("8000" in {str(p) for p in ports}, f"port 8000 exposed ({ports})")
serves = [c for c in glimpse_commands(t.run) if c[0] == "serve"]
check(len(serves) == 1, f"serve runs one glimpse serve ({len(serves)})")
args = serves[0]
check(flag(args, "--replica") is True, "replicas run --replica")
check(flag(args, "--remote") == REMOTE, f"replica --remote {flag(args, '--remote')}")
check(flag(args, "--sync-secs") not in (None, True), "replicas set --sync-secs")
check(flag(args, "--bind") == "0.0.0.0:8000", "replicas listen on 0.0.0.0:8000")
check(flag(args, "--images-dir") == "/images", "replicas serve --images-dir /images")
check(not copies_data_dir(t.run), "serve copies no data dir")
check("/images" in t.storage_mounts, "serve mounts the images bucket")
check("/db" not in t.storage_mounts, "serve mounts no data-dir bucket")
check("DB_BUCKET" in t.envs, "serve sets DB_BUCKET")
print("all SkyPilot task files valid")
PY
