#!/bin/bash
# A throwaway machine made of this one: / under an overlay whose upper layer is
# a tmpfs, in new mount, pid, uts, ipc, net and cgroup namespaces. Nothing of
# the real system changes; everything goes when PID 1 of the namespace dies.
#
#   sysroot.sh DIR chroot   PID 1 is a sleep: commands run in the root with
#                           `nsenter -t PID -m -p -n -u -i -C -r -w` (no init)
#   sysroot.sh DIR systemd  PID 1 is /lib/systemd/systemd --system, booted to
#                           basic.target (cgroup v2 of our own: DIR names it)
#
# DIR (an empty directory on the host) gets 'cgroup' (the cgroup v2 path,
# systemd mode) and 'ready' once the root is up. Run it with
# `unshare ... --kill-child` semantics: tests/integration/sysroot.py does.
set -eu
dir=$1 mode=$2

if [ "${SYSROOT_STAGE:-1}" = 1 ]; then
	if [ "$mode" = systemd ]; then
		# a cgroup v2 subtree of our own, the namespace's root: systemd
		# runs there in unified mode (no controllers needed)
		base=""
		for m in /sys/fs/cgroup /sys/fs/cgroup/unified; do
			if [ "$(stat -f -c %T "$m" 2>/dev/null)" = cgroup2fs ]; then
				base=$m
				break
			fi
		done
		[ -n "$base" ] || { echo "sysroot: no cgroup v2 hierarchy mounted" >&2; exit 3; }
		cg=$base/tlsmirror-sysroot-$$
		mkdir "$cg"
		echo "$cg" > "$dir/cgroup"
		echo $$ > "$cg/cgroup.procs"
	fi
	SYSROOT_STAGE=2 exec unshare --mount --pid --uts --ipc --net --cgroup --fork \
		--kill-child=SIGKILL --propagation private "$0" "$dir" "$mode"
fi

# stage 2: PID 1 of the new pid namespace, still in the host's root
t=$dir/mnt  # (the test's directory: removed with it)
mkdir -p "$t"
mount -t tmpfs -o mode=0755 tmpfs "$t"
mkdir "$t/upper" "$t/work" "$t/root"
mount -t overlay overlay -o "lowerdir=/,upperdir=$t/upper,workdir=$t/work" "$t/root"
r=$t/root
mount -t proc proc "$r/proc"
mount -t tmpfs -o mode=0755,nosuid tmpfs "$r/dev"
for d in null zero full random urandom tty; do
	touch "$r/dev/$d"
	mount --bind "/dev/$d" "$r/dev/$d"
done
mkdir "$r/dev/pts" "$r/dev/shm" "$r/dev/mqueue"
ln -s /proc/self/fd "$r/dev/fd"
ln -s /proc/self/fd/0 "$r/dev/stdin"
ln -s /proc/self/fd/1 "$r/dev/stdout"
ln -s /proc/self/fd/2 "$r/dev/stderr"
mount -t devpts -o newinstance,ptmxmode=0666 devpts "$r/dev/pts"
ln -s pts/ptmx "$r/dev/ptmx"
mount -t tmpfs -o mode=1777 tmpfs "$r/dev/shm"
mount -t tmpfs -o mode=0755 tmpfs "$r/run"
mount -t tmpfs -o mode=1777 tmpfs "$r/tmp"
# a fresh machine: no docker-style policy-rc.d that forbids starting services;
# no man-db index rebuilt after each dpkg run (seconds each, nothing tested)
rm -f "$r/usr/sbin/policy-rc.d" "$r/var/lib/man-db/auto-update"
echo tlsmirror-sysroot > "$r/etc/hostname"
hostname tlsmirror-sysroot
: > "$r/etc/machine-id"
if [ "$mode" = systemd ]; then
	mount --rbind /sys "$r/sys"
	mount -t cgroup2 cgroup2 "$r/sys/fs/cgroup"
	touch "$dir/ready"
	exec chroot "$r" env -i container=tlsmirror-sysroot TERM=dumb \
		/lib/systemd/systemd --system --unit=basic.target --log-target=console \
		--show-status=no
fi
mount -t sysfs -o ro sysfs "$r/sys"
ip link set lo up
touch "$dir/ready"
exec chroot "$r" sleep infinity
