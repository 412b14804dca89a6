#!/usr/bin/env bash
# npm run bundle [-- --arch arm64|x64 ...] [--no-node] [--no-pack] [--node-version 20.20.2] [--out DIR]
#
# Also dist-bundle/kizuna-<version>.tgz: the compiled agent packed by npm with the lock file as
# npm-shrinkwrap.json, for install.sh --package on a board with Node 20+ and the npm registry.
# Offline bundles, one per architecture: dist-bundle/kizuna-<version>-linux-<arch>.tar.gz holds
#   kizuna/app/      the compiled agent (dist/, models/builtin, models/catalog, package.json) and
#                    its production node_modules for that architecture (onnxruntime-node and sharp
#                    binaries for linux-<arch>, glibc)
#   kizuna/node/     Node.js for that architecture (the npm registry's node-linux-<arch> package),
#                    so a board whose distribution has Node 18 (Debian 12) needs nothing else
#   kizuna/deploy/   install.sh, the systemd units, the first-boot script
#   kizuna/BUNDLE    what is inside (JSON)
# Unpack it anywhere and run `sudo kizuna/deploy/install.sh`, or give the tarball to install.sh
# (--bundle FILE), or drop it on a board's boot partition for the first boot (docs/DEPLOY.md).
#
# Needs the project's dev dependencies installed (npm install: TypeScript) and the npm registry
# (or a warm npm cache). It never touches ./dist: the agent is compiled into a staging folder.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT="$ROOT/dist-bundle"
ARCHES=()
WITH_NODE=1
WITH_PACK=1
NODE_VERSION=$(node -p 'process.versions.node') # the Node the project was built and tested with

while [ $# -gt 0 ]; do
  case "$1" in
    --arch) ARCHES+=("$2"); shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --no-node) WITH_NODE=0; shift ;;
    --no-pack) WITH_PACK=0; shift ;;
    --node-version) NODE_VERSION=$2; shift 2 ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    *) echo "bundle: unknown option $1" >&2; exit 2 ;;
  esac
done
[ ${#ARCHES[@]} -gt 0 ] || ARCHES=(arm64 x64)
for a in "${ARCHES[@]}"; do
  case "$a" in arm64|x64) ;; *) echo "bundle: --arch is arm64 or x64 (onnxruntime-node has no 32-bit ARM build), not $a" >&2; exit 2 ;; esac
done

VERSION=$(node -p "require('$ROOT/package.json').version")
COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
WORK=$(mktemp -d /tmp/kizuna-bundle.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$OUT"
export npm_config_audit=false npm_config_fund=false npm_config_update_notifier=false
started=$(date +%s)

echo "== compile (deploy/tsconfig.bundle.json -> staging; ./dist untouched)"
mkdir -p "$WORK/app"
[ -x "$ROOT/node_modules/.bin/tsc" ] || { echo "bundle: TypeScript is not installed: run npm install first" >&2; exit 1; }
(cd "$ROOT" && node_modules/.bin/tsc -p deploy/tsconfig.bundle.json --outDir "$WORK/app/dist")
mkdir -p "$WORK/app/models/builtin" "$WORK/app/models/catalog"
cp "$ROOT"/models/builtin/*.onnx "$ROOT"/models/builtin/*.json "$WORK/app/models/builtin/"
cp "$ROOT"/models/catalog/*.json "$WORK/app/models/catalog/"
cp "$ROOT/package.json" "$ROOT/package-lock.json" "$ROOT/.npmrc" "$WORK/app/"
[ -f "$ROOT/LICENSE" ] && cp "$ROOT/LICENSE" "$WORK/app/"

if [ "$WITH_PACK" = 1 ]; then
  echo "== packed tarball (for install.sh --package: npm ci --omit=dev on the board)"
  mkdir -p "$WORK/pack"
  cp -a "$WORK/app/." "$WORK/pack/"
  # The lock as npm-shrinkwrap.json, listed in "files" of this copy (npm 11 leaves it out
  # otherwise): the board gets the versions that were tested.
  cp "$ROOT/package-lock.json" "$WORK/pack/npm-shrinkwrap.json"
  node -e '
    const fs = require("fs"); const f = process.argv[1]; const p = JSON.parse(fs.readFileSync(f, "utf8"));
    p.files = [...(p.files || []), "npm-shrinkwrap.json"]; fs.writeFileSync(f, JSON.stringify(p, null, 2) + "\n");
  ' "$WORK/pack/package.json"
  (cd "$WORK/pack" && npm pack --ignore-scripts --silent --pack-destination "$OUT" >/dev/null)
  echo "   $OUT/kizuna-$VERSION.tgz: $(du -h "$OUT/kizuna-$VERSION.tgz" | cut -f1)"
fi

for arch in "${ARCHES[@]}"; do
  echo "== linux-$arch: production node_modules"
  stage="$WORK/$arch/kizuna"
  mkdir -p "$stage"
  cp -a "$WORK/app" "$stage/app"
  # --ignore-scripts: onnxruntime-node's postinstall would download CUDA providers (the trap in
  # FIELD-NOTES; the CPU binaries are in the package) and the project's own prepare would build
  # with dev tools that --omit=dev leaves out. sharp needs no script: its binaries come as the
  # optional @img/sharp-linux-<arch> packages that --cpu/--os/--libc select.
  (cd "$stage/app" && npm ci --omit=dev --ignore-scripts --cpu="$arch" --os=linux --libc=glibc --loglevel=error)
  # onnxruntime-node ships every platform's binaries (288 MB); keep linux-<arch> only.
  ort="$stage/app/node_modules/onnxruntime-node/bin/napi-v6"
  find "$ort" -mindepth 1 -maxdepth 1 ! -name linux -exec rm -rf {} +
  find "$ort/linux" -mindepth 1 -maxdepth 1 ! -name "$arch" -exec rm -rf {} +
  [ -f "$ort/linux/$arch/libonnxruntime.so.1" ] || { echo "bundle: onnxruntime-node has no linux-$arch binary" >&2; exit 1; }
  sharp_pkg="$stage/app/node_modules/@img/sharp-linux-$arch"
  [ -d "$sharp_pkg" ] || { echo "bundle: npm did not install @img/sharp-linux-$arch" >&2; exit 1; }
  # The installed package.json: no scripts, no dev dependencies (nothing on a board builds).
  node -e '
    const fs = require("fs"); const f = process.argv[1]; const p = JSON.parse(fs.readFileSync(f, "utf8"));
    delete p.scripts; delete p.devDependencies; fs.writeFileSync(f, JSON.stringify(p, null, 2) + "\n");
  ' "$stage/app/package.json"
  rm -f "$stage/app/.npmrc"

  node_note=null
  if [ "$WITH_NODE" = 1 ]; then
    echo "== linux-$arch: Node.js $NODE_VERSION (npm registry package node-linux-$arch)"
    mkdir -p "$WORK/dl-$arch"
    (cd "$WORK/dl-$arch" && npm pack --silent "node-linux-$arch@$NODE_VERSION" >/dev/null && tar xzf ./*.tgz)
    mkdir -p "$stage/node/bin"
    cp "$WORK/dl-$arch/package/bin/node" "$stage/node/bin/node"
    chmod 0755 "$stage/node/bin/node"
    for f in LICENSE README.md; do [ -f "$WORK/dl-$arch/package/$f" ] && cp "$WORK/dl-$arch/package/$f" "$stage/node/"; done
    node_note="\"$NODE_VERSION\""
  fi

  mkdir -p "$stage/deploy/firstboot"
  cp "$ROOT/deploy/install.sh" "$ROOT/deploy/kizuna.service" "$stage/deploy/"
  cp "$ROOT"/deploy/firstboot/* "$stage/deploy/firstboot/"
  chmod 0755 "$stage/deploy/install.sh" "$stage/deploy/firstboot/"*.sh
  cat > "$stage/BUNDLE" <<EOF
{"name":"kizuna","version":"$VERSION","commit":"$COMMIT","arch":"$arch","os":"linux","libc":"glibc","node":$node_note,"built":"$(date -u +%Y-%m-%dT%H:%M:%SZ)"}
EOF
  file="$OUT/kizuna-$VERSION-linux-$arch.tar.gz"
  tar -C "$WORK/$arch" --owner=0 --group=0 -czf "$file.tmp" kizuna
  mv "$file.tmp" "$file"
  echo "   $(du -sh "$stage/app/node_modules" | cut -f1) node_modules, $( [ -d "$stage/node" ] && du -sh "$stage/node" | cut -f1 || echo 'no') node; unpacked $(du -sh "$stage" | cut -f1)"
  echo "   $file: $(du -h "$file" | cut -f1) ($(stat -c %s "$file") bytes)"
done
# What goes on a board's boot partition besides a bundle and kizuna.json (docs/DEPLOY.md).
rm -rf "$OUT/boot-partition"
mkdir -p "$OUT/boot-partition/kizuna"
cp "$ROOT"/deploy/firstboot/* "$OUT/boot-partition/kizuna/"
echo "== $OUT/boot-partition/kizuna: the first-boot files to copy to a board's boot partition, with a bundle"
echo "== bundles done in $(( $(date +%s) - started )) s"
