//! Every piece of generated protobuf code, in modules that mirror the proto packages
//! (`mesos.v1` → [`mesos::v1`], `mesos.v1.scheduler` → [`mesos::v1::scheduler`], …).
//!
//! Owns the `include!`s of `build.rs` output and a few helpers over the generated types. It does
//! not own any wire logic (RecordIO, HTTP): that lives with the scheduler and the executor.
//! Generated code is exempt from the house lints it cannot follow (docs, clippy style).

/// Our own packages.
pub mod paas {
    /// Package `paas.nodeagent.v1`: the NodeAgent gRPC service the executor serves and the
    /// orchestrator calls.
    pub mod nodeagent {
        #[allow(missing_docs, clippy::all, clippy::pedantic)]
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/paas.nodeagent.v1.rs"));
        }
    }
}

/// Apache Mesos packages.
pub mod mesos {
    /// Package `mesos.v1`: the core types shared by the scheduler and executor APIs.
    #[allow(missing_docs, clippy::all, clippy::pedantic)]
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/mesos.v1.rs"));

        /// Package `mesos.v1.scheduler`: the v1 scheduler API `Call` and `Event`.
        #[allow(missing_docs, clippy::all, clippy::pedantic)]
        pub mod scheduler {
            include!(concat!(env!("OUT_DIR"), "/mesos.v1.scheduler.rs"));
        }

        /// Package `mesos.v1.executor`: the v1 executor API `Call` and `Event`.
        #[allow(missing_docs, clippy::all, clippy::pedantic)]
        pub mod executor {
            include!(concat!(env!("OUT_DIR"), "/mesos.v1.executor.rs"));
        }

        impl TaskState {
            /// Whether the state is terminal in the master's sense (`protobuf::isTerminalState`):
            /// the task will not run again and its resources are released.
            ///
            /// TASK_LOST counts as terminal even though a partitioned agent that comes back can
            /// report the task RUNNING again; TASK_UNREACHABLE and TASK_UNKNOWN do not.
            pub fn is_terminal(self) -> bool {
                matches!(
                    self,
                    TaskState::TaskFinished
                        | TaskState::TaskFailed
                        | TaskState::TaskKilled
                        | TaskState::TaskLost
                        | TaskState::TaskError
                        | TaskState::TaskDropped
                        | TaskState::TaskGone
                        | TaskState::TaskGoneByOperator
                )
            }
        }

        impl DurationInfo {
            /// The duration as a [`std::time::Duration`]; negative values clamp to zero.
            pub fn to_std(&self) -> std::time::Duration {
                std::time::Duration::from_nanos(u64::try_from(self.nanoseconds).unwrap_or(0))
            }

            /// A `DurationInfo` from a [`std::time::Duration`], saturating at `i64::MAX` ns.
            pub fn from_std(d: std::time::Duration) -> Self {
                Self {
                    nanoseconds: i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
                }
            }
        }

        impl Resource {
            /// The scalar quantity of a SCALAR resource (`cpus`, `mem`, …), if it is one.
            pub fn scalar_value(&self) -> Option<f64> {
                (self.r#type() == value::Type::Scalar)
                    .then(|| self.scalar.as_ref().map(|s| s.value))
                    .flatten()
            }
        }

        macro_rules! id_from_str {
            ($($t:ident),*) => {$(
                impl From<&str> for $t {
                    fn from(value: &str) -> Self {
                        Self { value: value.to_owned() }
                    }
                }
                impl From<String> for $t {
                    fn from(value: String) -> Self {
                        Self { value }
                    }
                }
            )*};
        }
        id_from_str!(
            FrameworkId,
            OfferId,
            AgentId,
            TaskId,
            ExecutorId,
            OperationId
        );
    }
}

#[cfg(test)]
mod tests {
    use super::mesos::v1::{TaskId, TaskState, TaskStatus};
    use prost::Message;

    #[test]
    fn required_zero_enum_is_encoded() {
        // TASK_STARTING is 0: proto3-style encoding would drop it and Mesos would answer 400.
        let status = TaskStatus {
            task_id: TaskId::from("t"),
            state: TaskState::TaskStarting as i32,
            ..Default::default()
        };
        let bytes = status.encode_to_vec();
        // field 1 (task_id, len 3: 0x0a 't') then field 2 varint 0.
        assert_eq!(bytes, vec![0x0a, 0x03, 0x0a, 0x01, b't', 0x10, 0x00]);
    }

    #[test]
    fn terminal_states() {
        assert!(TaskState::TaskFinished.is_terminal());
        assert!(TaskState::TaskKilled.is_terminal());
        assert!(!TaskState::TaskRunning.is_terminal());
        assert!(!TaskState::TaskKilling.is_terminal());
        assert!(!TaskState::TaskUnreachable.is_terminal());
    }
}
