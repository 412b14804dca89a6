#!/usr/bin/env bash
# shellcheck disable=SC2015 # ok and bad always succeed: A && ok || bad is an if-else here
# Fast checks of deploy/ that need no board, no chroot and no container engine (CI runs them):
#   - shellcheck on every script (Debian's shellcheck)
#   - systemd-analyze verify on both units (ExecStart pointed at a stub: the real path exists
#     only once installed; test:deploy verifies the installed unit in a Debian root too)
#   - the cloud-init user-data against cloud-init's own schema (Debian 12's cloud-init, unpacked
#     with dpkg -x, never installed on this machine)
#   - compose.yaml parsed and validated by Debian's docker-compose (`config` needs no engine)
#   - the Containerfile's COPY sources exist; install.sh and bundle.sh answer --help
# Installs what is missing with apt-get (root); without root, skips what it lacks and says so.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
pass=0 fail=0 skip=0
ok() { pass=$((pass + 1)); echo "  ok   $*"; }
bad() { fail=$((fail + 1)); echo "  FAIL $*"; }
skipped() { skip=$((skip + 1)); echo "  skip $*"; }
W=$(mktemp -d /tmp/kizuna-deploy-static.XXXXXX)
trap 'rm -rf "$W"' EXIT

want=()
command -v shellcheck >/dev/null || want+=(shellcheck)
command -v systemd-analyze >/dev/null || want+=(systemd)
command -v docker-compose >/dev/null || want+=(docker-compose)
/usr/bin/python3 -c 'import yaml, jsonschema, jinja2, configobj, jsonpatch' 2>/dev/null || want+=(python3-yaml python3-jsonschema python3-jinja2 python3-configobj python3-jsonpatch)
if [ ${#want[@]} -gt 0 ] && [ "$(id -u)" = 0 ]; then
  echo "== apt-get install ${want[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq --no-install-recommends "${want[@]}" >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${want[@]}" >/dev/null; }
fi

echo "== shellcheck"
scripts=(deploy/*.sh deploy/firstboot/*.sh deploy/test/*.sh)
if command -v shellcheck >/dev/null; then
  for f in "${scripts[@]}"; do
    if out=$(shellcheck "$f" 2>&1); then ok "shellcheck $f"; else bad "shellcheck $f"; echo "$out" | head -20; fi
  done
else skipped "shellcheck not installed"; fi
for f in "${scripts[@]}"; do bash -n "$f" || bad "bash -n $f"; done

echo "== systemd-analyze verify"
printf '#!/bin/sh\n' > "$W/stub"; chmod +x "$W/stub"
for unit in deploy/kizuna.service deploy/firstboot/kizuna-firstboot.service; do
  sed -E "s|^ExecStart=[^ ]+|ExecStart=$W/stub|" "$unit" > "$W/$(basename "$unit")"
  if out=$(systemd-analyze verify "$W/$(basename "$unit")" 2>&1) && [ -z "$out" ]; then ok "systemd-analyze verify $unit"
  else bad "systemd-analyze verify $unit"; echo "$out"; fi
done
for key in NoNewPrivileges=yes ProtectSystem=strict ProtectHome=yes PrivateTmp=yes ReadWritePaths=/var/lib/kizuna CapabilityBoundingSet= Restart=on-failure User=kizuna; do
  grep -qx "$key" deploy/kizuna.service || bad "kizuna.service lacks $key"
done
[ "$(grep -c '^ReadWritePaths=' deploy/kizuna.service)" = 1 ] && ok "kizuna.service: the hardening settings are there, /var/lib/kizuna the only writable path" || bad "more than one ReadWritePaths"

echo "== cloud-init user-data (cloud-init's own schema)"
if (cd "$W" && apt-get download cloud-init >/dev/null 2>&1) && dpkg -x "$W"/cloud-init_*.deb "$W/ci"; then
  if out=$(PYTHONPATH="$W/ci/usr/lib/python3/dist-packages" /usr/bin/python3 -c '
import sys
from cloudinit.config.schema import validate_cloudconfig_file, get_schema
validate_cloudconfig_file(sys.argv[1], get_schema(), annotate=False)' deploy/cloud-init/user-data.yaml 2>&1); then
    ok "deploy/cloud-init/user-data.yaml valid for cloud-init $(basename "$W"/cloud-init_*.deb .deb | cut -d_ -f2)"
  else bad "deploy/cloud-init/user-data.yaml"; echo "$out" | tail -3; fi
  head -1 deploy/cloud-init/user-data.yaml | grep -qx '#cloud-config' && ok "user-data starts with #cloud-config" || bad "user-data must start with #cloud-config"
else skipped "cloud-init's package could not be fetched"; fi

echo "== compose.yaml (docker-compose config: no engine needed)"
if command -v docker-compose >/dev/null; then
  if out=$(docker-compose -f deploy/compose.yaml config 2>&1); then
    n=$(echo "$out" | grep -cE '^  board-[0-9]+:$' || true)
    [ "$n" = 3 ] && ok "deploy/compose.yaml valid, 3 agents" || bad "compose.yaml has $n agents, not 3"
  else bad "deploy/compose.yaml"; echo "$out" | head; fi
else skipped "docker-compose not installed"; fi

echo "== Containerfile"
missing=""
while read -r src; do [ -e "$src" ] || missing="$missing $src"; done < <(grep '^COPY ' deploy/Containerfile | grep -v -- '--from=' | sed 's/^COPY //' | awk '{ for (i = 1; i < NF; i++) print $i }')
[ -z "$missing" ] && ok "every COPY source of deploy/Containerfile exists" || bad "Containerfile copies what is not there:$missing"
grep -q '^USER node' deploy/Containerfile && grep -q '^HEALTHCHECK' deploy/Containerfile && ok "Containerfile: non-root user, healthcheck" || bad "Containerfile: no USER or HEALTHCHECK"
bash deploy/install.sh --help | grep -q -- --uninstall && ok "install.sh --help" || bad "install.sh --help"
bash deploy/bundle.sh --help | grep -q -- --arch && ok "bundle.sh --help" || bad "bundle.sh --help"

echo "$pass passed, $fail failed, $skip skipped"
[ "$fail" = 0 ]
