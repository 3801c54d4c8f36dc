#!/usr/bin/env python3
"""SparkPi in Python: estimates pi by throwing darts, as Spark's own examples/pi.py.

usage: spark-submit /usr/local/lib/paas-spark/pi.py [partitions]
The master comes from spark-defaults.conf (rendered by the orchestrator) or --master.
Prints "Pi is roughly 3.14…".
"""
import sys
from operator import add
from random import random

from pyspark.sql import SparkSession


def inside(_):
    x = random() * 2 - 1
    y = random() * 2 - 1
    return 1 if x * x + y * y <= 1 else 0


if __name__ == "__main__":
    spark = SparkSession.builder.appName("PythonPi").getOrCreate()
    partitions = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    n = 100000 * partitions
    count = spark.sparkContext.parallelize(range(1, n + 1), partitions).map(inside).reduce(add)
    print(f"Pi is roughly {4.0 * count / n:f}")
    spark.stop()
