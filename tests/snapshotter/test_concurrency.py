"""Many calls at once, as containerd makes them (it unpacks layers and starts containers in
parallel): every one answers, nothing is lost or made twice."""

from __future__ import annotations

import threading

import grpc
from snapclient import code_of


def test_parallel_prepare_commit_remove(server, client):
    client.prepare("k")
    client.commit("base", "k")
    errors: list[BaseException] = []

    def work(n: int) -> None:
        c = server.client(client.namespace)
        try:
            for i in range(4):
                key = f"t{n}-{i}"
                c.prepare(f"extract {key}", "base", labels={"n": str(n)})
                c.commit(key, f"extract {key}")
                c.view(f"view {key}", key)
                c.stat(key)
                c.remove(f"view {key}")
            c.list()
        except BaseException as e:  # reported by the test below
            errors.append(e)
        finally:
            c.close()

    threads = [threading.Thread(target=work, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    assert sorted(client.names("parent==base")) == sorted(
        f"t{n}-{i}" for n in range(16) for i in range(4))


def test_one_key_prepared_at_once_by_many(server, client):
    """Sixteen Prepares of one key at once: one makes it, the others get AlreadyExists."""
    client.prepare("k")
    client.commit("base", "k")
    codes: list[grpc.StatusCode | None] = []

    def prepare() -> None:
        c = server.client(client.namespace)
        try:
            c.prepare("the-key", "base")
            codes.append(None)
        except grpc.RpcError as e:
            codes.append(e.code())
        finally:
            c.close()

    threads = [threading.Thread(target=prepare) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert codes.count(None) == 1
    assert codes.count(grpc.StatusCode.ALREADY_EXISTS) == 15
    assert client.names("name==the-key") == ["the-key"]
    assert code_of(client.prepare, "the-key", "base") == grpc.StatusCode.ALREADY_EXISTS
