//! netsim: thousands of simulated hosts behind a TUN device, each with its own delay, jitter,
//! loss, duplicates, ICMP errors and TCP port behaviour, and the ground truth of what each one
//! saw and did. Replaces netem (absent here) for accuracy tests and benchmarks.
pub mod profile;
pub mod respond;
pub mod sim;
pub mod truth;
pub mod tun;
