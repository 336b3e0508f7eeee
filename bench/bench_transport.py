#!/usr/bin/env python3
"""Round trips between two processes: ZeroMQ DEALER/ROUTER against a plain TCP socket and a
Unix socket, with no database in between (why transport/local.py exists).

Each transport: a server process echoing every message, a client sending one 120-byte message
and waiting for its echo, --count times. Transports run in interleaved rounds; printed are
each round's rates and the medians, with ZeroMQ's as a ratio of the others'.

Run: python3 bench/bench_transport.py [--rounds 3] [--count 20000]
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import socket
import statistics
import struct
import tempfile
import time

import zmq

from common import free_port

PAYLOAD = b"x" * 120
LENGTH = struct.Struct(">I")
READY_TIMEOUT_S = 30.0


def zmq_server(address: str, ready) -> None:
    context = zmq.Context()
    sock = context.socket(zmq.ROUTER)
    sock.bind(address)
    ready.set()
    while True:
        message = sock.recv_multipart()
        if message[-1] == b"stop":
            break
        sock.send_multipart(message)
    sock.close(linger=0)
    context.term()


def zmq_client(address: str, count: int) -> float:
    context = zmq.Context()
    sock = context.socket(zmq.DEALER)
    sock.connect(address)
    sock.send(PAYLOAD)
    sock.recv()
    started = time.perf_counter()
    for _ in range(count):
        sock.send(PAYLOAD)
        sock.recv()
    rate = count / (time.perf_counter() - started)
    sock.send(b"stop")
    sock.close(linger=0)
    context.term()
    return rate


def stream_server(family: int, address, ready) -> None:
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(address)
    listener.listen()
    ready.set()
    conn, _ = listener.accept()
    if family == socket.AF_INET:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    while True:
        data = conn.recv(65536)
        if not data or data.endswith(b"stop"):
            break
        conn.sendall(data)
    conn.close()
    listener.close()


def stream_client(family: int, address, count: int) -> float:
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.connect(address)
    if family == socket.AF_INET:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    message = LENGTH.pack(len(PAYLOAD)) + PAYLOAD
    started = time.perf_counter()
    for _ in range(count):
        sock.sendall(message)
        received = 0
        while received < len(message):
            received += len(sock.recv(65536))
    rate = count / (time.perf_counter() - started)
    sock.sendall(b"stop")
    sock.close()
    return rate


def one_round(kind: str, count: int, workdir: str) -> float:
    ready = multiprocessing.Event()
    if kind == "zeromq":
        address = f"tcp://127.0.0.1:{free_port()}"
        server = multiprocessing.Process(target=zmq_server, args=(address, ready))
    else:
        family = socket.AF_INET if kind == "tcp" else socket.AF_UNIX
        address = ("127.0.0.1", free_port()) if kind == "tcp" else os.path.join(workdir, "echo.sock")
        if kind == "unix" and os.path.exists(address):
            os.remove(address)
        server = multiprocessing.Process(target=stream_server, args=(family, address, ready))
    server.start()
    try:
        if not ready.wait(READY_TIMEOUT_S):
            raise RuntimeError(f"the {kind} echo server did not start")
        if kind == "zeromq":
            return zmq_client(address, count)
        return stream_client(family, address, count)
    finally:
        server.join(READY_TIMEOUT_S)
        if server.is_alive():
            server.kill()
            server.join()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--count", type=int, default=20_000, help="round trips per run")
    args = parser.parse_args()
    kinds = ("zeromq", "tcp", "unix")
    rates: dict[str, list[float]] = {kind: [] for kind in kinds}
    with tempfile.TemporaryDirectory() as workdir:
        for round_no in range(args.rounds):
            order = kinds if round_no % 2 == 0 else tuple(reversed(kinds))
            for kind in order:
                rates[kind].append(one_round(kind, args.count, workdir))
            print(f"round {round_no + 1}: " + ", ".join(f"{kind} {rates[kind][-1]:,.0f}/s"
                                                       for kind in kinds), flush=True)
    zeromq = statistics.median(rates["zeromq"])
    print(f"\n{args.count:,} round trips of a {len(PAYLOAD)}-byte message, medians of "
          f"{args.rounds} round(s):")
    for kind in kinds:
        median = statistics.median(rates[kind])
        print(f"  {kind:7} {median:>10,.0f}/s   {median / zeromq:.2f}x ZeroMQ")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
