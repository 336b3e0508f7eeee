"""The `yaddb` tools beside the client commands: bench, keygen, backup and restore. Long work
shows a progress bar (tqdm) on a terminal, and none when standard error is not one."""
from __future__ import annotations

import os
import threading
import time

from typing import Optional

import click

from yaddb.cli.context import Context, Failed, concern_arg
from yaddb.errors import YaddbError, YaddbTimeout
from yaddb.progress import Progress

PROGRESS_EVERY_S = 0.2


@click.command()
@click.option("-c", "--clients", default=4, help="clients at once (threads, a connection each)")
@click.option("-n", "--requests", default=10_000, help="operations per test, split among clients")
@click.option("-d", "--data-size", default=100, help="value size in bytes")
@click.option("-P", "--batch", default=1, help="keys per call: above 1, mset and mget")
@click.option("-w", "w", default="1", help="write concern of the sets")
@click.option("-t", "--tests", default="set,get", help="which tests, in order: set, get")
@click.pass_obj
def bench(ctx: Context, clients: int, requests: int, data_size: int, batch: int, w: str,
          tests: str) -> None:
    """Time sets and gets like redis-benchmark: ops/s and the latency of each call."""
    unknown = set(tests.split(",")) - {"set", "get"}
    if unknown:
        raise Failed(f"bench: -t takes set and get, not {', '.join(sorted(unknown))}")
    if min(clients, requests, batch) < 1 or data_size < 0:
        raise Failed("bench: -c, -n and -P are at least 1, -d at least 0")
    if batch > 1 and ctx.url is not None:
        raise Failed("bench: -P above 1 (mset, mget) needs the native --endpoint; the HTTP "
                     "edge has no batch calls")
    concern = concern_arg(w)
    value = b"x" * data_size
    calls = max(1, requests // batch)
    shares = [calls // clients + (i < calls % clients) for i in range(clients)]
    for test in tests.split(","):
        def work(index: int, latencies: list) -> None:
            first = sum(shares[:index])
            with ctx.new_client() as client:
                for call in range(first, first + shares[index]):
                    keys = [b"bench:%d" % (call * batch + j) for j in range(batch)]
                    started = time.perf_counter()
                    if test == "set":
                        if batch == 1:
                            client.set(keys[0], value, w=concern)
                        else:
                            client.mset({key: value for key in keys}, w=concern)
                    elif batch == 1:
                        client.get(keys[0])
                    else:
                        client.mget(keys)
                    latencies.append(time.perf_counter() - started)
        progress = Progress(f"bench {test}", "calls")
        try:
            outcome = _run_clients(work, clients, lambda done: progress(done, calls))
        finally:
            progress.close()
        click.echo(_bench_line(test, batch, clients, *outcome))


def _run_clients(work, clients: int, progress) -> tuple[list, float, list]:
    """Run work(i, latencies) in `clients` threads, telling `progress` the calls done every
    PROGRESS_EVERY_S; (latencies, seconds, errors)."""
    latencies: list = [[] for _ in range(clients)]
    errors: list = []

    def guarded(index: int) -> None:
        try:
            work(index, latencies[index])
        except YaddbError as exc:
            errors.append(exc)
    threads = [threading.Thread(target=guarded, args=(i,)) for i in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        while thread.is_alive():
            thread.join(PROGRESS_EVERY_S)
            progress(sum(map(len, latencies)))
    return [x for part in latencies for x in part], time.perf_counter() - started, errors


def _bench_line(test: str, batch: int, clients: int, latencies: list, seconds: float,
                errors: list) -> str:
    if errors:
        raise Failed(f"bench {test}: {errors[0]} ({len(errors)} of {clients} clients failed)")
    ordered = sorted(latencies)

    def ms(fraction: float) -> str:
        return f"{ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] * 1000:.3f}"
    name = test.upper() if batch == 1 else f"M{test.upper()} of {batch}"
    return (f"{name}: {len(ordered) * batch / seconds:,.0f} ops/s ({len(ordered)} calls, "
            f"{clients} clients, {seconds:.2f} s); latency ms p50 {ms(0.5)} p99 {ms(0.99)} "
            f"p99.9 {ms(0.999)}")


@click.command()
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--clients", default=1, help="client pairs to make")
def keygen(directory: str, clients: int) -> None:
    """Make a cluster's CURVE keys in DIRECTORY: one member pair (every node and router) and
    client pairs; secret files are 0600 and existing keys are never replaced."""
    from yaddb.transport.keys import make_keys
    try:
        written = make_keys(directory, clients)
    except YaddbError as exc:
        raise Failed(str(exc)) from None
    for path in written:
        click.echo(path)
    click.echo("Give every node and router --keys-dir with member.key and member.key_secret; "
               "give each client machine member.key and its own client-N.key and "
               "client-N.key_secret.", err=True)


@click.command()
@click.argument("target", type=click.Path())
@click.option("--node", help="back up this node (host:port, a master) into the file TARGET; "
              "by default every partition's master, found through --endpoint, into the "
              "folder TARGET")
@click.pass_obj
def backup(ctx: Context, target: str, node: Optional[str]) -> None:
    """A consistent copy of a running cluster's data, taken while it serves: each master's
    items as of one sequence number, one file per partition. A cluster with keys needs
    --keys-dir holding the member key (a backup reads what only members may)."""
    from yaddb.backup.take import take_backup
    from yaddb.transport.curve import CurvePair
    try:
        member = None if ctx.keys_dir is None else CurvePair.member_from_directory(ctx.keys_dir)
        secure = None if member is None else member.secure_client
        if node is not None:
            jobs = [(node, target, {})]
        else:
            masters = _masters(ctx, member)
            os.makedirs(target, exist_ok=True)
            jobs = [(master, os.path.join(target, f"partition-{index}.yaddb-backup"),
                     {"partition": index, "partitions": len(masters)})
                    for index, master in enumerate(masters)]
        for address, path, note in jobs:
            progress = Progress(f"backup {address}", "items")
            try:
                header = take_backup(address, path, timeout=max(ctx.timeout, 10.0),
                                     secure=secure, progress=progress, note=note)
            finally:
                progress.close()
            click.echo(f"{path}: {header['items']} items of {address} as of sequence "
                       f"{header['seq']}")
    except YaddbTimeout as exc:
        hint = "" if ctx.keys_dir else " (a node with keys answers only a member's --keys-dir)"
        raise Failed(f"backup: {exc}{hint}") from None
    except (YaddbError, OSError) as exc:
        raise Failed(f"backup: {exc}") from None


def _masters(ctx: Context, member) -> list[str]:
    """Every partition's master, from the router's map (asked with the member key, if any:
    a folder of a node's keys holds no client key)."""
    from yaddb.client import Client
    with Client(ctx.endpoint, timeout=ctx.timeout, keys=member) as client:
        answer = client.partition_map()
    if answer.get("keys_required") and member is None:
        raise Failed("backup: this cluster's nodes take CURVE keys; give --keys-dir the "
                     "cluster's keys folder, with member.key_secret (the one-command "
                     "cluster's is DATA_DIR/keys)")
    return answer["masters"]


@click.command()
@click.argument("backup_file", type=click.Path(dir_okay=False))
@click.argument("data_dir", type=click.Path(file_okay=False))
def restore(backup_file: str, data_dir: str) -> None:
    """Make DATA_DIR (new, or empty) from BACKUP_FILE; then start a node on it with
    --data-dir DATA_DIR."""
    from yaddb.backup.restore import restore_backup
    progress = Progress(f"restore {os.path.basename(backup_file)}", "B", unit_scale=True)
    try:
        header = restore_backup(backup_file, data_dir, progress)
    except (YaddbError, OSError) as exc:
        raise Failed(f"restore: {exc}") from None
    finally:
        progress.close()
    click.echo(f"{data_dir}: {header['items']} items of {header['node']} as of sequence "
               f"{header['seq']}; start a node with --data-dir {data_dir}")
