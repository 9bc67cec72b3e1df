"""TCP throughput between two simulated hosts, one way and both ways at once: is the link
full duplex? usage: tcp_duplex.py server | tcp_duplex.py one|both ADDRESS
The client prints "MODE GBITS" (Gbit/s of data per direction)."""
import socket
import sys
import threading
import time

PORT, TOTAL, CHUNK = 5201, 200 << 20, 1 << 20


def send(sock):
    buf, sent = b"x" * CHUNK, 0
    while sent < TOTAL:
        sent += sock.send(buf)


def recv(sock):
    got = 0
    while got < TOTAL:
        data = sock.recv(CHUNK)
        if not data:
            break
        got += len(data)


def both_ways(sock, first, second):
    threads = [threading.Thread(target=first, args=(sock,))]
    if second:
        threads.append(threading.Thread(target=second, args=(sock,)))
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def main(mode, address=None):
    if mode == "server":
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("0.0.0.0", PORT))
        s.listen(1)
        c, _ = s.accept()
        both_ways(c, recv, send if c.recv(1) == b"b" else None)
        return
    for _ in range(50):  # the server may not listen yet
        try:
            c = socket.create_connection((address, PORT))
            break
        except ConnectionRefusedError:
            time.sleep(0.1)
    c.send(b"b" if mode == "both" else b"u")
    start = time.perf_counter()
    both_ways(c, send, recv if mode == "both" else None)
    print(mode, f"{TOTAL * 8 / (time.perf_counter() - start) / 1e9:.2f}")


if __name__ == "__main__":
    main(*sys.argv[1:])
