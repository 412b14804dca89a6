#!/bin/bash
# Kizuna on a freshly flashed Raspberry Pi OS, from the boot partition (docs/DEPLOY.md).
#
# Either the kernel runs it once, before the first normal boot, because cmdline.txt ends with
#   systemd.run=/boot/firmware/kizuna/firstrun.sh systemd.run_success_action=reboot systemd.unit=kernel-command-line.target
# (then it takes those words out of cmdline.txt again), or another firstrun.sh (Raspberry Pi
# Imager's, when you set a user, Wi-Fi or SSH in it) calls it with --chained before its own end.
# It only puts kizuna-firstboot.service in place: the install itself runs at the next boot, when
# the system is up (kizuna-firstboot.sh).
set -u
HERE=$(cd "$(dirname "$0")" && pwd)          # /boot/firmware/kizuna
BOOT=$(dirname "$HERE")                      # /boot/firmware (bookworm and later) or /boot
install -D -m 0755 "$HERE/kizuna-firstboot.sh" /usr/local/lib/kizuna/kizuna-firstboot.sh
install -D -m 0644 "$HERE/kizuna-firstboot.service" /etc/systemd/system/kizuna-firstboot.service
mkdir -p /etc/systemd/system/multi-user.target.wants
ln -sf /etc/systemd/system/kizuna-firstboot.service /etc/systemd/system/multi-user.target.wants/kizuna-firstboot.service
if [ "${1:-}" != "--chained" ] && [ -f "$BOOT/cmdline.txt" ]; then
  sed -i -e 's| systemd.run=[^ ]*kizuna/firstrun.sh||' -e 's| systemd.run_success_action=[^ ]*||' \
    -e 's| systemd.unit=kernel-command-line.target||' "$BOOT/cmdline.txt"
fi
echo "kizuna firstrun: kizuna-firstboot.service enabled for the next boot" | tee -a "$BOOT/kizuna-firstboot.log"
exit 0
