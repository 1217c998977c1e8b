#!/usr/bin/env bash
# Build (or reuse) the TF-Serving-compatible test image without any registry, and print its name
# on stdout (everything else goes to stderr).
#
#   base:  debootstrap --variant=minbase bookworm + `docker import`  (made once, then reused)
#   image: docker-image/Dockerfile on top, installing Python deps and this project from a staged
#          context; reused while the content hash of that context (label
#          pytest-tfserving.content-hash) is unchanged.
#
#   TFS_TEST_IMAGE   image name (default pytest-tfserving/tf-serving-test:latest)
#   TFS_BASE_IMAGE   base image name (default pytest-tfserving-base:bookworm)
#   DEBIAN_MIRROR    mirror for debootstrap (default: the first URI in apt's sources)
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
image="${TFS_TEST_IMAGE:-pytest-tfserving/tf-serving-test:latest}"
base="${TFS_BASE_IMAGE:-pytest-tfserving-base:bookworm}"
label="pytest-tfserving.content-hash"
python="${PYTHON:-python3}"

say() { echo "build_test_image: $*" >&2; }

if ! docker info >/dev/null 2>&1; then
    say "no Docker engine answers; run scripts/start_dockerd.sh first"
    exit 2
fi

ctx="$(mktemp -d /tmp/tfs-image-ctx.XXXXXX)"
rootfs=""
cleanup() { rm -rf "$ctx"; if [ -n "$rootfs" ]; then rm -rf "$rootfs"; fi; }
trap cleanup EXIT

# --- stage the build context and hash it ---------------------------------------------------
cp "$repo"/docker-image/Dockerfile "$repo"/docker-image/tf_serving_entrypoint.sh \
   "$repo"/docker-image/tensorflow_model_server "$ctx"/
mkdir -p "$ctx/project"
cp "$repo/pyproject.toml" "$ctx/project/"
if [ -f "$repo/README.md" ]; then
    cp "$repo/README.md" "$ctx/project/"
else
    echo "pytest-tfserving" > "$ctx/project/README.md"
fi
tar -C "$repo" --exclude=__pycache__ --exclude='*.pyc' -cf - pytest_tfserving \
    | tar -C "$ctx/project" -xf -

hash="$("$python" - "$ctx" <<'PY'
import hashlib, importlib.metadata as md, re, sys
from pathlib import Path

ctx = Path(sys.argv[1])
# Pin the project's runtime dependencies (and TensorFlow/protobuf, which they pull in) to the
# versions installed here, so the container serves with the same libraries as the host.
names = []
for req in md.requires("pytest-tfserving") or []:
    if "extra ==" in req:
        continue
    names.append(re.split(r"[<>=!~;\s\[]", req, maxsplit=1)[0])
names += ["tensorflow", "protobuf", "setuptools", "wheel"]  # + build backend
lines = []
for name in dict.fromkeys(names):
    try:
        lines.append(f"{name}=={md.version(name)}")
    except md.PackageNotFoundError:
        lines.append(name)
(ctx / "requirements.txt").write_text("\n".join(lines) + "\n")
digest = hashlib.sha256()
for path in sorted(p for p in ctx.rglob("*") if p.is_file()):
    digest.update(str(path.relative_to(ctx)).encode() + b"\0")
    digest.update(path.read_bytes() + b"\0")
print(digest.hexdigest()[:16])
PY
)"

# The CA bundle pip trusts here (not part of the content hash: it is the host's, not the project's).
cp "${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}" "$ctx/ca-bundle.crt"

current="$(docker image inspect --format "{{ index .Config.Labels \"$label\" }}" "$image" \
           2>/dev/null || true)"
if [ "$current" = "$hash" ]; then
    say "reusing $image (content hash $hash)"
    echo "$image"
    exit 0
fi
say "building $image (content hash $hash; image had '${current:-none}')"

# --- base image: debootstrap + docker import, no registry ----------------------------------
if ! docker image inspect "$base" >/dev/null 2>&1; then
    if ! command -v debootstrap >/dev/null 2>&1; then
        say "installing debootstrap"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
    fi
    mirror="${DEBIAN_MIRROR:-}"
    if [ -z "$mirror" ]; then
        mirror="$(grep -h -o -E '^(URIs:|deb) +[^ ]+' /etc/apt/sources.list.d/*.sources \
                  /etc/apt/sources.list 2>/dev/null | grep -v security | head -n1 \
                  | awk '{print $2}' || true)"
        mirror="${mirror:-http://deb.debian.org/debian}"
    fi
    rootfs="$(mktemp -d /tmp/tfs-rootfs.XXXXXX)"
    say "debootstrap bookworm from $mirror"
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
        bookworm "$rootfs" "$mirror" >&2
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" -c . | docker import - "$base" >&2
    rm -rf "$rootfs"
    rootfs=""
fi

docker build --force-rm --label "$label=$hash" --build-arg "BASE_IMAGE=$base" -t "$image" "$ctx" >&2
# The previous build of this image, now untagged (only images carrying our label).
docker image prune -f --filter "label=$label" >/dev/null 2>&1 || true
say "built $image ($(docker image inspect --format '{{.Id}}' "$image"))"
echo "$image"
