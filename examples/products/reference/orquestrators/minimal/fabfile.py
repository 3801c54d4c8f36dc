#!/usr/bin/env python3
"""Orchestration script of the reference product.

Called by the orchestrator as `fabfile.py start` once every service of the cluster is
configured, started and ready (again after a node was replaced or the cluster was updated),
as `fabfile.py stop-node NODE` before an update removes NODE (best effort), and as
`fabfile.py stop` when the cluster is destroyed (best effort, while its nodes are being
killed). It reads the cluster description from the file
named by $CLUSTER_JSON and prints a summary (stored, served at /clusters/{id}/logs).
Environment: CLUSTER_ID, CLUSTER_JSON, PAAS_API_URL. A non-zero exit fails the cluster.
"""
import json
import os
import sys


def start(cluster):
    print(f"cluster {cluster['id']} ({cluster['product']} {cluster['version']}) of {cluster.get('owner', '?')}")
    for node in cluster["nodes"]:
        ports = ", ".join(f"{k}={v}" for k, v in sorted(node.get("ports", {}).items()))
        print(f"  node {node['name']}: {node['status']} on {node.get('address') or node.get('host') or '?'} [{ports}]")
    for svc in cluster["services"]:
        print(f"  service {svc['name']}: {', '.join(svc['nodes']) or '-'}")
    print(f"  api: {os.environ.get('PAAS_API_URL', '?')}/clusters/{os.environ.get('CLUSTER_ID', cluster['id'])}")
    print("reference cluster configured")


def stop(cluster):
    print(f"cluster {cluster['id']} stopping")


def stop_node(cluster, node):
    print(f"node {node} drained: it leaves cluster {cluster['id']}")


def main():
    action = sys.argv[1] if len(sys.argv) > 1 else "start"
    with open(os.environ["CLUSTER_JSON"]) as f:
        cluster = json.load(f)
    if action == "stop-node" and len(sys.argv) == 3:
        stop_node(cluster, sys.argv[2])
    else:
        {"start": start, "stop": stop}[action](cluster)


if __name__ == "__main__":
    main()
