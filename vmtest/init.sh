#!/bin/sh
# PID 1 of the vmtest guest (busybox). Written for this project.
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs dev /dev
echo /bin/false > /proc/sys/kernel/modprobe
while read -r m; do
    insmod "/modules/$m" || echo "vmtest: insmod $m failed"
done < /modules/order
H=/mnt/host
mkdir -p $H
if ! mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000,cache=loose hostroot $H; then
    echo "vmtest: cannot mount the host root over 9p"
    echo "@@MARKER@@ rc=125"; poweroff -f
fi
mount -t proc proc $H/proc
mount -t sysfs sysfs $H/sys
mount -t devtmpfs dev $H/dev
# The guest's /tmp and /run are fresh tmpfs: a repository that lives under them on the host (a
# clone in /tmp) is carried over by a bind mount, or the tmpfs would hide it.
R="@@ROOT@@"
case "$R" in /tmp/* | /run/*) mkdir -p /mnt/repo && mount -o bind "$H$R" /mnt/repo ;; *) R= ;; esac
mount -t tmpfs tmp $H/tmp
mount -t tmpfs run $H/run
if [ -n "$R" ]; then
    mkdir -p "$H$R" && mount -o bind /mnt/repo "$H$R" || echo "vmtest: cannot carry $R into the guest"
fi
# Per-test logs go to the host (build/vmtest/logs-NAME), writable over 9p.
mkdir -p $H/tmp/vmtest-logs
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 vmlogs $H/tmp/vmtest-logs ||
    echo "vmtest: no log share: test logs stay in the guest's /tmp/vmtest-logs"
mount -t bpf bpf $H/sys/fs/bpf
mount -t debugfs debugfs $H/sys/kernel/debug 2>/dev/null
mount -t tracefs tracefs $H/sys/kernel/tracing 2>/dev/null
mount -t cgroup2 cgroup2 $H/sys/fs/cgroup 2>/dev/null
ip link set lo up
echo "vmtest: booted in $(cut -d' ' -f1 /proc/uptime)s, kernel $(uname -r)"
echo "@@START@@"
chroot $H /bin/sh -c "cd '@@CWD@@' && $(cat /cmd)" < /dev/null 2>&1
rc=$?
echo "@@MARKER@@ rc=$rc"
poweroff -f
