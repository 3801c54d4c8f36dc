#!/usr/bin/env python3
"""Orchestration script of the Spark 4 standalone product.

The orchestrator runs it on the paas host as `orchestrate.py start` once every service is
configured, started and ready (spark-env.sh and spark-defaults.conf pushed, the master and
every worker running, the master listing every worker ALIVE), and as `orchestrate.py stop`
when the cluster is destroyed. It reads the cluster record from $CLUSTER_JSON and prints how
to reach the cluster; its output is kept at /clusters/{id}/logs. A non-zero exit fails the
cluster.
"""
# ----- begin examples/products/orchestrate_common.py (a copy: edit it there) -----
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
# ----- end examples/products/orchestrate_common.py -----


def start(cluster):
    opts = cluster.get("options", {})
    masters = nodes_of(cluster, "master")
    workers = nodes_of(cluster, "workers")
    if len(masters) != 1 or not workers:
        print(f"expected one master and at least one worker, got {len(masters)} and {len(workers)}")
        return 1
    m = masters[0]
    url = f"spark://{addr(m)}:{m['ports']['master']}"
    print(f"spark cluster {cluster['id']} ({cluster['product']} {cluster['version']}) of {cluster.get('owner', '?')}")
    print(f"  master:  {url}  web UI http://{addr(m)}:{m['ports']['webui']}/  "
          f"application UI port {m['ports']['appui']}")
    for w in workers:
        print(f"  worker:  {w['name']} on {addr(w)}:{w['ports']['worker']}  web UI http://{addr(w)}:{w['ports']['webui']}/ "
              f"(cores={opts.get('worker_cores', '?')} memory={opts.get('worker_memory', '?')}m)")
    print(f"  try on the master: spark-submit /usr/local/lib/paas-spark/pi.py 10   (spark.master is {url})")
    print("spark cluster configured")
    return 0


def stop_node(cluster, node):
    """An update removes worker `node` (a scale-down). Its worker goes with its task; the
    master marks it DEAD after spark.worker.timeout and reschedules its executors elsewhere."""
    print(f"spark: {node} leaves the cluster; the master reschedules its executors")
    return 0


def stop(cluster):
    print(f"spark cluster {cluster['id']} stopping")
    return 0


if __name__ == "__main__":
    sys.exit(main({"start": start, "stop": stop, "stop-node": stop_node}))
