#!/usr/bin/env python3
"""A client blocked in BLPOP disconnects; another client pushes right after.

    scripts/blocked_disconnect.py CLIENT_PORT MASTER_PORT [ROUNDS]

Clients connect to 127.0.0.1:CLIENT_PORT (the master itself, or redsplit in front of
it); MASTER_PORT is polled directly for `blocked_clients`. Each round: client A sends
`BLPOP key 0`, A closes its socket once the master shows it blocked, client B at once
sends `RPUSH key x`, and the master is asked whether `x` is still in the list. Against
Redis directly the element stays (Redis sees A's close before B's push); a round where
it is gone gave the element to a connection nobody reads. Prints the rounds lost and
exits 1 if any. Standard library only.
"""
import socket
import sys
import time


class Conn:
    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def send(self, *words):
        out = [b"*%d\r\n" % len(words)]
        for w in words:
            w = w.encode()
            out.append(b"$%d\r\n%s\r\n" % (len(w), w))
        self.sock.sendall(b"".join(out))

    def call(self, *words):
        self.send(*words)
        return self.reply()

    def line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("connection closed")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def reply(self):
        line = self.line()
        kind, rest = line[:1], line[1:]
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            while len(self.buf) < n + 2:
                self.buf += self.sock.recv(65536)
            value, self.buf = self.buf[:n], self.buf[n + 2:]
            return value
        if kind == b"*":
            return [self.reply() for _ in range(int(rest))]
        if kind == b":":
            return int(rest)
        return line

    def close(self):
        self.sock.close()


def blocked(master):
    info = master.call("INFO", "clients").decode()
    return int(info.split("blocked_clients:")[1].split("\r\n")[0])


def wait_blocked(master, n):
    deadline = time.time() + 10
    while blocked(master) != n:
        if time.time() > deadline:
            sys.exit(f"the master never showed {n} blocked clients")
        time.sleep(0.0005)


def main():
    client_port, master_port = int(sys.argv[1]), int(sys.argv[2])
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 200
    master, b = Conn(master_port), Conn(client_port)
    lost = []
    for i in range(rounds):
        key = f"blocked-disconnect:{i}"
        master.call("DEL", key)
        a = Conn(client_port)
        a.send("BLPOP", key, "0")
        wait_blocked(master, 1)
        a.close()
        b.call("RPUSH", key, "x")
        if master.call("LLEN", key) != 1:
            lost.append(i)
        wait_blocked(master, 0)
        master.call("DEL", key)
    print(f"lost {len(lost)} of {rounds} pushes to a disconnected blocked client")
    sys.exit(1 if lost else 0)


if __name__ == "__main__":
    main()
