//! The executor's configuration, read from the environment the Mesos agent sets for it
//! (`MESOS_FRAMEWORK_ID`, `MESOS_SLAVE_PID`, `MESOS_CHECKPOINT`, …), and the parsing of Mesos'
//! duration strings (`5secs`, `1.5mins`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Mesos' own default for `--executor_shutdown_grace_period`.
const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Mesos' default `--recovery_timeout`.
const DEFAULT_RECOVERY_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// Mesos' default `--executor_reregistration_timeout`, which becomes the backoff cap.
const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(2);

/// Why the environment does not describe a usable executor.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("environment variable {0} is not set (is this process started by a Mesos agent?)")]
    Missing(&'static str),
    #[error("{var}={value:?}: {why}")]
    Invalid {
        var: &'static str,
        value: String,
        why: String,
    },
}

/// Where the agent's executor API lives.
///
/// An IP address, never a host name: the node image is `FROM scratch` and has no resolver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentEndpoint {
    /// The agent's libprocess socket.
    pub addr: SocketAddr,
    /// The request path, `/slave(1)/api/v1/executor` or `/api/v1/executor`.
    pub path: String,
}

impl AgentEndpoint {
    /// From `MESOS_SLAVE_PID` (`slave(1)@10.0.0.5:5051`). Preferred: it names the agent actor,
    /// which matters when several agents share one libprocess socket (e.g. `mesos-local`, where
    /// a bare `/api/v1/executor` reaches the master instead).
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] unless the value is `<actor>@<ip>:<port>`.
    pub fn from_slave_pid(pid: &str) -> Result<Self, ConfigError> {
        let invalid = |why: &str| ConfigError::Invalid {
            var: "MESOS_SLAVE_PID",
            value: pid.to_owned(),
            why: why.to_owned(),
        };
        let (actor, addr) = pid
            .split_once('@')
            .ok_or_else(|| invalid("expected <actor>@<ip>:<port>"))?;
        if actor.is_empty() || actor.contains(['/', ' ']) {
            return Err(invalid("bad actor name"));
        }
        let addr = addr
            .parse::<SocketAddr>()
            .map_err(|_| invalid("expected an IP address and port after '@'"))?;
        Ok(Self {
            addr,
            path: format!("/{actor}/api/v1/executor"),
        })
    }

    /// From `MESOS_AGENT_ENDPOINT` (`10.0.0.5:5051`).
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] unless the value is `<ip>:<port>`.
    pub fn from_agent_endpoint(endpoint: &str) -> Result<Self, ConfigError> {
        let addr = endpoint
            .parse::<SocketAddr>()
            .map_err(|_| ConfigError::Invalid {
                var: "MESOS_AGENT_ENDPOINT",
                value: endpoint.to_owned(),
                why: "expected an IP address and port".to_owned(),
            })?;
        Ok(Self {
            addr,
            path: "/api/v1/executor".to_owned(),
        })
    }

    /// The full URL, for logs.
    pub fn url(&self) -> String {
        format!("http://{}{}", self.addr, self.path)
    }
}

/// Everything the executor needs to know before it subscribes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecutorConfig {
    /// `MESOS_SLAVE_PID`, else `MESOS_AGENT_ENDPOINT`.
    pub agent: AgentEndpoint,
    /// `MESOS_FRAMEWORK_ID`.
    pub framework_id: String,
    /// `MESOS_EXECUTOR_ID`.
    pub executor_id: String,
    /// `MESOS_CHECKPOINT=1`: the agent can restart under us, so a lost stream is retried.
    pub checkpoint: bool,
    /// `MESOS_EXECUTOR_SHUTDOWN_GRACE_PERIOD`: how long the agent waits after SHUTDOWN before it
    /// destroys the container; also the kill grace period when a task has no `KillPolicy`.
    pub shutdown_grace_period: Duration,
    /// `MESOS_RECOVERY_TIMEOUT`: give up re-subscribing after this long.
    pub recovery_timeout: Duration,
    /// `MESOS_SUBSCRIPTION_BACKOFF_MAX`: the longest sleep between re-subscribe attempts.
    pub subscription_backoff_max: Duration,
    /// `MESOS_EXECUTOR_AUTHENTICATION_TOKEN`, sent as a bearer token when the agent wants one.
    pub auth_token: Option<String>,
    /// `MESOS_SANDBOX`: the sandbox as this process sees it; node commands run there.
    pub sandbox: Option<PathBuf>,
}

impl ExecutorConfig {
    /// Reads the configuration from this process's environment.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming the variable that is missing or malformed.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the configuration through `lookup` (the environment, or a map in tests).
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming the variable that is missing or malformed.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| lookup(name).filter(|v| !v.is_empty());
        let agent = match (get("MESOS_SLAVE_PID"), get("MESOS_AGENT_ENDPOINT")) {
            (Some(pid), _) => AgentEndpoint::from_slave_pid(&pid)?,
            (None, Some(endpoint)) => AgentEndpoint::from_agent_endpoint(&endpoint)?,
            (None, None) => return Err(ConfigError::Missing("MESOS_SLAVE_PID")),
        };
        let duration = |var: &'static str, default: Duration| match get(var) {
            None => Ok(default),
            Some(value) => {
                parse_duration(&value).map_err(|why| ConfigError::Invalid { var, value, why })
            }
        };
        Ok(Self {
            agent,
            framework_id: get("MESOS_FRAMEWORK_ID")
                .ok_or(ConfigError::Missing("MESOS_FRAMEWORK_ID"))?,
            executor_id: get("MESOS_EXECUTOR_ID")
                .ok_or(ConfigError::Missing("MESOS_EXECUTOR_ID"))?,
            checkpoint: get("MESOS_CHECKPOINT").as_deref() == Some("1"),
            shutdown_grace_period: duration(
                "MESOS_EXECUTOR_SHUTDOWN_GRACE_PERIOD",
                DEFAULT_SHUTDOWN_GRACE,
            )?,
            recovery_timeout: duration("MESOS_RECOVERY_TIMEOUT", DEFAULT_RECOVERY_TIMEOUT)?,
            subscription_backoff_max: duration(
                "MESOS_SUBSCRIPTION_BACKOFF_MAX",
                DEFAULT_BACKOFF_MAX,
            )?,
            auth_token: get("MESOS_EXECUTOR_AUTHENTICATION_TOKEN"),
            sandbox: get("MESOS_SANDBOX").map(PathBuf::from),
        })
    }
}

/// Parses a stout duration: a (possibly fractional) number followed directly by one of `ns`,
/// `us`, `ms`, `secs`, `mins`, `hrs`, `days`, `weeks`.
///
/// # Errors
///
/// A message saying what is wrong with the text.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| "missing unit (ns, us, ms, secs, mins, hrs, days, weeks)".to_owned())?;
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{number:?} is not a number"))?;
    let seconds_per_unit = match unit {
        "ns" => 1e-9,
        "us" => 1e-6,
        "ms" => 1e-3,
        "secs" => 1.0,
        "mins" => 60.0,
        "hrs" => 3600.0,
        "days" => 86400.0,
        "weeks" => 7.0 * 86400.0,
        other => return Err(format!("unknown unit {other:?}")),
    };
    Duration::try_from_secs_f64(value * seconds_per_unit).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5secs"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("1.5mins"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("15mins"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2hrs"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("1weeks"), Ok(Duration::from_secs(604_800)));
        assert_eq!(parse_duration("10ns"), Ok(Duration::from_nanos(10)));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("5s").is_err());
        assert!(parse_duration("secs").is_err());
        assert!(parse_duration("1.2.3secs").is_err());
    }

    #[test]
    fn slave_pid_names_the_agent_actor() {
        let e = AgentEndpoint::from_slave_pid("slave(1)@127.0.0.1:5050").unwrap();
        assert_eq!(e.url(), "http://127.0.0.1:5050/slave(1)/api/v1/executor");
        assert!(AgentEndpoint::from_slave_pid("slave(1)@agent.example:5051").is_err());
        assert!(AgentEndpoint::from_slave_pid("127.0.0.1:5051").is_err());
    }

    #[test]
    fn slave_pid_wins_over_agent_endpoint() {
        let cfg = ExecutorConfig::from_lookup(env(&[
            ("MESOS_SLAVE_PID", "slave(2)@10.0.0.5:5051"),
            ("MESOS_AGENT_ENDPOINT", "10.0.0.9:5051"),
            ("MESOS_FRAMEWORK_ID", "fw"),
            ("MESOS_EXECUTOR_ID", "ex"),
        ]))
        .unwrap();
        assert_eq!(
            cfg.agent.url(),
            "http://10.0.0.5:5051/slave(2)/api/v1/executor"
        );
        assert!(!cfg.checkpoint);
        assert_eq!(cfg.shutdown_grace_period, DEFAULT_SHUTDOWN_GRACE);
    }

    #[test]
    fn agent_endpoint_fallback_and_checkpoint_settings() {
        let cfg = ExecutorConfig::from_lookup(env(&[
            ("MESOS_AGENT_ENDPOINT", "10.0.0.9:5051"),
            ("MESOS_FRAMEWORK_ID", "fw"),
            ("MESOS_EXECUTOR_ID", "ex"),
            ("MESOS_CHECKPOINT", "1"),
            ("MESOS_EXECUTOR_SHUTDOWN_GRACE_PERIOD", "3secs"),
            ("MESOS_RECOVERY_TIMEOUT", "1mins"),
            ("MESOS_SUBSCRIPTION_BACKOFF_MAX", "500ms"),
        ]))
        .unwrap();
        assert_eq!(cfg.agent.url(), "http://10.0.0.9:5051/api/v1/executor");
        assert!(cfg.checkpoint);
        assert_eq!(cfg.shutdown_grace_period, Duration::from_secs(3));
        assert_eq!(cfg.recovery_timeout, Duration::from_secs(60));
        assert_eq!(cfg.subscription_backoff_max, Duration::from_millis(500));
    }

    #[test]
    fn missing_and_malformed_variables_are_named() {
        assert_eq!(
            ExecutorConfig::from_lookup(env(&[("MESOS_FRAMEWORK_ID", "fw")])),
            Err(ConfigError::Missing("MESOS_SLAVE_PID"))
        );
        assert_eq!(
            ExecutorConfig::from_lookup(env(&[
                ("MESOS_AGENT_ENDPOINT", "10.0.0.9:5051"),
                ("MESOS_FRAMEWORK_ID", "fw"),
            ])),
            Err(ConfigError::Missing("MESOS_EXECUTOR_ID"))
        );
        let err = ExecutorConfig::from_lookup(env(&[
            ("MESOS_AGENT_ENDPOINT", "10.0.0.9:5051"),
            ("MESOS_FRAMEWORK_ID", "fw"),
            ("MESOS_EXECUTOR_ID", "ex"),
            ("MESOS_EXECUTOR_SHUTDOWN_GRACE_PERIOD", "5"),
        ]))
        .unwrap_err();
        assert!(matches!(
            err,
            ConfigError::Invalid {
                var: "MESOS_EXECUTOR_SHUTDOWN_GRACE_PERIOD",
                ..
            }
        ));
    }
}
