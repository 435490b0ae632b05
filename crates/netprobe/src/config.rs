//! Engine configuration, validated before the engine sees it.
use crate::histogram::HistogramLayout;
use std::fmt;
use std::time::Duration;

pub const MIN_INTERVAL: Duration = Duration::from_millis(10);
pub const MIN_TIMEOUT: Duration = Duration::from_millis(10);
/// Longer than any sane timeout, and short enough that the sample ring's 10 ns units hold it.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(40);
pub const MAX_PPS: u32 = 1_000_000;

/// Which interface a family's probes leave from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Interface {
    /// Not bound: the routing table decides per destination (more specific routes, blackhole
    /// and unreachable routes included).
    #[default]
    Routed,
    /// Bound to the interface of the family's default route, followed as it changes.
    Auto,
    /// This interface (by name), followed if it is removed and created again.
    Named(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineConfig {
    /// Time between two probes of one target.
    pub interval: Duration,
    /// Time after which an unanswered probe counts as lost.
    pub timeout: Duration,
    /// Global cap on probes per second, all targets together.
    pub max_pps: u32,
    /// ICMP identifier of every probe.
    pub identifier: u16,
    /// How transmit timestamps are tied to probes.
    pub stamp_keys: StampKeyMode,
    pub interface4: Interface,
    pub interface6: Interface,
    /// NIC hardware timestamps (`-hard`).
    pub hard: bool,
    /// Each target's RTT histograms: classic bucket bounds, native histogram on or off.
    pub histograms: HistogramLayout,
    /// For tests of the failure path only: the engine thread panics this long after it starts
    /// (`ICMP_EXPORTER_TEST_ENGINE_PANIC_MS`), as a bug would.
    pub panic_after: Option<Duration>,
    /// For tests of the wait's failure path only: this many `ppoll` calls fail as with ENOMEM
    /// (`ICMP_EXPORTER_TEST_POLL_FAILURES`).
    pub failing_polls: u32,
    /// Tests only: the engine thread hangs when told to stop, as a bug could make it.
    pub hang_on_stop: bool,
}

/// `Auto` ties each transmit stamp to its probe by `SCM_TS_OPT_ID` where the kernel has it
/// (Linux >= 6.13: a probe of each send socket at start tells), else by the copy of the packet
/// the stamp comes with. `Packet` always uses the copy: exactly what a kernel without
/// `SCM_TS_OPT_ID` does (environment variable `ICMP_EXPORTER_NO_TS_OPT_ID=1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StampKeyMode {
    #[default]
    Auto,
    Packet,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_millis(2000),
            timeout: Duration::from_millis(3000),
            max_pps: 10_000,
            identifier: std::process::id() as u16,
            stamp_keys: StampKeyMode::Auto,
            interface4: Interface::Routed,
            interface6: Interface::Routed,
            hard: false,
            histograms: HistogramLayout::default(),
            panic_after: None,
            failing_polls: 0,
            hang_on_stop: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

impl EngineConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.interval < MIN_INTERVAL {
            return Err(ConfigError(format!("interval must be at least {} ms", MIN_INTERVAL.as_millis())));
        }
        if self.timeout < MIN_TIMEOUT || self.timeout > MAX_TIMEOUT {
            return Err(ConfigError(format!(
                "timeout must be between {} and {} ms",
                MIN_TIMEOUT.as_millis(),
                MAX_TIMEOUT.as_millis()
            )));
        }
        if self.max_pps == 0 || self.max_pps > MAX_PPS {
            return Err(ConfigError(format!("maxpps must be between 1 and {MAX_PPS}")));
        }
        let timeout_ns = u64::try_from(self.timeout.as_nanos()).unwrap_or(u64::MAX);
        if !crate::lifecycle::fits_in_flight(self.max_pps, timeout_ns) {
            // Refused here rather than turned into send errors once the table is full.
            return Err(ConfigError(format!(
                "maxpps {} with timeout {} ms can put up to {} probes in flight, more than the {} the engine holds: \
                 lower maxpps or timeout (maxpps x timeout must stay under about {} probe-seconds)",
                self.max_pps,
                self.timeout.as_millis(),
                crate::lifecycle::peak_in_flight(self.max_pps, timeout_ns),
                crate::inflight::MAX_SLOTS,
                crate::inflight::MAX_SLOTS
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds() {
        assert!(EngineConfig::default().validate().is_ok());
        let ms = Duration::from_millis;
        assert!(EngineConfig { interval: ms(9), ..Default::default() }.validate().is_err());
        assert!(EngineConfig { timeout: ms(9), ..Default::default() }.validate().is_err());
        assert!(EngineConfig { timeout: ms(40_001), ..Default::default() }.validate().is_err());
        assert!(EngineConfig { max_pps: 0, ..Default::default() }.validate().is_err());
        assert!(EngineConfig { max_pps: MAX_PPS + 1, ..Default::default() }.validate().is_err());
        // What the in-flight table holds: 100,000 probes/s for 10 s fits, for 10.5 s it does not.
        let at = |max_pps, t| EngineConfig { max_pps, timeout: ms(t), ..Default::default() }.validate();
        assert!(at(100_000, 10_000).is_ok());
        let refused = at(100_000, 10_500).unwrap_err().to_string();
        assert!(refused.contains("maxpps 100000 with timeout 10500 ms"), "{refused}");
        assert!(at(MAX_PPS, 1_000).is_ok());
        assert!(at(MAX_PPS, 1_100).is_err());
        assert!(at(26_000, 40_000).is_ok());
    }
}
