# Network namespaces and veth pairs for integration tests: unique names, always cleaned up.
"""Generic helpers (standard library only) for tests that need interfaces.

    with Netns(env) as nets:
        a, b = nets.ns("app"), nets.ns("cap")      # namespaces, loopback up
        va, vb = nets.veth(a, b)                   # a veth pair, one end in each, up
        nets.spawn_in(a, "agent", [TLSMIRROR, ...])  # env.spawn inside namespace a
        with nets.inside(a):                       # every env.spawn (RecServer,
            srv = RecServer(env)                   # env.captured...) runs in a
        nets.sh(a, "ip", "link", ...)              # run a command there, check it

Names carry the test's pid and a counter so concurrent runs never collide;
interfaces get no address and IPv6 is switched off on them (no router
solicitations or DAD frames on the wire). Everything is deleted on exit,
even when the test fails; deleting a namespace removes the interfaces in it.
Only root can do this: `available()` says whether this machine can.
"""

import contextlib
import itertools
import os
import subprocess

from tmlib import Fail, Skip, short

_seq = itertools.count(1)


def _ip(*args, check_rc=True):
    r = subprocess.run(["ip"] + list(args), capture_output=True, timeout=30)
    if check_rc and r.returncode != 0:
        raise Fail(f"`ip {' '.join(args)}` failed: {short(r.stderr)}")
    return r


def available():
    """None if namespaces and veth pairs work here, else the reason."""
    if os.geteuid() != 0:
        return "needs root (ip netns)"
    name = f"tmprobe{os.getpid()}"
    r = _ip("netns", "add", name, check_rc=False)
    if r.returncode != 0:
        return f"ip netns add failed: {r.stderr.decode(errors='replace').strip()}"
    _ip("netns", "del", name, check_rc=False)
    return None


class Netns:
    def __init__(self, env):
        self.env = env
        self.names = []
        self.links = []      # links created in the root namespace (deleted explicitly)

    def __enter__(self):
        why = available()
        if why:
            raise Skip(why)
        return self

    def __exit__(self, *exc):
        self.cleanup()
        return False

    def _name(self, tag):
        return f"tm{tag[:5]}{os.getpid() % 100000}x{next(_seq)}"

    def ns(self, tag="ns"):
        """A new namespace with its loopback up; returns its name."""
        name = self._name(tag)
        _ip("netns", "add", name)
        self.names.append(name)
        self.sh(name, "ip", "link", "set", "lo", "up")
        return name

    def sh(self, ns, *argv, timeout_s=30):
        """Runs argv inside ns (None: here); raises Fail unless it exits 0; returns stdout."""
        pre = ["ip", "netns", "exec", ns] if ns else []
        r = subprocess.run(pre + list(argv), capture_output=True, timeout=timeout_s)
        if r.returncode != 0:
            raise Fail(f"`{' '.join(argv)}` in {ns or 'the root namespace'} exited "
                       f"{r.returncode}: {short(r.stderr)}")
        return r.stdout

    def _quiet_up(self, ns, dev, mtu=None):
        self.sh(ns, "sysctl", "-q", "-w", f"net.ipv6.conf.{dev}.disable_ipv6=1")
        args = ["ip", "link", "set", dev]
        if mtu:
            args += ["mtu", str(mtu)]
        self.sh(ns, *(args + ["up"]))

    def veth(self, ns_a, ns_b, mtu=None):
        """A veth pair with one end in ns_a and the other in ns_b (None: the root
        namespace), both up, no addresses, IPv6 off; returns (name_a, name_b)."""
        n = next(_seq)
        a, b = f"tmva{os.getpid() % 100000}x{n}", f"tmvb{os.getpid() % 100000}x{n}"
        _ip("link", "add", a, "type", "veth", "peer", "name", b)
        if ns_a is None or ns_b is None:
            self.links.append(a if ns_a is None else b)
        for dev, ns in ((a, ns_a), (b, ns_b)):
            if ns:
                _ip("link", "set", dev, "netns", ns)
            self._quiet_up(ns, dev, mtu)
        return a, b

    def dummy(self, ns):
        """A dummy interface in ns, up, no address; None if the kernel has no dummy driver."""
        name = f"tmdu{os.getpid() % 100000}x{next(_seq)}"
        pre = ["ip", "netns", "exec", ns] if ns else []
        r = subprocess.run(pre + ["ip", "link", "add", name, "type", "dummy"],
                           capture_output=True, timeout=30)
        if r.returncode != 0:
            return None
        if not ns:
            self.links.append(name)
        self._quiet_up(ns, name)
        return name

    def argv_in(self, ns, argv):
        return (["ip", "netns", "exec", ns] if ns else []) + list(argv)

    def spawn_in(self, ns, name, argv, **kw):
        """env.spawn inside ns (ip netns exec execs argv: the Proc's pid is argv's)."""
        return self.env.spawn(name, self.argv_in(ns, argv), **kw)

    @contextlib.contextmanager
    def inside(self, ns):
        """Within the block every env.spawn (and so RecServer, env.captured) runs in ns."""
        orig = self.env.spawn

        def spawn(name, argv, **kw):
            return orig(name, self.argv_in(ns, argv), **kw)
        self.env.spawn = spawn
        try:
            yield
        finally:
            self.env.spawn = orig

    def cleanup(self):
        # processes inside must go first, or a namespace outlives its name
        for p in reversed(self.env.procs):
            if p.alive():
                p.kill_group()
        for p in self.env.procs:
            try:
                p.popen.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        for link in self.links:
            _ip("link", "del", link, check_rc=False)
        for name in reversed(self.names):
            _ip("netns", "del", name, check_rc=False)
        self.links, self.names = [], []
