"""Drives a NabuStore RESP endpoint with redis-py: every supported command in RESP3 (what
redis-py 8 negotiates with HELLO 3) and RESP2, pipelining, and a wrong password.

Usage: python redis_py.py HOST PORT PASSWORD OTHER_PORT
Exits non-zero (an AssertionError with the reason) when anything is off.
"""

import sys

import redis


def check_commands(r: redis.Redis, other: redis.Redis, protocol: int) -> None:
    tag = f"p{protocol}:"
    assert r.ping() is True
    assert r.echo(b"hi") == b"hi"
    assert r.execute_command("SELECT", 0) in (b"OK", "OK", True)
    assert r.client_setinfo("LIB-NAME", "test") is True
    assert r.client_setname("tester") is True
    assert r.client_getname() in (b"tester", "tester")
    assert isinstance(r.client_id(), int)

    # SET/GET, each key forwarded to its owner; read back through another node.
    for n in range(20):
        assert r.set(f"{tag}k{n}", f"v{n}".encode()) is True
    for n in range(20):
        assert other.get(f"{tag}k{n}") == f"v{n}".encode()
    assert r.get(f"{tag}missing") is None
    big = bytes(range(256)) * 4096  # 1 MiB
    assert r.set(f"{tag}big", big) is True
    assert other.get(f"{tag}big") == big

    # NX / XX / EX / PX.
    assert r.set(f"{tag}k0", b"x", nx=True) is None
    assert r.set(f"{tag}new", b"x", xx=True) is None
    assert r.set(f"{tag}new", b"y", nx=True) is True
    assert r.set(f"{tag}new", b"z", xx=True) is True
    assert r.get(f"{tag}new") == b"z"
    assert r.set(f"{tag}ex", b"v", ex=100) is True
    assert 99 <= r.ttl(f"{tag}ex") <= 100
    assert 99_000 <= r.pttl(f"{tag}ex") <= 100_000
    assert r.set(f"{tag}px", b"v", px=50_000) is True
    assert 49 <= r.ttl(f"{tag}px") <= 50
    assert r.ttl(f"{tag}k1") == -1
    assert r.ttl(f"{tag}missing") == -2
    assert r.expire(f"{tag}k1", 30) is True
    assert 29 <= r.ttl(f"{tag}k1") <= 30
    assert r.persist(f"{tag}k1") is True
    assert r.ttl(f"{tag}k1") == -1
    assert r.expire(f"{tag}missing", 30) is False

    # Several keys at once.
    assert r.exists(f"{tag}k2", f"{tag}k3", f"{tag}missing") == 2
    assert r.mset({f"{tag}m1": b"1", f"{tag}m2": b"2"}) is True
    assert r.mget(f"{tag}m1", f"{tag}missing", f"{tag}m2") == [b"1", None, b"2"]
    assert r.delete(f"{tag}m1", f"{tag}m2", f"{tag}missing") == 2
    assert r.exists(f"{tag}m1") == 0

    # Tooling.
    assert r.dbsize() >= 20
    keys = set(r.scan_iter(match=f"{tag}k*", count=7))
    assert keys == {f"{tag}k{n}".encode() for n in range(20)}, keys
    info = r.info()
    assert info["redis_version"], info
    assert "db0" in info, info
    r.command()

    # Pipelining: many commands in flight on one connection, answered in order.
    pipe = r.pipeline(transaction=False)
    for n in range(200):
        pipe.set(f"{tag}pipe{n}", str(n))
        pipe.get(f"{tag}pipe{n}")
    replies = pipe.execute()
    for n in range(200):
        assert replies[2 * n] is True
        assert replies[2 * n + 1] == str(n).encode(), (n, replies[2 * n + 1])

    # Unknown commands are errors, not dropped connections.
    try:
        r.execute_command("NOSUCHCOMMAND", "a")
        raise AssertionError("an unknown command succeeded")
    except redis.ResponseError as error:
        assert str(error).startswith("unknown command 'NOSUCHCOMMAND'"), error
    assert r.ping() is True


def main() -> None:
    host, port, password, other_port = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    for protocol in (3, 2):
        r = redis.Redis(host=host, port=port, password=password, protocol=protocol)
        other = redis.Redis(host=host, port=other_port, password=password, protocol=protocol)
        check_commands(r, other, protocol)
        hello = r.connection_pool.get_connection().handshake_metadata if protocol == 3 else None
        if protocol == 3:
            assert hello and (hello.get(b"proto") or hello.get("proto")) == 3, hello
    # The user+password form and a wrong password.
    assert redis.Redis(host=host, port=port, username="default", password=password).ping()
    for wrong in (redis.Redis(host=host, port=port, password="wrong"),
                  redis.Redis(host=host, port=port, password="wrong", protocol=2)):
        try:
            wrong.ping()
            raise AssertionError("a wrong password was accepted")
        except redis.AuthenticationError:
            pass
    try:
        redis.Redis(host=host, port=port, protocol=2).get("k")
        raise AssertionError("a command without AUTH was served")
    except redis.AuthenticationError:
        pass
    except redis.ResponseError as error:
        assert "NOAUTH" in str(error), error
    print("redis-py: all checks passed")


if __name__ == "__main__":
    main()
