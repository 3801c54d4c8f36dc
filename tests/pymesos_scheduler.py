"""A small pymesos scheduler driven against mesos-local by tests/pymesos.rs.

pymesos (PyPI) speaks the v1 scheduler API in JSON with its own HTTP client: a client
nobody here wrote. It subscribes, takes the first offer, launches one task whose custom
executor is `paas executor` (run by mesos-local's process containerizer), waits for
TASK_RUNNING, kills the task, waits for TASK_KILLED, and tears the framework down.

usage: pymesos_scheduler.py <master host:port> <path of the paas binary>
Prints one line per step; the last line is RESULT OK or RESULT FAIL <why>.
"""
import logging
import sys
import threading

from pymesos import MesosSchedulerDriver, Scheduler

TIMEOUT = 90


class Probe(Scheduler):
    def __init__(self, paas):
        self.paas = paas
        self.launched = False
        self.seen = []
        self.done = threading.Event()
        self.failure = None

    def registered(self, driver, framework_id, master_info):
        print("REGISTERED", framework_id["value"], flush=True)

    def resourceOffers(self, driver, offers):
        for offer in offers:
            if self.launched:
                driver.declineOffer(offer["id"], dict(refuse_seconds=3600))
                continue
            self.launched = True
            scalar = lambda name, v: dict(name=name, type="SCALAR", scalar=dict(value=v))
            task = dict(
                name="pymesos-probe",
                task_id=dict(value="pymesos-task"),
                agent_id=offer["agent_id"],
                resources=[scalar("cpus", 0.1), scalar("mem", 32)],
                executor=dict(
                    executor_id=dict(value="pymesos-executor"),
                    name="paas executor",
                    command=dict(value="%s executor" % self.paas),
                    resources=[scalar("cpus", 0.05), scalar("mem", 32)],
                ),
            )
            driver.launchTasks(offer["id"], [task], dict(refuse_seconds=3600))
            print("LAUNCHED on", offer["agent_id"]["value"], flush=True)

    def statusUpdate(self, driver, update):
        state = update["state"]
        print("UPDATE", update["task_id"]["value"], state, update.get("source"),
              "uuid" in update, flush=True)
        self.seen.append(state)
        if state == "TASK_RUNNING":
            driver.killTask(update["task_id"])
        elif state == "TASK_KILLED":
            self.done.set()
        elif state in ("TASK_FAILED", "TASK_LOST", "TASK_ERROR", "TASK_DROPPED"):
            self.failure = "%s: %s" % (state, update.get("message"))
            self.done.set()

    def error(self, driver, message):
        self.failure = "ERROR event: %s" % message
        self.done.set()


def main():
    logging.basicConfig(level=logging.WARNING)
    master, paas = sys.argv[1], sys.argv[2]
    probe = Probe(paas)
    framework = dict(user="root", name="pymesos-probe", hostname="localhost",
                     failover_timeout=0)
    driver = MesosSchedulerDriver(probe, framework, master, use_addict=False)
    driver.start()
    finished = probe.done.wait(TIMEOUT)
    driver.stop()
    driver.join()
    if not finished:
        print("RESULT FAIL timed out; states seen:", probe.seen, flush=True)
        return 1
    if probe.failure:
        print("RESULT FAIL", probe.failure, flush=True)
        return 1
    if "TASK_RUNNING" not in probe.seen:
        print("RESULT FAIL no TASK_RUNNING; states seen:", probe.seen, flush=True)
        return 1
    print("RESULT OK", probe.seen, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
