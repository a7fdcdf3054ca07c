#!/bin/busybox sh
# /init of the numatop-llm test guest (runs from a static-busybox initramfs, PID 1).
#
# Loads the modules listed in /lib/modules/load-order, mounts the host's root read-only over
# virtio-9p (tag "hostroot") under a tmpfs overlay, mounts the host's shared directory (tag
# "vmshare") read-write at /vmshare, then serves commands: the host writes /vmshare/N.cmd
# (N = 1, 2, ...); the guest runs it chrooted in the overlay with a time limit and writes
# N.out, N.err and N.rc (N.rc last, atomically). A file /vmshare/poweroff ends the loop.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev

say() { echo "vm-init: $*" >/dev/console; }
die() {
	say "FATAL: $*"
	[ -d /newroot/vmshare ] && echo "$*" >/newroot/vmshare/init-failed
	sleep 1
	poweroff -f
}

for m in $(cat /lib/modules/load-order); do
	insmod "/lib/modules/$m" || die "insmod $m failed"
done

mkdir -p /lower /rw /newroot
mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=262144 hostroot /lower || die "mount hostroot"
mount -t tmpfs -o mode=755 tmpfs /rw || die "mount tmpfs"
mkdir -p /rw/upper /rw/work
mount -t overlay overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work /newroot || die "mount overlay"
R=/newroot
mount -t proc proc $R/proc
mount -t sysfs sysfs $R/sys
mount -t devtmpfs devtmpfs $R/dev
mkdir -p $R/dev/shm $R/dev/pts $R/vmshare
mount -t tmpfs -o mode=1777 tmpfs $R/dev/shm
mount -t devpts devpts $R/dev/pts
mount -t tmpfs -o mode=1777 tmpfs $R/tmp
mount -t tmpfs -o mode=755 tmpfs $R/run
mount -t cgroup2 cgroup2 $R/sys/fs/cgroup 2>/dev/null
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 vmshare $R/vmshare || die "mount vmshare"
S=$R/vmshare
# host paths under /tmp the commands need (a checkout cloned there): the fresh /tmp hides them,
# so bind them back from the read-only host root
if [ -f $S/keep ]; then
	for p in $(cat $S/keep); do
		case "$p" in
		/tmp/*) mkdir -p "$R$p" && mount -o bind "/lower$p" "$R$p" || die "bind $p" ;;
		esac
	done
fi
ip link set lo up 2>/dev/null
# the command environment: the host's own PATH order, root's home, a UTF-8 locale
ENV="PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 TERM=dumb"
# per-command limit in seconds (the host may override it in N.timeout)
LIMIT=600
cut -d' ' -f1 /proc/uptime >$S/ready.tmp && mv $S/ready.tmp $S/ready
say "ready after $(cat $S/ready) s"

n=1
while :; do
	if [ -f $S/$n.cmd ]; then
		t=$LIMIT
		[ -f $S/$n.timeout ] && t=$(cat $S/$n.timeout)
		chroot $R /usr/bin/env -i $ENV /usr/bin/timeout -k 5 "$t" /bin/sh /vmshare/$n.cmd >$S/$n.out 2>$S/$n.err </dev/null
		echo $? >$S/$n.rc.tmp
		mv $S/$n.rc.tmp $S/$n.rc
		n=$((n + 1))
	elif [ -f $S/poweroff ]; then
		break
	else
		usleep 50000
	fi
done
sync
say "powering off"
poweroff -f
