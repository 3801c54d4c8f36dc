#!/usr/bin/env python3
"""Orchestration script of the Slurm 22.05 product.

The orchestrator runs it on the paas host as `orchestrate.py start` once every service is
configured, started and ready (slurm.conf and the munge key pushed, munged + slurmctld +
slurmd running, `sinfo` showing every compute node idle), and as `orchestrate.py stop` when
the cluster is destroyed. It reads the cluster record from $CLUSTER_JSON and prints how to
reach the cluster; its output is kept at /clusters/{id}/logs. A non-zero exit fails the cluster.
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
    ctl = nodes_of(cluster, "controller")
    compute = nodes_of(cluster, "compute")
    if len(ctl) != 1 or not compute:
        print(f"expected one controller and at least one compute node, got {len(ctl)} and {len(compute)}")
        return 1
    c = ctl[0]
    print(f"slurm cluster {cluster['id']} ({cluster['product']} {cluster['version']}) of {cluster.get('owner', '?')}")
    print(f"  slurmctld: {c['name']} on {addr(c)}:{c['ports']['slurmctld']} (SlurmctldPort)")
    for n in compute:
        print(f"  slurmd:    {n['name']} on {addr(n)}:{n['ports']['slurmd']} "
              f"(CPUs={opts.get('cpus_per_node', '?')} RealMemory={opts.get('mem_per_node', '?')})")
    print(f"  partition main: {','.join(n['name'] for n in compute)} (default)")
    print(f"  try on the controller: srun -N {len(compute)} hostname")
    print("slurm cluster configured")
    return 0


def stop_node(cluster, node):
    """An update removes `node` (a scale-down). Its slurmd goes with its task; the next
    configure pushes a slurm.conf without it and restarts slurmctld, which then forgets it.
    Jobs still running on it end with the node (Slurm requeues batch jobs of a node that
    goes down, as it does for any failed node)."""
    print(f"slurm: {node} leaves the cluster; slurm.conf follows at the next configure")
    return 0


def stop(cluster):
    print(f"slurm cluster {cluster['id']} stopping")
    return 0


if __name__ == "__main__":
    sys.exit(main({"start": start, "stop": stop, "stop-node": stop_node}))
