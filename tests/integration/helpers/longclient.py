# One long-lived HTTPS connection (not started under capture) sending echo messages in a loop, for tlsmirror attach tests.
"""Usage: longclient.py PORT STOPFILE

Connects once to recserver.py --mode echo, prints 'conn PORT' after the
handshake, then sends 'LEN n' + n bytes and checks the reversed echo,
printing 'ok N' per message, every 50 ms, until STOPFILE exists; then
closes (exit 0). Exit 1 on a wrong echo."""
import os
import socket
import ssl
import sys
import time


def main():
    port, stop = int(sys.argv[1]), sys.argv[2]
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    s = socket.create_connection(("127.0.0.1", port))
    t = ctx.wrap_socket(s, server_hostname="localhost")
    print(f"conn {t.getsockname()[1]}", flush=True)
    n = 0
    while not os.path.exists(stop):
        body = bytes((n * 7 + i) & 0xff for i in range(1000 + n % 50))
        t.sendall(b"LEN %d\n" % len(body) + body)
        want = b"ECHO %d\n" % len(body) + body[::-1]
        got = b""
        while len(got) < len(want):
            b = t.recv(65536)
            if not b:
                print(f"EOF at message {n}", flush=True)
                return 1
            got += b
        if got != want:
            print(f"bad echo {n}", flush=True)
            return 1
        print(f"ok {n}", flush=True)
        n += 1
        time.sleep(0.05)
    t.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
