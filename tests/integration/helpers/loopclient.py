# An HTTPS client in a loop (not started under capture): one connection per GET /seq/N, for tlsmirror attach tests.
"""Usage: loopclient.py PORT STOPFILE [--threads N]

Prints 'conn N PORT' once connected (before the TLS handshake) and 'ok N'
after a correct response; stops (exit 0) when STOPFILE exists; exit 1 on a
wrong response. With --threads, N-1 more threads sleep in a loop, so the
process is multi-threaded."""
import os
import socket
import ssl
import sys
import threading
import time


def main():
    port, stop = int(sys.argv[1]), sys.argv[2]
    threads = int(sys.argv[4]) if len(sys.argv) > 4 and sys.argv[3] == "--threads" else 1
    for _ in range(threads - 1):
        threading.Thread(target=lambda: [time.sleep(0.05) for _ in iter(int, 1)],
                         daemon=True).start()
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    n = 0
    while not os.path.exists(stop):
        s = socket.create_connection(("127.0.0.1", port))
        print(f"conn {n} {s.getsockname()[1]}", flush=True)
        t = ctx.wrap_socket(s, server_hostname="localhost")
        t.sendall(b"GET /seq/%d HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n" % n)
        data = b""
        while True:
            b = t.recv(65536)
            if not b:
                break
            data += b
        t.close()
        if not data.endswith(b"\r\n\r\nseq %d\n" % n):
            print(f"bad response {n}: {data[-80:]!r}", flush=True)
            return 1
        print(f"ok {n}", flush=True)
        n += 1
        time.sleep(0.1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
