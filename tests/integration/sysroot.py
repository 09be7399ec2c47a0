# A throwaway machine for the package tests: this machine's / under a tmpfs overlay in its own namespaces, optionally booted with systemd as PID 1 (helpers/sysroot.sh).
"""SysRoot(env, mode) starts helpers/sysroot.sh: mode "chroot" (PID 1 a
sleep, no init) or "systemd" (/lib/systemd/systemd --system as PID 1,
unified cgroup v2 of its own). run() executes a command inside (nsenter into
every namespace and the root); path() names a file of the root from here.
Whatever a test does there, the real system is untouched; close() (or the
runner's cleanup) kills PID 1 and so the whole namespace.
"""

import os
import shutil
import signal
import subprocess
import time

from tmlib import HELPERS, Skip, check, short, wait_until

SCRIPT = os.path.join(HELPERS, "sysroot.sh")


def _children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


class SysRoot:
    def __init__(self, env, mode="chroot", boot_timeout=60):
        if os.geteuid() != 0:
            raise Skip("a throwaway root needs root (mount, unshare)")
        for tool in ("unshare", "nsenter", "chroot"):
            if not shutil.which(tool):
                raise Skip(f"{tool} not installed (util-linux, coreutils)")
        if mode == "systemd" and not os.access("/lib/systemd/systemd", os.X_OK):
            raise Skip("no /lib/systemd/systemd to boot (package systemd)")
        self.env, self.mode = env, mode
        self.dir = env.path(f"sysroot-{mode}")
        os.makedirs(self.dir)
        self.proc = env.spawn(f"sysroot-{mode}", ["bash", SCRIPT, self.dir, mode])
        self.pid = None
        self.cgroup = None
        try:
            self._start(mode, boot_timeout)
        except BaseException:
            self.close()  # the cgroup too: the runner's cleanup knows only processes
            raise

    def _start(self, mode, boot_timeout):
        def up():
            if not self.proc.alive():
                err = short(self.proc.err(), 800)
                # a container without the privilege, a kernel without overlayfs
                # or cgroup v2: this machine cannot make one (say why, skip)
                if any(w in self.proc.err() for w in (b"not permitted", b"ermission denied",
                                                      b"unknown filesystem", b"no cgroup v2",
                                                      b"unshare failed", b"overlay")):
                    raise Skip(f"this machine cannot make a throwaway root: {err}")
                raise AssertionError(f"sysroot.sh {mode} exited {self.proc.popen.returncode}: {err}")
            if not os.path.exists(os.path.join(self.dir, "ready")):
                return False
            kids = _children(self.proc.pid)
            if kids:
                self.pid = kids[0]
            # "ready" is written just before the exec of chroot: until the process is
            # chrooted, its /proc/PID/root is the host's, and a file put there would
            # land outside the throwaway root (seen once in CI: dpkg found no .deb)
            try:
                chrooted = self.pid is not None and os.readlink(f"/proc/{self.pid}/root") != "/"
            except OSError:
                chrooted = False
            return chrooted
        wait_until(up, 30, f"the throwaway root ({mode})")
        if os.path.exists(os.path.join(self.dir, "cgroup")):
            with open(os.path.join(self.dir, "cgroup")) as f:
                self.cgroup = f.read().strip()
        if mode == "systemd":
            # PID 1 is systemd once chroot has exec'd it
            wait_until(lambda: os.readlink(f"/proc/{self.pid}/exe").endswith("/systemd"), 20,
                       "systemd to be PID 1 of the namespace")
            # (its bus and /run/systemd/system come a moment after exec: until
            # then systemctl cannot ask, or says "offline")
            deadline = time.monotonic() + boot_timeout
            while True:
                r = self.run(["systemctl", "is-system-running", "--wait"], timeout_s=boot_timeout,
                             check_rc=False)
                state = r.stdout.decode().strip()
                if state not in ("", "offline") or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            if state not in ("running", "degraded"):
                jr = self.run(["journalctl", "-b", "--no-pager", "-n", "40"], check_rc=False)
                raise AssertionError(f"systemd in the namespace did not boot: {state!r} "
                                     f"{short(r.stderr)}\n{short(jr.stdout, 3000)}")
            self.boot_state = state

    def path(self, p):
        """The file p of the throwaway root, as seen from the host."""
        return f"/proc/{self.pid}/root/{p.lstrip('/')}"

    def run(self, argv, timeout_s=120, check_rc=True, input=None, env=None):
        """Runs argv inside (a clean environment: PATH, LANG=C, plus env);
        returns the CompletedProcess."""
        e = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
             "LANG": "C", "HOME": "/root", "TERM": "dumb", "DEBIAN_FRONTEND": "noninteractive"}
        e.update(env or {})
        cmd = ["nsenter", "-t", str(self.pid), "-m", "-p", "-n", "-u", "-i", "-C", "-r", "-w",
               "env", "-i"] + [f"{k}={v}" for k, v in e.items()] + list(argv)
        r = subprocess.run(cmd, capture_output=True, timeout=timeout_s, input=input)
        if check_rc:
            check(r.returncode == 0, f"in the throwaway root: {' '.join(argv)}: exit "
                  f"{r.returncode}: {short(r.stdout + r.stderr, 1500)}")
        return r

    def sh(self, script, **kw):
        return self.run(["sh", "-ec", script], **kw)

    def spawn(self, name, argv):
        """A long-running command inside, tracked by the test's Env."""
        return self.env.spawn(name, ["nsenter", "-t", str(self.pid), "-m", "-p", "-n", "-u", "-i",
                                     "-C", "-r", "-w", "env", "-i",
                                     "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C"] + list(argv))

    def pids_mapping(self, needle):
        """Processes of the root (host pids) whose maps name needle."""
        found = []
        for p in self.ns_pids():
            try:
                with open(f"/proc/{p}/maps") as f:
                    if needle in f.read():
                        found.append(p)
            except OSError:
                pass
        return found

    def ns_pids(self):
        """Every process of the namespace (host pids), PID 1 included."""
        want = os.readlink(f"/proc/{self.pid}/ns/pid")
        out = []
        for d in os.listdir("/proc"):
            if d.isdigit():
                try:
                    if os.readlink(f"/proc/{d}/ns/pid") == want:
                        out.append(int(d))
                except OSError:
                    pass
        return out

    def close(self):
        cgfile = os.path.join(self.dir, "cgroup")
        if self.cgroup is None and os.path.exists(cgfile):
            with open(cgfile) as f:
                self.cgroup = f.read().strip()
        if self.proc.alive():
            self.proc.signal(signal.SIGKILL)  # --kill-child: PID 1, then every process in it
            self.proc.wait(20)
        if self.pid:
            wait_until(lambda: not os.path.exists(f"/proc/{self.pid}"), 20,
                       "the namespace's PID 1 to go")
        if self.cgroup and os.path.isdir(self.cgroup):
            deadline = time.monotonic() + 20
            while True:
                left = []
                for d, subs, _ in os.walk(self.cgroup, topdown=False):
                    try:
                        os.rmdir(d)
                    except OSError:
                        left.append(d)
                if not left or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            check(not os.path.isdir(self.cgroup), f"cgroup {self.cgroup} could not be removed")
