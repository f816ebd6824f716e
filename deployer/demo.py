"""The main job of the README: a real fleet, two good deploys and a bad one that rolls back."""

from __future__ import annotations

import json
import urllib.request

from .fleet.harness import Fleet


def _through_lb(fleet: Fleet, n: int = 9) -> dict[str, str]:
    seen: dict[str, str] = {}
    lb = fleet.spec.host("lb1").public
    for _ in range(n):
        with urllib.request.urlopen(f"http://{lb}/", timeout=5) as resp:  # noqa: S310 - the fleet
            body = json.loads(resp.read())
            seen[resp.headers.get("X-Backend", "?")] = body.get("version", "?")
    return seen


def run_demo(verbs, keep: bool = False) -> int:
    """`verbs`: the module of the verbs (passed in: the verbs module runs the demo)."""
    fleet = Fleet()
    fleet.up(3)
    inv = None  # hosts/local.yaml: the committed inventory of this 3-web-host fleet
    ok = True
    try:
        steps = [("v1", 0, "the first release"),
                 ("v2", 0, "adds a table and a column (online-safe migration)"),
                 ("bad-health", 1, "health answers 500: the canary's gate fails, it rolls back by itself"),
                 ("bad-canary", 1, "150 ms slower than v2: the canary analysis catches it")]
        for ref, expected, what in steps:
            print(f"\n=== deploy {ref}: {what}")
            rc = verbs.deploy("local", ref, inventory=inv)
            print(f"=== exit code {rc} (expected {expected})")
            ok &= rc == expected
            print(f"=== through the load balancer: {_through_lb(fleet)}")
        print()
        verbs.releases("local", inventory=inv)
        ok &= verbs.status("local", inventory=inv) == 0
    finally:
        if not keep:
            fleet.down()
    print("\ndemo: " + ("everything behaved as expected" if ok else "SOMETHING WENT WRONG (see above)"))
    return 0 if ok else 1
