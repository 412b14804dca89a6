#!/usr/bin/env bash
# Kizuna first boot: run once by kizuna-firstboot.service (or by cloud-init, or by hand).
#
# Reads kizuna.json from the boot partition (/boot/firmware on Raspberry Pi OS bookworm and later,
# /boot before), sets up Wi-Fi with NetworkManager when it names one, finds an offline bundle
# (kizuna-*-linux-<arch>.tar.gz on the boot partition, in its kizuna/ folder, or on a USB stick),
# or downloads "bundleUrl", installs it with install.sh, joins the mesh with "joinToken", then
# blanks the secrets in kizuna.json (renamed kizuna.json.done) and disables itself. Everything it
# does goes to the journal and to kizuna-firstboot.log on the boot partition, readable from a
# laptop if something went wrong.
#
# kizuna.json: {"joinToken": "kzj1...", "mesh": "home", "hostname": "pi-b",
#               "wifi": {"ssid": "...", "psk": "...", "country": "GB"},
#               "eligible": false, ...any other agent setting}
#
# Options: --boot DIR (where kizuna.json is, e.g. /run/kizuna from cloud-init; the bundle is also
# looked for in /boot/firmware and /boot), --usb-glob 'GLOB' (block devices to look at).
set -euo pipefail

BOOT=""
USB_GLOB="/dev/sd[a-z][0-9] /dev/sd[a-z]"
while [ $# -gt 0 ]; do
  case "$1" in
    --boot) BOOT=$2; shift 2 ;;
    --usb-glob) USB_GLOB=$2; shift 2 ;;
    *) echo "kizuna-firstboot: unknown option $1" >&2; exit 2 ;;
  esac
done
if [ -z "$BOOT" ]; then
  for d in /boot/firmware /boot; do
    if [ -f "$d/kizuna.json" ] || [ -f "$d/kizuna/kizuna.json" ]; then BOOT=$d; break; fi
  done
fi
[ -n "$BOOT" ] || { echo "kizuna-firstboot: no kizuna.json in /boot/firmware or /boot: nothing to do"; exit 0; }
CONF="$BOOT/kizuna.json"
[ -f "$CONF" ] || CONF="$BOOT/kizuna/kizuna.json"
LOG="$BOOT/kizuna-firstboot.log"
exec > >(tee -a "$LOG") 2>&1
echo "kizuna-firstboot: $(date -u +%FT%TZ) reading $CONF"

case "$(uname -m)" in aarch64|arm64) ARCH=arm64 ;; x86_64|amd64) ARCH=x64 ;; *) ARCH=unsupported ;; esac
WORK=$(mktemp -d /tmp/kizuna-firstboot.XXXXXX)
MOUNTED=""
cleanup() { [ -n "$MOUNTED" ] && umount "$MOUNTED" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT

# ---------------------------------------------------------------- the bundle (it brings Node)
BUNDLE=""
find_bundle() { # the last match in a folder (names sort by version)
  local dir=$1 f
  [ -d "$dir" ] || return 1
  for f in "$dir"/kizuna-*-linux-"$ARCH".tar.gz "$dir"/kizuna/kizuna-*-linux-"$ARCH".tar.gz; do
    [ -f "$f" ] && BUNDLE=$f
  done
  [ -n "$BUNDLE" ]
}
for d in "$BOOT" /boot/firmware /boot; do find_bundle "$d" && break; done
if [ -z "$BUNDLE" ]; then
  # A USB stick: mounted read-only for the time of the install.
  for dev in $USB_GLOB; do
    [ -b "$dev" ] || continue
    mkdir -p "$WORK/usb"
    if mount -o ro "$dev" "$WORK/usb" 2>/dev/null; then
      MOUNTED="$WORK/usb"
      if find_bundle "$WORK/usb"; then echo "kizuna-firstboot: bundle on $dev"; break; fi
      umount "$WORK/usb"; MOUNTED=""
    fi
  done
fi

# A JSON reader: the bundle's Node, else the system's node or python3 (all stock images have one).
JSON_NODE=""
if [ -n "$BUNDLE" ]; then
  tar -xzf "$BUNDLE" -C "$WORK" kizuna/node/bin/node 2>/dev/null && JSON_NODE="$WORK/kizuna/node/bin/node"
fi
[ -z "$JSON_NODE" ] && command -v node >/dev/null 2>&1 && JSON_NODE=$(command -v node)
get() { # get KEY.SUBKEY -> the string, or empty
  if [ -n "$JSON_NODE" ]; then
    "$JSON_NODE" -e 'let v = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")); for (const k of process.argv[2].split(".")) v = v == null ? undefined : v[k]; if (v != null && typeof v !== "object") process.stdout.write(String(v));' "$CONF" "$1"
  elif command -v python3 >/dev/null 2>&1; then
    python3 -c 'import json,sys
v=json.load(open(sys.argv[1]))
for k in sys.argv[2].split("."): v=v.get(k) if isinstance(v,dict) else None
sys.stdout.write("" if v is None or isinstance(v,(dict,list)) else (str(v).lower() if isinstance(v,bool) else str(v)))' "$CONF" "$1"
  else
    echo "kizuna-firstboot: no node or python3 to read $CONF" >&2; return 1
  fi
}

# ---------------------------------------------------------------- host name and Wi-Fi
HOSTNAME_WANTED=$(get hostname)
if [ -n "$HOSTNAME_WANTED" ] && [ "$HOSTNAME_WANTED" != "$(hostname)" ]; then
  echo "kizuna-firstboot: host name $HOSTNAME_WANTED"
  if command -v hostnamectl >/dev/null 2>&1 && hostnamectl set-hostname "$HOSTNAME_WANTED" 2>/dev/null; then :; else
    echo "$HOSTNAME_WANTED" > /etc/hostname; hostname "$HOSTNAME_WANTED" 2>/dev/null || true
  fi
  sed -i "s/^127\.0\.1\.1.*/127.0.1.1\t$HOSTNAME_WANTED/" /etc/hosts 2>/dev/null || true
fi
SSID=$(get wifi.ssid)
if [ -n "$SSID" ]; then
  PSK=$(get wifi.psk)
  COUNTRY=$(get wifi.country)
  if command -v nmcli >/dev/null 2>&1; then
    echo "kizuna-firstboot: Wi-Fi $SSID (NetworkManager)"
    if [ -n "$COUNTRY" ]; then
      if command -v raspi-config >/dev/null 2>&1; then raspi-config nonint do_wifi_country "$COUNTRY" || true
      elif command -v iw >/dev/null 2>&1; then iw reg set "$COUNTRY" || true; fi
    fi
    if command -v rfkill >/dev/null 2>&1; then rfkill unblock wifi || true; fi
    nmcli connection delete kizuna-wifi >/dev/null 2>&1 || true
    if [ -n "$PSK" ]; then
      nmcli connection add type wifi con-name kizuna-wifi ifname '*' ssid "$SSID" connection.autoconnect yes wifi-sec.key-mgmt wpa-psk wifi-sec.psk "$PSK" >/dev/null
    else
      nmcli connection add type wifi con-name kizuna-wifi ifname '*' ssid "$SSID" connection.autoconnect yes >/dev/null
    fi
    for _ in 1 2 3 4 5 6; do nmcli connection up kizuna-wifi >/dev/null 2>&1 && break; sleep 5; done
    nm-online -q -t 60 2>/dev/null || true
  else
    echo "kizuna-firstboot: warning: no nmcli (Raspberry Pi OS before bookworm?): set Wi-Fi up with Raspberry Pi Imager instead"
  fi
fi

# ---------------------------------------------------------------- download when asked
if [ -z "$BUNDLE" ]; then
  URL=$(get bundleUrl | sed "s/{arch}/$ARCH/g")
  if [ -n "$URL" ]; then
    echo "kizuna-firstboot: downloading $URL"
    if command -v nm-online >/dev/null 2>&1; then nm-online -q -t 120 || true; fi
    if command -v curl >/dev/null 2>&1; then curl -fsSL --retry 5 --retry-delay 5 -o "$WORK/bundle.tar.gz" "$URL"
    else wget -q -O "$WORK/bundle.tar.gz" "$URL"; fi
    BUNDLE="$WORK/bundle.tar.gz"
  fi
fi
[ -n "$BUNDLE" ] || { echo "kizuna-firstboot: no kizuna-*-linux-$ARCH.tar.gz on $BOOT or a USB stick, and no bundleUrl in $CONF"; exit 1; }

# ---------------------------------------------------------------- install and join
echo "kizuna-firstboot: installing $BUNDLE"
mkdir -p "$WORK/b"
tar -xzf "$BUNDLE" -C "$WORK/b"
bash "$WORK/b/kizuna/deploy/install.sh" --bundle "$WORK/b/kizuna" --config "$CONF"

# ---------------------------------------------------------------- done: no secrets left behind
# The boot partition is FAT: anyone with the card reads it. The token was used; blank it.
"$WORK/b/kizuna/node/bin/node" -e '
  const fs = require("fs"); const f = process.argv[1]; const c = JSON.parse(fs.readFileSync(f, "utf8"));
  if (c.joinToken) c.joinToken = "(used by kizuna-firstboot)";
  if (c.wifi && c.wifi.psk) c.wifi.psk = "(stored in NetworkManager)";
  fs.writeFileSync(f + ".done", JSON.stringify(c, null, 2) + "\n"); fs.unlinkSync(f);
' "$CONF" 2>/dev/null || mv "$CONF" "$CONF.done"
if command -v systemctl >/dev/null 2>&1; then systemctl disable kizuna-firstboot.service >/dev/null 2>&1 || true; fi
echo "kizuna-firstboot: done; $CONF is now $CONF.done (secrets blanked)"
