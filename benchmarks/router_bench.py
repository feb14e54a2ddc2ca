"""Router micro-benchmark: ns per `Router.match` for 1, 100 and 5,000 routes.

The route table is a realistic mix: mostly distinct service prefixes (`/svc{i}/v1`),
some exact paths, some host-bound routes (exact and wildcard), and ~2% regex routes.
Each request kind is timed with `timeit` (best of several repeats) and the cost at
5,000 routes is compared with the smallest table that can serve it: routing cost
should stay flat as the table grows.

Run: .venv/bin/python benchmarks/router_bench.py [--number N] [--repeat R]
"""

from __future__ import annotations

import argparse
import timeit
from collections.abc import Callable

from portcullis.model import Route
from portcullis.runtime.router import Router, RouteSpec

SIZES = (1, 100, 5000)
GATEWAY_HOST = "gateway.example.com:8000"
HEADERS: list[tuple[bytes, bytes]] = [
    (b"host", GATEWAY_HOST.encode()),
    (b"user-agent", b"bench/1.0"),
    (b"accept", b"application/json"),
    (b"x-request-id", b"0f1e2d3c"),
]


def make_route(i: int) -> Route:
    """Route number i of the mix (2% regex, 10% exact, 10% host-bound, the rest prefixes)."""
    name, service = f"r{i}", f"s{i % 37}"
    if i % 50 == 49:
        return Route(name=name, service=service, paths=[rf"~^/svc{i}/items/(?P<id>\d+)$"])
    if i % 10 == 3:
        return Route(name=name, service=service, paths=[f"=/svc{i}/health"])
    if i % 20 == 7:
        return Route(name=name, service=service, hosts=[f"svc{i}.example.com"], paths=["/"])
    if i % 20 == 17:
        return Route(name=name, service=service, hosts=[f"*.tenant{i}.example.com"])
    methods = ["GET", "POST"] if i % 3 == 0 else []
    return Route(name=name, service=service, paths=[f"/svc{i}/v1"], methods=methods)


def build(size: int) -> Router[str]:
    return Router([RouteSpec(route=r, payload=r.name) for r in map(make_route, range(size))])


def requests(size: int) -> dict[str, tuple[str, str, str]]:
    """(method, host, path) per request kind, aimed at routes in the middle of the table."""
    mid = size // 2
    prefix = next(i for i in range(mid, -1, -1) if make_route(i).paths[0].startswith("/svc"))
    exact = mid - (mid % 10) + 3
    host = mid - (mid % 20) + 7
    wildcard = mid - (mid % 20) + 17
    regex = mid - (mid % 50) + 49
    return {
        "prefix hit": ("GET", GATEWAY_HOST, f"/svc{prefix}/v1/users/42"),
        "exact hit": ("GET", GATEWAY_HOST, f"/svc{exact}/health"),
        "host hit": ("GET", f"svc{host}.example.com", "/anything/here"),
        "wildcard hit": ("GET", f"acme.tenant{wildcard}.example.com:443", "/x"),
        "regex hit": ("GET", GATEWAY_HOST, f"/svc{regex}/items/1234"),
        "miss": ("GET", GATEWAY_HOST, "/nothing/here/at/all"),
    }


def time_match(router: Router[str], req: tuple[str, str, str], number: int, repeat: int) -> float:
    method, host, path = req
    match: Callable[..., object] = router.match
    timer = timeit.Timer(lambda: match(method, host, path, HEADERS))
    return min(timer.repeat(repeat=repeat, number=number)) / number * 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=20_000, help="calls per repeat")
    parser.add_argument("--repeat", type=int, default=5, help="repeats (best is kept)")
    args = parser.parse_args()

    routers = {size: build(size) for size in SIZES}
    kinds = list(requests(max(SIZES)))
    results: dict[str, dict[int, float | None]] = {k: {} for k in kinds}
    for size, router in routers.items():
        for kind, req in requests(size).items():
            served = router.match(req[0], req[1], req[2], HEADERS) is not None
            if kind != "miss" and not served:
                results[kind][size] = None  # this table has no route of that kind
                continue
            assert kind != "miss" or not served, "the miss request matched a route"
            results[kind][size] = time_match(router, req, args.number, args.repeat)

    header = f"{'request':<14}" + "".join(f"{f'{s} routes':>13}" for s in SIZES)
    print(f"{header}{'ratio 5000/smallest':>22}")
    for kind in kinds:
        row = results[kind]
        cells = "".join(f"{row[s]:>10.0f} ns" if row[s] else f"{'-':>13}" for s in SIZES)
        smallest = next(s for s in SIZES if row[s])
        big, small = row[max(SIZES)], row[smallest]
        ratio = f"{big / small:.2f}x (vs {smallest})" if big and small else "-"
        print(f"{kind:<14}{cells}{ratio:>22}")


if __name__ == "__main__":
    main()
