#!/usr/bin/env bash
# Kizuna installer for 64-bit Raspberry Pi OS, Debian and Ubuntu (arm64, x86-64). As root:
#
#   install.sh [--bundle FILE.tar.gz|DIR] [--package kizuna-X.tgz] [--token kzj1...] [--mesh NAME]
#              [--config kizuna.json] [--set KEY=JSON]... [--no-start] [--rejoin]
#   install.sh --uninstall [--purge]
#
# Where the agent comes from, first match wins:
#   --bundle       an offline bundle (npm run bundle): compiled agent, its node_modules for this
#                  architecture and Node.js; nothing is downloaded.
#   (none)         the bundle this script sits in (kizuna/deploy/install.sh of an unpacked bundle).
#   --package      a packed tarball (kizuna-X.tgz, also from npm run bundle): `npm ci --omit=dev`
#                  against the npm registry, with Node >= 20 from the distribution.
# Node.js: the bundle's own if it has one; else the distribution's `nodejs` if it is 20 or newer
# (Debian 13, Ubuntu 24.04, Raspberry Pi OS trixie); else (Debian 12 / Pi OS bookworm have 18)
# the npm registry's node-linux-<arch> package fetched with the distribution's npm. See
# docs/DEPLOY.md for NodeSource as the other way.
#
# What it makes: /opt/kizuna/{app,node,bin/kizuna}, /usr/local/bin/kizuna, the system user
# kizuna, /var/lib/kizuna (0700: node id, credentials, models), /etc/kizuna/kizuna.json, and
# /etc/systemd/system/kizuna.service (enabled, started when systemd runs). Running it again
# upgrades in place: the data directory and the configuration are kept, a join token already
# used is not used again (--rejoin to force). --uninstall keeps /var/lib/kizuna and
# /etc/kizuna unless --purge.
#
# --config FILE reads a first-boot kizuna.json: "joinToken", "mesh" and any agent setting
# ("eligible": false, "peers": [...]); "wifi" and "hostname" are the first-boot script's and are
# ignored here.
set -euo pipefail

PREFIX=/opt/kizuna
ETC=/etc/kizuna
DATA=/var/lib/kizuna
UNIT_DIR=/etc/systemd/system
BIN_LINK=/usr/local/bin/kizuna
USER_NAME=kizuna
MIN_NODE=20

BUNDLE="" PACKAGE="" TOKEN="" MESH="" CONFIG_IN="" START=1 REJOIN=0 UNINSTALL=0 PURGE=0
SETS=()
say() { printf 'kizuna-install: %s\n' "$*"; }
die() { printf 'kizuna-install: error: %s\n' "$*" >&2; exit 1; }
usage() { sed -n '2,27p' "$0" | sed 's/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
  case "$1" in
    --bundle) BUNDLE=${2:?}; shift 2 ;;
    --package) PACKAGE=${2:?}; shift 2 ;;
    --token) TOKEN=${2:?}; shift 2 ;;
    --mesh) MESH=${2:?}; shift 2 ;;
    --config) CONFIG_IN=${2:?}; shift 2 ;;
    --set) SETS+=("${2:?}"); shift 2 ;;
    --no-start) START=0; shift ;;
    --rejoin) REJOIN=1; shift ;;
    --uninstall) UNINSTALL=1; shift ;;
    --purge) PURGE=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown option $1 (--help lists them)" ;;
  esac
done

[ "$(id -u)" = 0 ] || die "run as root (sudo $0 ...)"
SYSTEMD_RUNNING=0
[ -d /run/systemd/system ] && SYSTEMD_RUNNING=1
have() { command -v "$1" >/dev/null 2>&1; }
systemctl_q() { have systemctl && systemctl "$@" >/dev/null 2>&1; }

# ------------------------------------------------------------------ uninstall
if [ "$UNINSTALL" = 1 ]; then
  if [ "$SYSTEMD_RUNNING" = 1 ]; then systemctl_q stop kizuna.service || true; fi
  systemctl_q disable kizuna.service kizuna-firstboot.service || true
  rm -f "$UNIT_DIR/kizuna.service" "$UNIT_DIR/kizuna-firstboot.service"
  if [ "$SYSTEMD_RUNNING" = 1 ]; then systemctl_q daemon-reload || true; fi
  [ -L "$BIN_LINK" ] && rm -f "$BIN_LINK"
  rm -rf "$PREFIX" /usr/local/lib/kizuna
  if [ "$PURGE" = 1 ]; then
    rm -rf "$DATA" "$ETC"
    if id "$USER_NAME" >/dev/null 2>&1; then userdel "$USER_NAME" 2>/dev/null || true; fi
    if getent group "$USER_NAME" >/dev/null; then groupdel "$USER_NAME" 2>/dev/null || true; fi
    say "removed Kizuna, its data ($DATA), configuration ($ETC) and user"
  else
    say "removed Kizuna; kept $DATA (node id, credentials, models), $ETC and the user $USER_NAME (--purge removes them)"
  fi
  exit 0
fi

# ------------------------------------------------------------------ platform
case "$(uname -m)" in
  aarch64|arm64) ARCH=arm64 ;;
  x86_64|amd64) ARCH=x64 ;;
  armv7l|armv6l|armhf) die "32-bit ARM is not supported (onnxruntime has no 32-bit ARM build): flash the 64-bit Raspberry Pi OS" ;;
  *) die "unsupported machine $(uname -m): arm64 or x86-64 only" ;;
esac
OS_ID=unknown OS_VERSION=""
if [ -r /etc/os-release ]; then
  # shellcheck disable=SC1091
  OS_ID=$(. /etc/os-release && echo "${ID:-unknown}")
  # shellcheck disable=SC1091
  OS_VERSION=$(. /etc/os-release && echo "${VERSION_ID:-}")
fi
say "on $OS_ID $OS_VERSION, linux-$ARCH"

STAGE=$(mktemp -d /tmp/kizuna-install.XXXXXX)
trap 'rm -rf "$STAGE"' EXIT

# ------------------------------------------------------------------ the agent's source
SELF_DIR=$(cd "$(dirname "$0")" && pwd)
if [ -z "$BUNDLE" ] && [ -z "$PACKAGE" ] && [ -f "$SELF_DIR/../BUNDLE" ] && [ -d "$SELF_DIR/../app" ]; then
  BUNDLE=$(cd "$SELF_DIR/.." && pwd)
fi
SRC=""
if [ -n "$BUNDLE" ]; then
  if [ -f "$BUNDLE" ]; then
    say "unpacking $BUNDLE"
    tar -xzf "$BUNDLE" -C "$STAGE"
    SRC="$STAGE/kizuna"
  else
    SRC=$BUNDLE
  fi
  { [ -f "$SRC/BUNDLE" ] && [ -d "$SRC/app/node_modules" ]; } || die "$BUNDLE is not a Kizuna bundle (no BUNDLE file or app/node_modules)"
  grep -q "\"arch\":\"$ARCH\"" "$SRC/BUNDLE" || die "$BUNDLE is for another architecture ($(cat "$SRC/BUNDLE")); this board is linux-$ARCH"
elif [ -n "$PACKAGE" ]; then
  [ -f "$PACKAGE" ] || die "no such file: $PACKAGE"
else
  die "say where the agent comes from: --bundle kizuna-X-linux-$ARCH.tar.gz (offline) or --package kizuna-X.tgz (docs/DEPLOY.md)"
fi

# ------------------------------------------------------------------ Node.js
node_major() { "$1" -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0; }
NODE_DIR=""   # a private Node under $PREFIX/node, or empty for the system's
SYS_NODE=""
if [ -n "$SRC" ] && [ -x "$SRC/node/bin/node" ]; then
  NODE_DIR="$SRC/node"
  say "Node.js $("$SRC/node/bin/node" --version) from the bundle"
else
  for n in node nodejs; do
    if have "$n" && [ "$(node_major "$(command -v "$n")")" -ge "$MIN_NODE" ]; then SYS_NODE=$(command -v "$n"); break; fi
  done
  if [ -z "$SYS_NODE" ] && have apt-get; then
    candidate=$(apt-cache policy nodejs 2>/dev/null | sed -n 's/^ *Candidate: *\([0-9]*\).*/\1/p' | head -1)
    if [ -n "$candidate" ] && [ "$candidate" != "(none)" ] && [ "${candidate:-0}" -ge "$MIN_NODE" ] 2>/dev/null; then
      say "installing Node.js $candidate from the distribution"
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q nodejs npm >/dev/null
      SYS_NODE=$(command -v node || command -v nodejs)
    fi
  fi
  if [ -z "$SYS_NODE" ]; then
    # Debian 12 / Pi OS bookworm: nodejs 18. The npm registry carries the official binaries as
    # node-linux-<arch> packages; the distribution's npm fetches one (no third-party apt source).
    have npm || { have apt-get && say "installing the distribution's npm to fetch Node.js $MIN_NODE" && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends npm >/dev/null; } || true
    have npm || die "Node.js >= $MIN_NODE is needed and this system has none: use an offline bundle (--bundle, it carries Node), or install Node $MIN_NODE+ (NodeSource, docs/DEPLOY.md) and run this again"
    say "fetching Node.js $MIN_NODE from the npm registry (node-linux-$ARCH)"
    (cd "$STAGE" && npm pack --silent "node-linux-$ARCH@$MIN_NODE" >/dev/null && mkdir nodepkg && tar -xzf node-linux-*.tgz -C nodepkg)
    mkdir -p "$STAGE/node/bin"
    cp "$STAGE/nodepkg/package/bin/node" "$STAGE/node/bin/node"
    chmod 0755 "$STAGE/node/bin/node"
    NODE_DIR="$STAGE/node"
  fi
fi

# ------------------------------------------------------------------ user and directories
if ! id "$USER_NAME" >/dev/null 2>&1; then
  nologin=/usr/sbin/nologin; [ -x "$nologin" ] || nologin=/bin/false
  useradd --system --user-group --home-dir "$DATA" --no-create-home --shell "$nologin" --comment "Kizuna agent" "$USER_NAME"
  say "created system user $USER_NAME"
fi
install -d -m 0700 -o "$USER_NAME" -g "$USER_NAME" "$DATA"
chown "$USER_NAME:$USER_NAME" "$DATA"
chmod 0700 "$DATA"
install -d -m 0755 "$ETC" "$PREFIX" "$PREFIX/bin"

# ------------------------------------------------------------------ the agent, swapped in whole
NEW="$PREFIX/app.new"
rm -rf "$NEW" "$PREFIX/node.new"
if [ -n "$SRC" ]; then
  cp -a "$SRC/app" "$NEW"
else
  mkdir -p "$NEW"
  tar -xzf "$PACKAGE" -C "$NEW" --strip-components=1
  node_for_npm=${SYS_NODE:-$NODE_DIR/bin/node}
  npm_bin=$(command -v npm) || die "npm is needed for --package (apt-get install npm), or use --bundle"
  say "npm ci --omit=dev (production dependencies for linux-$ARCH)"
  # --ignore-scripts: onnxruntime-node's postinstall would download CUDA providers; its CPU
  # binaries are inside the package. Nothing else needs a script on a board.
  (cd "$NEW" && PATH="$(dirname "$node_for_npm"):$PATH" "$npm_bin" ci --omit=dev --ignore-scripts --no-audit --no-fund --loglevel=error)
fi
chown -R root:root "$NEW"
chmod -R go-w "$NEW"
if [ -n "$NODE_DIR" ]; then
  cp -a "$NODE_DIR" "$PREFIX/node.new"
  chown -R root:root "$PREFIX/node.new"
fi
# Swap: a stopped service never sees half a tree. The data directory is not touched.
if [ "$SYSTEMD_RUNNING" = 1 ] && systemctl_q is-active kizuna.service; then WAS_ACTIVE=1; else WAS_ACTIVE=0; fi
[ "$WAS_ACTIVE" = 1 ] && systemctl stop kizuna.service
rm -rf "$PREFIX/app.old" "$PREFIX/node.old"
[ -d "$PREFIX/app" ] && mv "$PREFIX/app" "$PREFIX/app.old"
mv "$NEW" "$PREFIX/app"
if [ -d "$PREFIX/node.new" ]; then
  [ -d "$PREFIX/node" ] && mv "$PREFIX/node" "$PREFIX/node.old"
  mv "$PREFIX/node.new" "$PREFIX/node"
  NODE="$PREFIX/node/bin/node"
else
  rm -rf "$PREFIX/node"
  NODE=$SYS_NODE
fi
rm -rf "$PREFIX/app.old" "$PREFIX/node.old"

# The command: runs as the kizuna user when called by root, so files in the data directory
# keep their owner (sudo kizuna token board pi-b).
cat > "$PREFIX/bin/kizuna" <<EOF
#!/bin/sh
# Written by deploy/install.sh.
: "\${KIZUNA_CONFIG:=$ETC/kizuna.json}"
export KIZUNA_CONFIG
if [ "\$(id -u)" = 0 ] && [ -z "\${KIZUNA_AS_ROOT:-}" ]; then
  exec runuser -u $USER_NAME -- env KIZUNA_CONFIG="\$KIZUNA_CONFIG" $NODE $PREFIX/app/dist/agent/cli.js "\$@"
fi
exec $NODE $PREFIX/app/dist/agent/cli.js "\$@"
EOF
chmod 0755 "$PREFIX/bin/kizuna"
ln -sfn "$PREFIX/bin/kizuna" "$BIN_LINK"
VERSION=$("$NODE" -p "require('$PREFIX/app/package.json').version")
say "agent $VERSION in $PREFIX/app, Node $("$NODE" --version) ($NODE)"

# ------------------------------------------------------------------ configuration
# The token's mesh name is the mesh (a board joins the mesh its token was signed for).
if [ -z "$TOKEN" ] && [ -n "$CONFIG_IN" ]; then
  [ -r "$CONFIG_IN" ] || die "cannot read $CONFIG_IN"
  TOKEN=$("$NODE" -e 'const c = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")); process.stdout.write(typeof c.joinToken === "string" ? c.joinToken : "")' "$CONFIG_IN")
fi
TOKEN_MESH=""
if [ -n "$TOKEN" ]; then
  TOKEN_MESH=$("$NODE" -e '
    const t = process.argv[1];
    try { const j = JSON.parse(Buffer.from(t.slice(5), "base64url").toString("utf8")); if (!t.startsWith("kzj1.") || typeof j.mesh !== "string") throw 0; process.stdout.write(j.mesh); }
    catch { process.stderr.write("not a join token (kzj1...)\n"); process.exit(1); }' "$TOKEN") || die "--token: not a join token (kzj1..., from kizuna token board NAME)"
  [ -z "$MESH" ] || [ "$MESH" = "$TOKEN_MESH" ] || die "--mesh $MESH, but the token is for mesh $TOKEN_MESH"
fi
# Merge: the existing file < the first-boot file < --mesh / the token's mesh < --set. Keys the
# agent does not know are refused by its own schema below, with the file and key named.
CONF="$ETC/kizuna.json"
"$NODE" - "$CONF" "$CONFIG_IN" "${MESH:-$TOKEN_MESH}" "$DATA" "${SETS[@]}" <<'EOF'
const fs = require('fs');
const [conf, firstBoot, mesh, dataDir, ...sets] = process.argv.slice(2);
const read = (f) => (f && fs.existsSync(f) ? JSON.parse(fs.readFileSync(f, 'utf8')) : {});
const out = { dataDir, ...read(conf) };
const FIRST_BOOT_ONLY = ['joinToken', 'wifi', 'hostname', 'bundleUrl', 'package'];
for (const [k, v] of Object.entries(read(firstBoot))) if (!FIRST_BOOT_ONLY.includes(k)) out[k] = v;
if (mesh) out.mesh = mesh;
for (const s of sets) {
  const i = s.indexOf('=');
  if (i < 1) throw new Error(`--set ${s}: KEY=VALUE`);
  const raw = s.slice(i + 1);
  let v; try { v = JSON.parse(raw); } catch { v = raw; }
  out[s.slice(0, i)] = v;
}
delete out.joinToken; // a secret, used once by kizuna join; never kept in /etc
fs.writeFileSync(conf + '.tmp', JSON.stringify(out, null, 2) + '\n', { mode: 0o644 });
fs.renameSync(conf + '.tmp', conf);
EOF
chmod 0644 "$CONF"
"$NODE" --input-type=module -e "
  const { loadConfig } = await import('$PREFIX/app/dist/agent/config.js');
  try { loadConfig({ file: '$CONF', env: {} }); } catch (e) { console.error(e.message); process.exit(1); }
" || die "$CONF is not a valid agent configuration (fix it, then run this again)"
MESH_NOW=$("$NODE" -p "JSON.parse(require('fs').readFileSync('$CONF','utf8')).mesh || 'home'")
say "configuration $CONF (mesh $MESH_NOW)"

# ------------------------------------------------------------------ join
CRED_DIR="$DATA/mesh-$MESH_NOW"
if [ -n "$TOKEN" ]; then
  if [ -f "$CRED_DIR/board.token" ] && [ "$REJOIN" = 0 ]; then
    say "already a board of mesh $MESH_NOW ($CRED_DIR): the token is not used again (--rejoin to replace the credentials)"
  else
    runuser -u "$USER_NAME" -- env KIZUNA_CONFIG="$CONF" "$NODE" "$PREFIX/app/dist/agent/cli.js" join "$TOKEN" | sed 's/^/kizuna-install: /'
  fi
fi
[ -f "$CRED_DIR/board.token" ] || say "no credentials for mesh $MESH_NOW yet: the agent serves on loopback only until you run: sudo kizuna join TOKEN (or kizuna init on the first board)"

# ------------------------------------------------------------------ the service
UNIT_SRC="$SELF_DIR/kizuna.service"
[ -n "$SRC" ] && [ -f "$SRC/deploy/kizuna.service" ] && UNIT_SRC="$SRC/deploy/kizuna.service"
install -m 0644 "$UNIT_SRC" "$UNIT_DIR/kizuna.service"
if have systemctl; then
  [ "$SYSTEMD_RUNNING" = 1 ] && systemctl daemon-reload
  systemctl enable kizuna.service >/dev/null 2>&1 || say "warning: systemctl enable kizuna.service failed"
  if [ "$SYSTEMD_RUNNING" = 1 ] && { [ "$START" = 1 ] || [ "$WAS_ACTIVE" = 1 ]; }; then
    systemctl restart kizuna.service
    say "kizuna.service (re)started: journalctl -u kizuna -f"
  else
    say "kizuna.service enabled (not started: $( [ "$SYSTEMD_RUNNING" = 1 ] && echo '--no-start' || echo 'systemd is not running here'))"
  fi
else
  say "no systemctl: start the agent with: runuser -u $USER_NAME -- $PREFIX/bin/kizuna agent"
fi
NODE_ID=$(cat "$DATA/node-id" 2>/dev/null || true)
say "done: Kizuna $VERSION${NODE_ID:+, node $NODE_ID}. See the mesh with: kizuna status"
