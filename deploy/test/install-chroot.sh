#!/usr/bin/env bash
# npm run test:deploy: deploy/install.sh as it runs on a board, in a fresh Debian 12 (bookworm)
# root made with debootstrap (minbase + systemd, from Debian's mirror). Root only.
#
#   1. an x64 offline bundle (deploy/bundle.sh), a mesh made with the bundle's own CLI on the host
#   2. install.sh --bundle --token in the chroot: /opt/kizuna, the user, /var/lib/kizuna 0700,
#      /etc/kizuna/kizuna.json, the unit installed, enabled and verified by systemd-analyze
#   3. kizuna --version, and the agent started as the unit starts it (user kizuna, the config)
#      answering `kizuna infer digits` over mqtts with an app token
#   4. install.sh again (an upgrade): node id, credentials and a model file kept; agent answers
#   5. --uninstall (data kept), --uninstall --purge (all gone)
#   6. first boot: firstrun.sh from the boot partition, then kizuna-firstboot.sh with kizuna.json
#      and the bundle on /boot/firmware: installed, joined, token blanked, itself disabled
# The chroot runs in its own mount, network (loopback only) and UTS namespaces: nothing it does
# reaches the host's interfaces, mounts vanish with it.
#
# The debootstrap root is cached as a tarball in $KIZUNA_DEPLOY_CACHE (/tmp/kizuna-deploy-cache);
# KIZUNA_DEPLOY_BUNDLE=FILE reuses an x64 bundle instead of building one.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
CACHE=${KIZUNA_DEPLOY_CACHE:-/tmp/kizuna-deploy-cache}
MIRROR=${KIZUNA_DEBIAN_MIRROR:-http://deb.debian.org/debian}
BASE="$CACHE/debian-bookworm-minbase-systemd-amd64.tar.gz"

if [ "${1:-}" = inside ]; then
  # ---------------------------------------------------------------- in the namespaces
  W=$2
  R="$W/root"
  # shellcheck source=/dev/null
  . "$W/env"
  pass=0 fail=0
  ok() { pass=$((pass + 1)); echo "  ok   $*"; }
  bad() { fail=$((fail + 1)); echo "  FAIL $*"; }
  check() { local what=$1; shift; if "$@" >/dev/null 2>&1; then ok "$what"; else bad "$what"; fi; }
  in_root() { chroot "$R" env -i PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 "$@"; }
  phase_t=$(date +%s.%N)
  phase() { local now; now=$(date +%s.%N); printf '   (%.1f s)\n== %s\n' "$(echo "$now - $phase_t" | bc)" "$*"; phase_t=$now; }
  ip link set lo up
  hostname board-under-test
  mount -t proc proc "$R/proc"
  mount --bind /dev "$R/dev"
  mount -t tmpfs tmpfs "$R/run"          # empty: no /run/systemd/system, as in any chroot
  cp "$BUNDLE" "$R/tmp/kizuna-bundle.tar.gz"
  cp "$ROOT/deploy/test/fixtures/digit-7.png" "$W/admin/mesh-home/ca.pem" "$R/tmp/"
  chmod 0644 "$R/tmp/digit-7.png" "$R/tmp/ca.pem"

  owner() { stat -c %U "$1"; }
  mode_owner() { in_root stat -c %a:%U "$1"; }   # the chroot knows the user kizuna; the host does not
  in_chroot_pids() { local p r; for p in /proc/[0-9]*; do r=$(readlink "$p/root" 2>/dev/null) || continue; [ "$r" = "$R" ] && echo "${p#/proc/}"; done; true; }
  stray_check() { # after SIGTERM the agent must be gone: it drains and exits by itself
    local left
    left=$(in_chroot_pids)
    if [ -z "$left" ]; then ok "$1: the agent stopped on SIGTERM"; else bad "$1: processes left after SIGTERM: $left"; echo "$left" | xargs -r kill -KILL 2>/dev/null || true; fi
  }
  agent_infer() { # start the agent as the unit does, ask it once, stop it
    local label=$1 out
    # Its own session, so the whole chain (chroot, runuser, node) is stopped at once.
    setsid chroot "$R" env -i PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 \
      runuser -u kizuna -- env KIZUNA_CONFIG=/etc/kizuna/kizuna.json NODE_ENV=production /opt/kizuna/bin/kizuna agent > "$W/agent-$label.log" 2>&1 &
    local pid=$! t0 t1
    t0=$(date +%s.%N)
    out=""
    for _ in $(seq 1 60); do
      out=$(in_root kizuna infer digits /tmp/digit-7.png --broker mqtts://127.0.0.1:1883 --token "$APP_TOKEN" --ca /tmp/ca.pem --json --timeout 3000 2>/dev/null) && break
      out=""; sleep 0.5
    done
    t1=$(date +%s.%N)
    kill -TERM -- "-$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    stray_check "$label"
    if echo "$out" | grep -q '"label":"7"'; then ok "$label: the agent (user kizuna, /etc/kizuna/kizuna.json) answered kizuna infer digits over mqtts with 7, $(printf '%.1f' "$(echo "$t1 - $t0" | bc)") s after its start"
    else bad "$label: no answer from the agent (log: $(tail -5 "$W/agent-$label.log" | tr '\n' ' '))"; fi
  }

  phase "install.sh --bundle --token (a board with Debian 12's Node 18 only: the bundle's Node is used)"
  in_root bash /tmp/kizuna-install/install.sh --bundle /tmp/kizuna-bundle.tar.gz --token "$JOIN_TOKEN" --set 'discovery="none"' 2>&1 | sed 's/^/   | /'
  check "/opt/kizuna/app has the compiled agent" test -f "$R/opt/kizuna/app/dist/agent/cli.js"
  check "/opt/kizuna/app has onnxruntime for linux-x64 only" bash -c "test -f '$R/opt/kizuna/app/node_modules/onnxruntime-node/bin/napi-v6/linux/x64/libonnxruntime.so.1' && ! test -e '$R/opt/kizuna/app/node_modules/onnxruntime-node/bin/napi-v6/win32'"
  check "no dev dependencies installed (typescript, fast-check)" bash -c "! test -e '$R/opt/kizuna/app/node_modules/typescript' && ! test -e '$R/opt/kizuna/app/node_modules/fast-check'"
  if [ "$(owner "$R/opt/kizuna/app")" = root ] && ! in_root runuser -u kizuna -- touch /opt/kizuna/app/x 2>/dev/null; then ok "/opt/kizuna is root's, not writable by kizuna"; else bad "/opt/kizuna writable by kizuna"; fi
  check "system user kizuna (nologin shell, home /var/lib/kizuna)" bash -c "grep -q '^kizuna:[^:]*:[0-9]*:[0-9]*:[^:]*:/var/lib/kizuna:/usr/sbin/nologin' '$R/etc/passwd'"
  check "/var/lib/kizuna is 0700 kizuna" test "$(mode_owner /var/lib/kizuna)" = 700:kizuna
  check "joined: mesh-home 0700, board.token and board.key 0600, all kizuna's" test "$(mode_owner /var/lib/kizuna/mesh-home) $(mode_owner /var/lib/kizuna/mesh-home/board.token) $(mode_owner /var/lib/kizuna/mesh-home/board.key)" = "700:kizuna 600:kizuna 600:kizuna"
  check "/etc/kizuna/kizuna.json: mesh home, dataDir, no join token" bash -c "grep -q '\"mesh\": \"home\"' '$R/etc/kizuna/kizuna.json' && grep -q '/var/lib/kizuna' '$R/etc/kizuna/kizuna.json' && ! grep -q kzj1 '$R/etc/kizuna/kizuna.json'"
  check "kizuna.service installed and enabled" bash -c "test -f '$R/etc/systemd/system/kizuna.service' && test -L '$R/etc/systemd/system/multi-user.target.wants/kizuna.service'"
  check "systemd-analyze verify on the installed unit (in the chroot)" in_root systemd-analyze verify /etc/systemd/system/kizuna.service
  v=$(in_root kizuna --version 2>&1 || true)
  if [ "$v" = "$VERSION" ]; then ok "kizuna --version: $v"; else bad "kizuna --version printed: $v"; fi
  agent_infer install

  phase "install.sh again (upgrade in place, the same token as a first-boot file would give)"
  in_root runuser -u kizuna -- sh -c 'mkdir -p /var/lib/kizuna/store && echo model-bytes > /var/lib/kizuna/store/marker'
  before=$(cd "$R/var/lib/kizuna" && sha256sum mesh-home/board.token mesh-home/board.key mesh-home/mesh.pub store/marker)
  cfg_before=$(sha256sum < "$R/etc/kizuna/kizuna.json")
  in_root bash /tmp/kizuna-install/install.sh --bundle /tmp/kizuna-bundle.tar.gz --token "$JOIN_TOKEN" 2>&1 | sed 's/^/   | /'
  after=$(cd "$R/var/lib/kizuna" && sha256sum mesh-home/board.token mesh-home/board.key mesh-home/mesh.pub store/marker)
  if [ "$before" = "$after" ]; then ok "credentials (board token, key, mesh key) and the model store kept"; else bad "the data directory changed: $before / $after"; fi
  check "configuration kept" bash -c "[ \"\$(sha256sum < '$R/etc/kizuna/kizuna.json')\" = '$cfg_before' ]"
  check "no app.new / app.old left behind" bash -c "! ls -d '$R'/opt/kizuna/app.* '$R'/opt/kizuna/node.* 2>/dev/null | grep -q ."
  agent_infer upgrade
  node_id=$(in_root runuser -u kizuna -- /opt/kizuna/node/bin/node -e 'const t=require("fs").readFileSync("/var/lib/kizuna/mesh-home/board.token","utf8").trim().split(".")[1]; console.log(JSON.parse(Buffer.from(t,"base64url")).sub)' 2>/dev/null || echo '?')
  if [ "$node_id" = pi-test ]; then ok "node id still pi-test"; else bad "node id is $node_id"; fi

  phase "install.sh --uninstall, then --uninstall --purge"
  in_root bash /tmp/kizuna-install/install.sh --uninstall 2>&1 | sed 's/^/   | /'
  check "/opt/kizuna, /usr/local/bin/kizuna and the unit removed" bash -c "! test -e '$R/opt/kizuna' && ! test -e '$R/usr/local/bin/kizuna' && ! test -e '$R/etc/systemd/system/kizuna.service' && ! test -e '$R/etc/systemd/system/multi-user.target.wants/kizuna.service'"
  check "data, configuration and user kept" bash -c "test -f '$R/var/lib/kizuna/mesh-home/board.token' && test -f '$R/etc/kizuna/kizuna.json' && grep -q '^kizuna:' '$R/etc/passwd'"
  in_root bash /tmp/kizuna-install/install.sh --uninstall --purge 2>&1 | sed 's/^/   | /'
  check "--purge: data, configuration and user gone" bash -c "! test -e '$R/var/lib/kizuna' && ! test -e '$R/etc/kizuna' && ! grep -q '^kizuna:' '$R/etc/passwd'"

  phase "end"
  left=$(in_chroot_pids)
  [ -z "$left" ] || { echo "stopping what is left in the chroot: $left"; echo "$left" | xargs -r kill -KILL 2>/dev/null || true; sleep 0.5; }
  umount "$R/run" "$R/dev" "$R/proc"
  echo "$pass $fail" > "$W/counts"
  exit 0
fi

# -------------------------------------------------------------------- outside: set up
[ "$(id -u)" = 0 ] || { echo "test:deploy needs root (debootstrap, chroot, namespaces): skipped"; echo "0 passed, 0 failed, 1 skipped"; exit 0; }
t_start=$(date +%s)
need=()
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v bc >/dev/null || need+=(bc)
command -v systemd-nspawn >/dev/null || need+=(systemd-container)
if [ ${#need[@]} -gt 0 ]; then
  echo "== apt-get install ${need[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null; }
fi
W=$(mktemp -d /tmp/kizuna-deploy-test.XXXXXX)
# shellcheck disable=SC2317 # called by the trap
cleanup() {
  # The namespaces' mounts died with them; this only deletes files.
  if grep -q " $W/" /proc/self/mounts; then echo "test:deploy: $W still has mounts; not deleting it" >&2; return; fi
  rm -rf "$W"
}
trap cleanup EXIT

mkdir -p "$CACHE"
if [ ! -f "$BASE" ]; then
  echo "== debootstrap bookworm minbase + systemd (cached in $BASE)"
  t=$(date +%s)
  debootstrap --variant=minbase --include=systemd --arch=amd64 bookworm "$W/base" "$MIRROR" > "$W/debootstrap.log" 2>&1 || { tail -20 "$W/debootstrap.log"; exit 1; }
  tar -C "$W/base" --numeric-owner -czf "$BASE.tmp" . && mv "$BASE.tmp" "$BASE"
  rm -rf "$W/base"
  echo "   debootstrap and cache: $(( $(date +%s) - t )) s, $(du -h "$BASE" | cut -f1)"
fi
echo "== fresh root from $BASE"
t=$(date +%s)
mkdir -p "$W/root"
tar -C "$W/root" --numeric-owner -xzf "$BASE"
mkdir -p "$W/root/tmp/kizuna-install" # install.sh comes from the bundle; this folder is only for the copy below
echo "   $(( $(date +%s) - t )) s"

VERSION=$(node -p "require('$ROOT/package.json').version")
BUNDLE=${KIZUNA_DEPLOY_BUNDLE:-}
if [ -z "$BUNDLE" ]; then
  echo "== x64 bundle (deploy/bundle.sh --arch x64)"
  t=$(date +%s)
  bash "$ROOT/deploy/bundle.sh" --arch x64 --no-pack --out "$W/bundle" | sed 's/^/   /'
  BUNDLE="$W/bundle/kizuna-$VERSION-linux-x64.tar.gz"
  mv "$W/bundle/boot-partition" "$W/boot-partition"
else
  mkdir -p "$W/boot-partition/kizuna"
  cp "$ROOT"/deploy/firstboot/* "$W/boot-partition/kizuna/"
fi

echo "== a mesh, made with the bundle's own CLI on this machine (the hobbyist's laptop)"
mkdir -p "$W/host"
tar -xzf "$BUNDLE" -C "$W/host"
HOST_NODE="$W/host/kizuna/node/bin/node"
[ -x "$HOST_NODE" ] || HOST_NODE=node
kz() { "$HOST_NODE" "$W/host/kizuna/app/dist/agent/cli.js" "$@" --data-dir "$W/admin"; }
kz init --board spare >/dev/null
JOIN_TOKEN=$(kz token board pi-test)
FB_TOKEN=$(kz token board pi-fb)
APP_TOKEN=$(kz token app tester)
# The copy of install.sh that the test runs is the one under test (the bundle's is the same file).
cp "$ROOT/deploy/install.sh" "$ROOT/deploy/kizuna.service" "$W/root/tmp/kizuna-install/"
cat > "$W/env" <<EOF
ROOT='$ROOT'
BUNDLE='$BUNDLE'
VERSION='$VERSION'
JOIN_TOKEN='$JOIN_TOKEN'
FB_TOKEN='$FB_TOKEN'
APP_TOKEN='$APP_TOKEN'
EOF

unshare --mount --net --uts --propagation private bash "$0" inside "$W" || { echo "the chroot phase failed"; echo "0 passed, 1 failed"; exit 1; }
read -r pass fail < "$W/counts"
ok() { pass=$((pass + 1)); echo "  ok   $*"; }
bad() { fail=$((fail + 1)); echo "  FAIL $*"; }
check() { local what=$1; shift; if "$@" >/dev/null 2>&1; then ok "$what"; else bad "$what"; fi; }

# ---------------------------------------------------------------- first boot under real systemd
# The purged root is a board again, booted by systemd as PID 1 in a container (systemd-nspawn,
# its own network namespace with loopback only). Boot 1 is the kernel command line's
# systemd.run=firstrun.sh (Raspberry Pi OS's first-run mechanism), which puts
# kizuna-firstboot.service in place and reboots; boot 2 runs it: install from the bundle on
# /boot/firmware, join, and kizuna.service started by systemd with all its hardening, which a
# self-test unit then checks and asks for an inference.
R="$W/root"
echo "== first boot under systemd (systemd-nspawn): firstrun.sh, reboot, kizuna-firstboot, kizuna.service"
t=$(date +%s)
mkdir -p "$R/boot/firmware/kizuna"
cp "$W/boot-partition/kizuna/"* "$R/boot/firmware/kizuna/"
cp "$BUNDLE" "$R/boot/firmware/kizuna/kizuna-$VERSION-linux-x64.tar.gz"
CMDLINE='console=serial0,115200 root=PARTUUID=1234-02 rootwait quiet'
FIRSTRUN=(systemd.run=/boot/firmware/kizuna/firstrun.sh systemd.run_success_action=reboot systemd.unit=kernel-command-line.target)
echo "$CMDLINE ${FIRSTRUN[*]}" > "$R/boot/firmware/cmdline.txt"
printf '{"joinToken": "%s", "hostname": "pi-fb", "threads": 2, "discovery": "none", "wifi": {"ssid": "Lab", "psk": "secret-psk"}}\n' "$FB_TOKEN" > "$R/boot/firmware/kizuna.json"
# The app's files where any user reads them (kizuna run by root runs as the user kizuna).
mkdir -p "$R/srv/kizuna-test"
cp "$ROOT/deploy/test/fixtures/digit-7.png" "$W/admin/mesh-home/ca.pem" "$R/srv/kizuna-test/"
echo "$APP_TOKEN" > "$R/srv/kizuna-test/app.token"
chmod -R a+rX "$R/srv/kizuna-test"
install -m 0755 "$ROOT/deploy/test/selftest.sh" "$R/usr/local/sbin/kizuna-selftest.sh"
cat > "$R/etc/systemd/system/kizuna-selftest.service" <<'UNIT'
[Unit]
Description=test:deploy self-test of kizuna.service
After=kizuna-firstboot.service kizuna.service
ConditionPathExists=/opt/kizuna/bin/kizuna
[Service]
Type=oneshot
ExecStart=/usr/local/sbin/kizuna-selftest.sh
[Install]
WantedBy=multi-user.target
UNIT
ln -sf /etc/systemd/system/kizuna-selftest.service "$R/etc/systemd/system/multi-user.target.wants/kizuna-selftest.service"
boot() { # boot N ARGS...: one boot of the root, to its poweroff or reboot (the console in a log)
  local n=$1 t0; shift
  t0=$(date +%s)
  timeout 180 systemd-nspawn -q -D "$R" --register=no --keep-unit --private-network --machine="kizuna-test-$$" -b "$@" > "$W/boot-$n.log" 2>&1 || true
  echo "   boot $n: $(( $(date +%s) - t0 )) s"
}
boot 1 "${FIRSTRUN[@]}"
check "boot 1 (systemd.run=firstrun.sh): kizuna-firstboot.service enabled, cmdline.txt restored" \
  bash -c "test -L '$R/etc/systemd/system/multi-user.target.wants/kizuna-firstboot.service' && [ \"\$(cat '$R/boot/firmware/cmdline.txt')\" = '$CMDLINE' ]"
check "boot 1 did not install yet (that is boot 2's work)" test ! -e "$R/opt/kizuna"
boot 2
sed 's/^/   | /' "$R/boot/firmware/kizuna-firstboot.log" 2>/dev/null | grep -v '^   | kizuna-install: on ' || true
check "installed and joined as pi-fb" bash -c "test -x '$R/opt/kizuna/bin/kizuna' && test -f '$R/var/lib/kizuna/mesh-home/board.token'"
check "agent setting (threads 2) in /etc/kizuna/kizuna.json; no token, no Wi-Fi there" bash -c "grep -q '\"threads\": 2' '$R/etc/kizuna/kizuna.json' && ! grep -q -e kzj1 -e wifi '$R/etc/kizuna/kizuna.json'"
check "kizuna.json -> kizuna.json.done with the token and Wi-Fi password blanked" bash -c "! test -e '$R/boot/firmware/kizuna.json' && test -f '$R/boot/firmware/kizuna.json.done' && ! grep -q -e kzj1 -e secret-psk '$R/boot/firmware/kizuna.json.done'"
check "kizuna-firstboot.service disabled itself" test ! -e "$R/etc/systemd/system/multi-user.target.wants/kizuna-firstboot.service"
check "kizuna.service enabled" test -L "$R/etc/systemd/system/multi-user.target.wants/kizuna.service"
if [ -f "$R/root/selftest.txt" ]; then
  while IFS= read -r line; do
    case "$line" in
      "ok "*) ok "systemd: ${line#ok }" ;;
      "FAIL "*) bad "systemd: ${line#FAIL }" ;;
      *) echo "   $line" ;;
    esac
  done < "$R/root/selftest.txt"
else
  bad "the self-test did not run under systemd (console: $(tail -5 "$W/boot-2.log" | tr '\n' ' '))"
fi

echo "$pass passed, $fail failed"
echo "== test:deploy took $(( $(date +%s) - t_start )) s"
[ "$fail" = 0 ]
