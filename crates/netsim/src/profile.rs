//! Host profiles: which simulated hosts exist and how each behaves, from a JSON config. A
//! profile can change at a given time (a step in loss or delay).
use serde::Deserialize;
use std::collections::HashMap;
use std::net::IpAddr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Dist {
    /// Uniform in [-jitter, +jitter].
    #[default]
    Uniform,
    /// Normal with standard deviation `jitter`.
    Normal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TcpAction {
    Synack,
    Rst,
    Silence,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    #[default]
    Unreachable,
    TimeExceeded,
}

/// How one host behaves. Probabilities are per request.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    #[serde(default)]
    pub delay_ms: f64,
    #[serde(default)]
    pub jitter_ms: f64,
    #[serde(default)]
    pub jitter: Dist,
    #[serde(default)]
    pub loss: f64,
    #[serde(default)]
    pub duplicate: f64,
    /// Share of answers held back by `reorder_ms` more, so that later answers overtake them.
    #[serde(default)]
    pub reorder: f64,
    #[serde(default)]
    pub reorder_ms: f64,
    /// Share of requests answered by an ICMP error instead of a reply.
    #[serde(default)]
    pub icmp_error: f64,
    #[serde(default)]
    pub error: ErrorKind,
    /// Per TCP port ("80": "synack"): SYN-ACK, RST or silence. Ports not listed: RST.
    #[serde(default)]
    pub tcp: HashMap<String, TcpAction>,
}

impl Profile {
    pub fn tcp_action(&self, port: u16) -> TcpAction {
        self.tcp.get(&port.to_string()).copied().unwrap_or(TcpAction::Rst)
    }
}

/// A range of hosts sharing a profile.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct HostRange {
    /// CIDR, e.g. `198.18.200.0/24` or `2001:2:0:c000::/120`.
    pub prefix: String,
    #[serde(flatten)]
    pub profile: Profile,
}

/// From `at_ms` after start, the hosts of `prefix` take `profile`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Change {
    pub at_ms: u64,
    pub prefix: String,
    #[serde(flatten)]
    pub profile: Profile,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub hosts: Vec<HostRange>,
    #[serde(default)]
    pub changes: Vec<Change>,
    /// Seed of the random decisions, for reproducible runs.
    #[serde(default)]
    pub seed: u64,
}

/// A parsed CIDR prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prefix {
    addr: u128,
    len: u8,
    v6: bool,
}

impl Prefix {
    pub fn parse(s: &str) -> Result<Prefix, String> {
        let (a, l) = s.split_once('/').ok_or_else(|| format!("{s:?}: expected address/length"))?;
        let ip: IpAddr = a.parse().map_err(|_| format!("{s:?}: bad address"))?;
        let len: u8 = l.parse().map_err(|_| format!("{s:?}: bad length"))?;
        let (addr, v6, max) = match ip {
            IpAddr::V4(v4) => (u128::from(u32::from(v4)), false, 32),
            IpAddr::V6(v6) => (u128::from(v6), true, 128),
        };
        if len > max {
            return Err(format!("{s:?}: length over {max}"));
        }
        Ok(Prefix { addr, len, v6 })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let (a, v6, bits) = match ip {
            IpAddr::V4(v4) => (u128::from(u32::from(v4)), false, 32u32),
            IpAddr::V6(v6) => (u128::from(v6), true, 128u32),
        };
        if v6 != self.v6 {
            return false;
        }
        let shift = bits - u32::from(self.len);
        shift >= bits || (a >> shift) == (self.addr >> shift)
    }
}

/// The config, compiled for lookups.
pub struct Hosts {
    ranges: Vec<(Prefix, Profile)>,
    changes: Vec<(u64, Prefix, Profile)>,
    pub seed: u64,
}

impl Hosts {
    pub fn new(config: Config) -> Result<Hosts, String> {
        let ranges: Vec<(Prefix, Profile)> = config
            .hosts
            .into_iter()
            .map(|h| Ok((Prefix::parse(&h.prefix)?, h.profile)))
            .collect::<Result<_, String>>()?;
        let mut changes: Vec<(u64, Prefix, Profile)> = config
            .changes
            .into_iter()
            .map(|c| Ok((c.at_ms, Prefix::parse(&c.prefix)?, c.profile)))
            .collect::<Result<_, String>>()?;
        changes.sort_by_key(|c| c.0);
        for (_, p) in &ranges {
            check(p)?;
        }
        for (_, _, p) in &changes {
            check(p)?;
        }
        Ok(Hosts { ranges, changes, seed: config.seed })
    }

    /// The profile of `ip` at `elapsed_ms` after start: the latest change that applies, else
    /// the first range that contains it; None for an address nobody simulates.
    pub fn profile(&self, ip: IpAddr, elapsed_ms: u64) -> Option<&Profile> {
        let changed = self.changes.iter().rev().find(|(at, p, _)| *at <= elapsed_ms && p.contains(ip)).map(|c| &c.2);
        changed.or_else(|| self.ranges.iter().find(|(p, _)| p.contains(ip)).map(|r| &r.1))
    }
}

fn check(p: &Profile) -> Result<(), String> {
    for (name, v) in
        [("loss", p.loss), ("duplicate", p.duplicate), ("reorder", p.reorder), ("icmp_error", p.icmp_error)]
    {
        if !(0.0..=1.0).contains(&v) {
            return Err(format!("{name} must be between 0 and 1, got {v}"));
        }
    }
    for port in p.tcp.keys() {
        match port.parse::<u16>() {
            Ok(1..) => {}
            _ => return Err(format!("TCP port {port:?} must be between 1 and 65535")),
        }
    }
    if [p.delay_ms, p.jitter_ms, p.reorder_ms].iter().any(|v| *v < 0.0 || !v.is_finite()) {
        return Err("delay_ms, jitter_ms and reorder_ms must be finite and not negative".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes() {
        let p = Prefix::parse("198.18.200.0/24").unwrap();
        assert!(p.contains("198.18.200.77".parse().unwrap()));
        assert!(!p.contains("198.18.201.1".parse().unwrap()));
        assert!(!p.contains("2001:2::1".parse().unwrap()));
        let all = Prefix::parse("0.0.0.0/0").unwrap();
        assert!(all.contains("198.18.0.1".parse().unwrap()));
        let v6 = Prefix::parse("2001:2:0:c000::/50").unwrap();
        assert!(v6.contains("2001:2:0:c000::5".parse().unwrap()));
        assert!(!v6.contains("2001:2:0:8000::5".parse().unwrap()));
        assert!(Prefix::parse("198.18.0.0/33").is_err());
        assert!(Prefix::parse("nonsense").is_err());
    }

    #[test]
    fn config_and_changes() {
        let json = r#"{
            "seed": 7,
            "hosts": [
                {"prefix": "198.18.200.0/24", "delay_ms": 20, "jitter_ms": 2, "jitter": "normal", "loss": 0.03, "tcp": {"80": "synack"}},
                {"prefix": "2001:2:0:c000::/64", "delay_ms": 1}
            ],
            "changes": [{"at_ms": 5000, "prefix": "198.18.200.0/25", "loss": 0.5}]
        }"#;
        let hosts = Hosts::new(serde_json::from_str(json).unwrap()).unwrap();
        let a = "198.18.200.9".parse().unwrap();
        let before = hosts.profile(a, 4999).unwrap();
        assert_eq!((before.delay_ms, before.loss, before.jitter), (20.0, 0.03, Dist::Normal));
        assert_eq!(before.tcp_action(80), TcpAction::Synack);
        assert_eq!(before.tcp_action(81), TcpAction::Rst);
        assert_eq!(hosts.profile(a, 5000).unwrap().loss, 0.5);
        assert_eq!(hosts.profile("198.18.200.200".parse().unwrap(), 6000).unwrap().loss, 0.03, "outside the change");
        assert!(hosts.profile("198.18.9.9".parse().unwrap(), 0).is_none());
        assert_eq!(hosts.seed, 7);
    }

    #[test]
    fn bad_configs_are_refused() {
        let bad =
            |json: &str| serde_json::from_str::<Config>(json).map_err(|e| e.to_string()).and_then(Hosts::new).err();
        assert!(bad(r#"{"hosts": [{"prefix": "198.18.0.0/24", "loss": 1.5}]}"#).unwrap().contains("loss"));
        assert!(bad(r#"{"hosts": [{"prefix": "198.18.0.0/24", "delay_ms": -1}]}"#).is_some());
        assert!(bad(r#"{"hosts": [{"prefix": "x"}]}"#).is_some());
        assert!(bad(r#"{"hosts": [], "bogus": 1}"#).is_some());
        assert!(bad(r#"{"hosts": [{"prefix": "198.18.0.0/24", "tcp": {"0": "rst"}}]}"#).unwrap().contains("TCP port"));
    }
}
