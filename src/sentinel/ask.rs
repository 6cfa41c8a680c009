//! Asking one Sentinel: the master's address, configuration epoch, failover state and
//! replicas, as one consistent [`Report`].

use super::Target;
use crate::backend::ControlConn;
use crate::reply::Decoded;
use std::collections::HashMap;
use std::time::Duration;

/// Failover states in which a replica is chosen or being promoted while the old master
/// may still accept writes that the promotion will discard: no master is used then.
const PROMOTING: &[&str] = &["select_slave", "send_slaveof_noone", "wait_promotion"];

/// Sentinel's default `failover-timeout`, if a Sentinel does not say.
const DEFAULT_FAILOVER_TIMEOUT: Duration = Duration::from_secs(180);

/// What one Sentinel says about the master.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Report {
    /// The Sentinel's address.
    pub(super) sentinel: String,
    /// `SENTINEL GET-MASTER-ADDR-BY-NAME` (during a failover, the promoted replica once
    /// it is confirmed).
    pub(super) master: String,
    /// The master's configuration epoch.
    pub(super) epoch: u64,
    /// The failover state, while this Sentinel leads a failover.
    pub(super) failover_state: Option<String>,
    /// The master's `failover-timeout`.
    pub(super) failover_timeout: Duration,
    /// The replicas it lists, and how it sees each.
    pub(super) replicas: Vec<(String, Seen)>,
}

impl Report {
    /// Whether this Sentinel is choosing or promoting a replica.
    pub(super) fn promoting(&self) -> bool {
        self.failover_state
            .as_deref()
            .is_some_and(|s| PROMOTING.contains(&s))
    }
}

/// How a Sentinel sees a replica, from its flags; the better the greater.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Seen {
    /// Flagged `s_down` or `o_down`.
    Down,
    /// Flagged `disconnected`: the Sentinel has no link to it (yet). Right after a
    /// failover every Sentinel sees every replica so for a moment.
    Disconnected,
    /// None of those flags.
    Up,
}

impl Seen {
    pub(super) fn from_flags(flags: &str) -> Seen {
        let has = |f: &str| flags.split(',').any(|x| x == f);
        if has("s_down") || has("o_down") {
            Seen::Down
        } else if has("disconnected") {
            Seen::Disconnected
        } else {
            Seen::Up
        }
    }
}

/// Why a Sentinel gave no usable report.
#[derive(Debug)]
pub(super) enum AskError {
    /// It could not be asked (connection, authentication, unknown master name …).
    Failed(String),
    /// Its epoch changed between two answers: a failover step happened meanwhile.
    Moving,
}

/// `ip:port`, with brackets for IPv6.
pub(super) fn join_addr(ip: &str, port: &str) -> String {
    if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    }
}

/// A flat `[field, value, …]` reply as a map.
fn fields(d: Decoded) -> Option<HashMap<String, String>> {
    let items = d.into_items()?;
    let mut out = HashMap::new();
    let mut it = items.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        out.insert(k.as_str()?, v.as_str().unwrap_or_default());
    }
    Some(out)
}

/// Ask one Sentinel; the connection comes back for reuse unless it broke.
pub(super) async fn ask(
    t: Target,
    conn: Option<ControlConn>,
) -> (Target, Option<ControlConn>, Result<Report, AskError>) {
    let mut c = match conn {
        Some(c) => c,
        None => match ControlConn::connect(&t.params()).await {
            Ok(c) => c,
            Err(e) => {
                let why = t.reason(&e);
                return (t, None, Err(AskError::Failed(why)));
            }
        },
    };
    let out = query(&t, &mut c).await;
    let keep = !matches!(&out, Err((true, _)));
    let out = out.map_err(|(_, e)| e);
    (t, keep.then_some(c), out)
}

/// The four questions of one report. The master's epoch is read before and after its
/// address, so that an address and an epoch from either side of a failover step are
/// never paired. An error says whether the connection is broken.
async fn query(t: &Target, c: &mut ControlConn) -> Result<Report, (bool, AskError)> {
    let bad = |what: &str| {
        (
            false,
            AskError::Failed(format!("unexpected reply to {what}")),
        )
    };
    let master_info = |d: Decoded| -> Result<HashMap<String, String>, (bool, AskError)> {
        fields(d).ok_or_else(|| bad("SENTINEL MASTER"))
    };
    let epoch_of = |f: &HashMap<String, String>| -> Result<u64, (bool, AskError)> {
        f.get("config-epoch")
            .and_then(|e| e.parse().ok())
            .ok_or_else(|| bad("SENTINEL MASTER"))
    };
    let before = epoch_of(&master_info(ask_one(t, c, b"MASTER").await?)?)?;
    let addr = ask_one(t, c, b"GET-MASTER-ADDR-BY-NAME").await?;
    let master = match addr.into_items().as_deref() {
        Some([ip, port]) => match (ip.as_str(), port.as_str()) {
            (Some(ip), Some(port)) => join_addr(&ip, &port),
            _ => return Err(bad("SENTINEL GET-MASTER-ADDR-BY-NAME")),
        },
        _ => {
            return Err((
                false,
                AskError::Failed(format!("does not know a master named {}", t.master_name)),
            ))
        }
    };
    let list = ask_one(t, c, b"REPLICAS").await?;
    let replicas = list
        .into_items()
        .ok_or_else(|| bad("SENTINEL REPLICAS"))?
        .into_iter()
        .filter_map(fields)
        .filter_map(|f| {
            let seen = Seen::from_flags(f.get("flags").map_or("", String::as_str));
            Some((join_addr(f.get("ip")?, f.get("port")?), seen))
        })
        .collect();
    let info = master_info(ask_one(t, c, b"MASTER").await?)?;
    let epoch = epoch_of(&info)?;
    if epoch != before {
        return Err((false, AskError::Moving));
    }
    Ok(Report {
        sentinel: t.addr.clone(),
        master,
        epoch,
        failover_state: info.get("failover-state").cloned(),
        failover_timeout: info
            .get("failover-timeout")
            .and_then(|v| v.parse().ok())
            .map_or(DEFAULT_FAILOVER_TIMEOUT, Duration::from_millis),
        replicas,
    })
}

/// `SENTINEL <what> <master name>`; an error says whether the connection is broken.
async fn ask_one(
    t: &Target,
    c: &mut ControlConn,
    what: &[u8],
) -> Result<Decoded, (bool, AskError)> {
    match c
        .call(
            &[b"SENTINEL", what, t.master_name.as_bytes()],
            t.call_timeout,
        )
        .await
    {
        Ok(Decoded::Error(e)) => Err((false, AskError::Failed(e))),
        Ok(d) => Ok(d),
        Err(e) => Err((true, AskError::Failed(t.reason(&e)))),
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A report as the tests write one: every replica seen up, a 3 s failover timeout.
    pub(in crate::sentinel) fn report(
        sentinel: &str,
        master: &str,
        epoch: u64,
        state: Option<&str>,
        replicas: &[&str],
    ) -> Report {
        Report {
            sentinel: sentinel.into(),
            master: master.into(),
            epoch,
            failover_state: state.map(String::from),
            failover_timeout: Duration::from_secs(3),
            replicas: replicas.iter().map(|s| (s.to_string(), Seen::Up)).collect(),
        }
    }

    #[test]
    fn addresses_join() {
        assert_eq!(join_addr("::1", "7000"), "[::1]:7000");
        assert_eq!(join_addr("127.0.0.1", "7000"), "127.0.0.1:7000");
    }
}
