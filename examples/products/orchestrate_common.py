# The part every product's orchestrate.py shares: reading the cluster record and dispatching the
# action. A product uploads its orchestrate.py alone (the orchestrator runs that one file), so
# this part cannot be imported: each script carries a copy of examples/products/
# orchestrate_common.py between two marker lines, and tests/product_scripts.rs fails when a
# copy differs from it (UPDATE_SHARED=1 cargo test --test product_scripts rewrites the copies).
import json
import os
import sys


def nodes_of(cluster, service):
    """The nodes of `service`, in the cluster's node order."""
    names = next((s["nodes"] for s in cluster["services"] if s["name"] == service), [])
    return [n for n in cluster["nodes"] if n["name"] in names]


def addr(node):
    """Where the node is reached."""
    return node.get("address") or node.get("host") or "?"


def main(actions):
    """Runs `actions[argv[1]]` (default `start`) on the cluster record in $CLUSTER_JSON,
    with the further arguments after it (`stop-node NODE`).

    Its return value is the exit status: non-zero fails the cluster.
    """
    action = sys.argv[1] if len(sys.argv) > 1 else "start"
    with open(os.environ["CLUSTER_JSON"]) as f:
        cluster = json.load(f)
    if action not in actions:
        print(f"unknown action {action!r} ({', '.join(actions)})")
        return 2
    try:
        return actions[action](cluster, *sys.argv[2:])
    except TypeError as e:
        print(f"action {action!r}: wrong arguments {sys.argv[2:]}: {e}")
        return 2
