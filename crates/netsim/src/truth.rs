//! Ground truth: per simulated host, what it saw and did, written out as JSON.
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::IpAddr;

#[derive(Debug, Default, Clone, Serialize, PartialEq)]
pub struct HostTruth {
    /// Echo requests and SYNs received.
    pub requests: u64,
    /// Answers sent (echo replies, SYN-ACKs, RSTs), duplicates not included.
    pub replies: u64,
    /// Requests dropped (the loss share, and TCP silence).
    pub dropped: u64,
    /// Extra copies of answers sent.
    pub duplicates: u64,
    /// Requests answered by an ICMP error instead.
    pub errors: u64,
    /// Answers held back so that later ones overtook them.
    pub reordered: u64,
    /// Sum and sum of squares of the delays the answers really got (request read to answer
    /// written), in nanoseconds.
    pub delay_sum_ns: f64,
    pub delay_sq_sum_ns2: f64,
}

#[derive(Debug, Default, Serialize)]
pub struct Truth {
    pub hosts: BTreeMap<IpAddr, HostTruth>,
    /// Packets from the prober that did not parse (truncated, bad checksums).
    pub malformed: u64,
    /// Packets for addresses nobody simulates, or that are not requests.
    pub ignored: u64,
    /// Answers written, and how late against their due time (the simulator's own precision).
    pub sent: u64,
    pub late_sum_ns: f64,
    pub late_sq_sum_ns2: f64,
    pub late_max_ns: f64,
}

impl Truth {
    pub fn host(&mut self, ip: IpAddr) -> &mut HostTruth {
        self.hosts.entry(ip).or_default()
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }
}
