# Integration test runner: runs every test_* function of tests/integration/test_*.py with a time limit.
"""usage: run.py [-k SUBSTRING]... [--list] [--keep]

Each test gets a fresh Env (temp dir + process registry); whatever happens,
every process it started is killed afterwards. Prints one line per test and
ends with 'integration: N passed, N failed' (+ ', N skipped' if any).
--keep (or TLSMIRROR_KEEP=1) keeps the temp dirs of failed tests.
"""

import argparse
import importlib
import os
import signal
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tmlib  # noqa: E402

DEFAULT_TIMEOUT = 120


class TestTimeout(Exception):
    pass


def on_alarm(signum, frame):
    raise TestTimeout()


class Terminated(BaseException):
    pass


def on_term(signum, frame):
    raise Terminated()


def collect():
    here = os.path.dirname(os.path.abspath(__file__))
    tests = []
    for f in sorted(os.listdir(here)):
        if not (f.startswith("test_") and f.endswith(".py")):
            continue
        mod = importlib.import_module(f[:-3])
        fns = [v for k, v in vars(mod).items() if k.startswith("test_") and callable(v)]
        fns.sort(key=lambda fn: fn.__code__.co_firstlineno)
        tests += [(f"{f[5:-3]}.{fn.__name__[5:]}", fn) for fn in fns]
    return tests


def agent_notes(env):
    """The agents' own stats lines (from their stderr) to go with a failure."""
    out = ""
    for a in env.agents:
        if a.proc is None:
            continue
        lines = [l for l in a.proc.err().decode("utf-8", "replace").splitlines()
                 if l.startswith(("pid=", "total "))]
        if lines:
            out += f"\nagent {a.name} stats at exit:\n  " + "\n  ".join(lines[-12:])
    return out


def run_one(name, fn, keep):
    env = tmlib.Env(name)
    limit = getattr(fn, "timeout", DEFAULT_TIMEOUT)
    t0 = time.monotonic()
    status, detail = "ok", ""
    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(limit)
    try:
        fn(env)
    except tmlib.Skip as e:
        status, detail = "skip", str(e)
    except tmlib.Fail as e:
        status, detail = "FAIL", str(e)
    except TestTimeout:
        status, detail = "FAIL", f"test did not finish within {limit}s"
    except Exception:
        status, detail = "FAIL", "error in the test:\n" + traceback.format_exc()
    finally:
        signal.alarm(0)
        if status == "FAIL":
            detail += agent_notes(env)
        env.cleanup(keep=keep and status == "FAIL")
    dt = time.monotonic() - t0
    print(f"{status:4} {name} ({dt:.1f}s)", flush=True)
    if detail:
        for line in detail.rstrip().splitlines():
            print(f"     {line}", flush=True)
    if keep and status == "FAIL":
        print(f"     kept {env.dir}", flush=True)
    return status


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-k", action="append", default=[])
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--keep", action="store_true", default=os.environ.get("TLSMIRROR_KEEP") == "1")
    args = ap.parse_args()
    tests = [(n, f) for n, f in collect() if not args.k or any(k in n for k in args.k)]
    if args.list:
        for n, f in tests:
            print(n)
        return 0
    print(f"integration tests against {tmlib.BUILD}", flush=True)
    counts = {"ok": 0, "FAIL": 0, "skip": 0}
    # `timeout` in run.sh sends SIGTERM: unwind so every test process is killed
    signal.signal(signal.SIGTERM, on_term)
    try:
        for n, f in tests:
            counts[run_one(n, f, args.keep)] += 1
    finally:
        tmlib.remove_certs()
    line = f"integration: {counts['ok']} passed, {counts['FAIL']} failed"
    if counts["skip"]:
        line += f", {counts['skip']} skipped"
    print(line, flush=True)
    return 1 if counts["FAIL"] else 0


if __name__ == "__main__":
    sys.exit(main())
