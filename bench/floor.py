#!/usr/bin/env python3
"""The collector's floor on this machine (bench/run.sh part f): CPU seconds per GB of
clear text that no collector can avoid, each measured here and now.

  decrypt  openssl speed -evp aes-128-gcm -decrypt (16 KiB records, the tunnel's suite)
  recv     recv_into a 256 KiB buffer from a loopback TCP socket (the receiver's CPU only)
  write    os.write of 256 KiB blocks into new files of 256 MiB in DIR (tmpfs: the kernel's copy)

and the agent's (its tunnel thread's) floor:

  encrypt  openssl speed -evp aes-128-gcm (16 KiB records)
  send     send of 256 KiB blocks to a loopback TCP socket (the sender's CPU only)

The agent's copy of each byte out of the producer's ring (cold in its cache)
is left out: it is not measured here, so the agent's true floor is lower.

Prints one line: decrypt_s_per_gb=.. recv_s_per_gb=.. write_s_per_gb=.. floor_gbit=..
encrypt_s_per_gb=.. send_s_per_gb=.. agent_floor_gbit=..
(floor_gbit: Gbit/s of clear text per CPU second = 8 / (decrypt + recv + write);
agent_floor_gbit = 8 / (encrypt + send)).
Usage: floor.py DIR BYTES
"""
import os
import re
import resource
import socket
import subprocess
import sys

BLOCK = 256 * 1024
FILE = 256 * 1024 * 1024


def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def cipher_s_per_gb(decrypt):
    out = subprocess.run(["openssl", "speed", "-evp", "aes-128-gcm"] + (["-decrypt"] if decrypt else []) +
                         ["-bytes", "16384", "-seconds", "2"], capture_output=True, text=True).stdout
    m = re.search(r"^AES-128-GCM\s+([0-9.]+)k", out, re.M)
    if not m:
        m = re.search(r"^aes-128-gcm\s+([0-9.]+)k", out, re.M | re.I)
    return 1e9 / (float(m.group(1)) * 1000.0)


def recv_send_s_per_gb(total):
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.bind(("127.0.0.1", 0))
    ls.listen(1)
    rd, wr = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(rd)
        s = socket.create_connection(ls.getsockname())
        buf = memoryview(b"\0" * BLOCK)
        left = total
        t0 = cpu()
        while left > 0:
            left -= s.send(buf[:min(left, BLOCK)])
        t = cpu() - t0
        s.close()
        os.write(wr, repr(t).encode())
        os._exit(0)
    os.close(wr)
    c, _ = ls.accept()
    buf = bytearray(BLOCK)
    got = 0
    t0 = cpu()
    while True:
        n = c.recv_into(buf)
        if not n:
            break
        got += n
    t = cpu() - t0
    sent = float(os.read(rd, 64).decode())
    os.close(rd)
    os.waitpid(pid, 0)
    c.close()
    ls.close()
    return t * 1e9 / got, sent * 1e9 / got


def write_s_per_gb(d, total):
    buf = b"\xa5" * BLOCK
    names = []
    written = 0
    t = 0.0
    while written < total:
        name = os.path.join(d, "floor.%d" % len(names))
        names.append(name)
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        t0 = cpu()
        n = 0
        while n < FILE and written < total:
            k = os.write(fd, buf)
            n += k
            written += k
        t += cpu() - t0
        os.close(fd)
        if len(names) > 4:  # a ring of 4, as the collector's --rotate-count 4
            os.unlink(names[-5])
    for name in names[-4:]:
        os.unlink(name)
    return t * 1e9 / written


def main():
    d, total = sys.argv[1], int(sys.argv[2])
    dec = cipher_s_per_gb(True)
    enc = cipher_s_per_gb(False)
    rcv, snd = recv_send_s_per_gb(total)
    wr = write_s_per_gb(d, total)
    print("decrypt_s_per_gb=%.3f recv_s_per_gb=%.3f write_s_per_gb=%.3f floor_gbit=%.1f "
          "encrypt_s_per_gb=%.3f send_s_per_gb=%.3f agent_floor_gbit=%.1f"
          % (dec, rcv, wr, 8.0 / (dec + rcv + wr), enc, snd, 8.0 / (enc + snd)))


if __name__ == "__main__":
    main()
