//! netprobe: the icmp-exporter engine. One thread owns raw sockets, sends paced probes,
//! reads replies and kernel timestamps, and keeps per-target statistics. No Node in here.
pub mod checksum;
pub mod cmsg;
pub mod config;
pub mod counters;
pub mod engine;
pub mod filter;
pub mod histogram;
pub mod hwstamp;
pub mod inflight;
pub mod lifecycle;
pub mod netlink;
pub mod options;
pub mod ports;
pub mod recv_batch;
pub mod ring;
pub mod routes;
pub mod rtt;
pub mod sched;
pub mod schedule;
pub mod sockets;
pub mod stats;
pub mod sys;
pub mod token;
pub mod window;
pub mod wire;

/// This crate's version, for build_info and --version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

pub use config::{EngineConfig, Interface, StampKeyMode};
pub use counters::CountersSnapshot;
pub use engine::{Engine, EngineError, IcmpMode, ProbeKind, Proto, TargetId, TargetSnapshot};
pub use histogram::{HistogramLayout, NativeBuckets};
pub use options::ProbeOptions;
pub use stats::Counters;
pub use window::Window;
pub use wire::icmp::Family;
