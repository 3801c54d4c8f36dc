//! The Mesos v1 HTTP executor that runs inside each node container (`paas executor`).
