//! napi-rs binding of the netprobe engine: types in, types out, errors mapped to JS errors.
//! No sockets and no logic a test would want to reach without Node.
use napi::bindgen_prelude::*;
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi_derive::napi;
use netprobe::sockets::StampMatching;
use netprobe::{
    EngineConfig, EngineError, HistogramLayout, IcmpMode, Interface, ProbeKind, Proto, StampKeyMode, TargetSnapshot,
};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

#[napi(object)]
pub struct EngineOptions {
    /// Milliseconds between two probes of one target.
    pub interval_ms: u32,
    /// Milliseconds after which an unanswered probe counts as lost.
    pub timeout_ms: u32,
    /// Probes per second, all targets together.
    pub max_pps: u32,
    /// ICMP identifier (0..65535).
    pub identifier: u32,
    /// Interface for IPv4 probes: a name, "auto" (the default route's), or absent (not bound:
    /// the routing table decides).
    pub interface4: Option<String>,
    /// Interface for IPv6 probes, as `interface4`.
    pub interface6: Option<String>,
    /// NIC hardware timestamps (`-hard`).
    pub hard: Option<bool>,
    /// Upper bounds of each target's classic RTT histogram buckets, in seconds, increasing
    /// (none: no classic histogram).
    pub buckets_seconds: Option<Vec<f64>>,
    /// Keep each target's native histogram (default true).
    pub native_histograms: Option<bool>,
}

fn interface(choice: Option<String>) -> Result<Interface> {
    match choice.as_deref() {
        None => Ok(Interface::Routed),
        Some("auto") => Ok(Interface::Auto),
        Some("") => Err(Error::new(Status::InvalidArg, "an interface name cannot be empty")),
        Some(name) => Ok(Interface::Named(name.to_string())),
    }
}

/// How a target's probes differ from the default ones (`/probe` parameters).
#[napi(object)]
pub struct ProbeOptions {
    /// ICMP payload bytes (12..8972; default 56).
    pub size: Option<u32>,
    /// IPv4 TTL / IPv6 hop limit (1..255).
    pub ttl: Option<u32>,
    /// IPv4 TOS byte / IPv6 traffic class (0..255).
    pub tos: Option<u32>,
    /// Don't fragment (true), may fragment (false); absent: the kernel's default.
    pub df: Option<bool>,
    /// A local address to send from.
    pub source: Option<String>,
}

fn probe_options(o: Option<ProbeOptions>) -> Result<netprobe::ProbeOptions> {
    let Some(o) = o else { return Ok(netprobe::ProbeOptions::default()) };
    let invalid = |what: &str| Error::new(Status::InvalidArg, what.to_string());
    let byte = |v: Option<u32>, what: &str| v.map(|n| u8::try_from(n).map_err(|_| invalid(what))).transpose();
    Ok(netprobe::ProbeOptions {
        size: o
            .size
            .map(|n| u16::try_from(n).map_err(|_| invalid("size must be between 12 and 8972 bytes")))
            .transpose()?,
        ttl: byte(o.ttl, "ttl must be between 1 and 255")?,
        tos: byte(o.tos, "tos must be between 0 and 255")?,
        df: o.df,
        source: o
            .source
            .map(|a| a.parse::<IpAddr>().map_err(|_| invalid(&format!("source {a:?} is not an IP address"))))
            .transpose()?,
    })
}

/// Engine-wide counters (see netprobe::counters for what each one counts).
#[napi(object)]
pub struct EngineCounters {
    pub packets_sent: f64,
    pub packets_received: f64,
    pub send_errors: f64,
    /// Sends the kernel had no room for (ENOBUFS, EAGAIN, ENOMEM): sent again later, not lost.
    pub send_deferred: f64,
    /// Failed waits of the engine loop (retried).
    pub poll_errors: f64,
    pub receive_errors: f64,
    pub replies_foreign: f64,
    pub replies_duplicate: f64,
    pub replies_late: f64,
    /// Of those, answers whose RTT was within the timeout (false losses).
    pub late_within_timeout: f64,
    pub icmp_errors: f64,
    pub icmp_errors_unmatched: f64,
    pub packets_malformed: f64,
    pub tx_timestamp_missing: f64,
    pub rx_timestamp_missing: f64,
    pub timestamp_inconsistent: f64,
    pub tx_timestamps_unmatched: f64,
    pub receive_queue_drops: f64,
    pub inflight_full: f64,
    pub rtt_hardware: f64,
    pub rtt_software: f64,
    pub rtt_monotonic: f64,
    pub send_delay_sum_ns: f64,
    pub send_delay_max_ns: f64,
    pub send_delay_over_100us: f64,
    pub send_delay_over_1ms: f64,
    pub send_delay_over_10ms: f64,
}

fn to_js_error(e: EngineError) -> Error {
    let status = match e {
        EngineError::Unusable(_)
        | EngineError::FamilyUnavailable(_)
        | EngineError::InvalidPort
        | EngineError::InvalidOptions(_)
        | EngineError::TcpUnavailable(_) => Status::InvalidArg,
        _ => Status::GenericFailure,
    };
    Error::new(status, e.to_string())
}

/// Numbers per target at the start of `snapshotFlat`'s answer, then one per classic bucket
/// bound (`snapshotStride()` numbers in all), in this order: sent, received, closed, latency
/// sum, squared latency sum, ICMP errors, send errors, window samples, window loss ratio,
/// window mean latency, window standard deviation; native schema, native zero count, where
/// the target's native buckets start in the answer and how many (0 when not kept); the
/// cumulative classic bucket counts. NaN where a window figure or the schema is undefined,
/// and in every place of an id that is not tracked. After every target's numbers: the native
/// buckets, as (index, count) pairs.
#[napi]
pub const SNAPSHOT_STRIDE: u32 = 15;

/// One typed array for all targets rather than an object per target: one allocation crossing
/// to JavaScript instead of a dozen property writes per target.
fn flatten(snapshots: Vec<Option<TargetSnapshot>>, bounds: usize) -> Vec<f64> {
    let stride = SNAPSHOT_STRIDE as usize + bounds;
    let fixed = snapshots.len() * stride;
    let pairs: usize = snapshots.iter().flatten().filter_map(|s| s.native.as_ref()).map(|n| n.buckets.len()).sum();
    let mut out = Vec::with_capacity(fixed + 2 * pairs);
    let mut tail = Vec::with_capacity(2 * pairs);
    for s in snapshots {
        match s {
            None => out.extend(std::iter::repeat_n(f64::NAN, stride)),
            Some(s) => {
                let (c, w) = (s.counters, s.window);
                out.extend([
                    c.sent as f64,
                    c.received as f64,
                    c.closed as f64,
                    c.rtt_sum_ns as f64 / 1e9,
                    c.rtt_sq_sum_ns2 as f64 / 1e18,
                    c.icmp_errors as f64,
                    c.send_errors as f64,
                    w.samples as f64,
                    w.loss_ratio.unwrap_or(f64::NAN),
                    w.latency_seconds.unwrap_or(f64::NAN),
                    w.stddev_seconds.unwrap_or(f64::NAN),
                ]);
                match &s.native {
                    Some(n) => {
                        out.extend([
                            f64::from(n.schema),
                            n.zero_count as f64,
                            (fixed + tail.len()) as f64,
                            n.buckets.len() as f64,
                        ]);
                        for &(index, count) in &n.buckets {
                            tail.extend([f64::from(index), count as f64]);
                        }
                    }
                    None => out.extend([f64::NAN, 0.0, 0.0, 0.0]),
                }
                // Every bound has its count (a layout fixed at start), whatever the engine says.
                out.extend((0..bounds).map(|i| s.classic.get(i).map_or(0.0, |&n| n as f64)));
            }
        }
    }
    out.extend(tail);
    out
}

/// An answer of `snapshotFlat`: its token, and the statistics or why there are none.
type Answer = FnArgs<(u32, Option<Float64Array>, Option<String>)>;
/// One function for every answer, made once: a threadsafe function made per snapshot cost
/// more than the rest of a one-target /probe. Weak: it keeps no process alive.
type Answers = ThreadsafeFunction<Answer, (), Answer, Status, false, true>;

#[napi]
pub struct Engine {
    inner: Arc<netprobe::Engine>,
    answers: Option<Arc<Answers>>,
    /// The classic bucket bounds, in seconds, as the engine holds them.
    bounds: Vec<f64>,
}

pub struct StopTask {
    engine: Arc<netprobe::Engine>,
}

impl Task for StopTask {
    type Output = ();
    type JsValue = ();

    fn compute(&mut self) -> Result<()> {
        self.engine.stop().map_err(to_js_error)
    }

    fn resolve(&mut self, _env: Env, _output: ()) -> Result<()> {
        Ok(())
    }
}

#[napi]
impl Engine {
    /// Opens the raw sockets and starts the engine thread.
    #[napi(constructor, catch_unwind)]
    pub fn new(options: EngineOptions) -> Result<Self> {
        let identifier = u16::try_from(options.identifier)
            .map_err(|_| Error::new(Status::InvalidArg, "identifier must be between 0 and 65535"))?;
        let config = EngineConfig {
            interval: Duration::from_millis(options.interval_ms.into()),
            timeout: Duration::from_millis(options.timeout_ms.into()),
            max_pps: options.max_pps,
            identifier,
            // As a kernel without SCM_TS_OPT_ID would (Linux < 6.13): for testing that path.
            stamp_keys: if std::env::var("ICMP_EXPORTER_NO_TS_OPT_ID").is_ok_and(|v| v == "1") {
                StampKeyMode::Packet
            } else {
                StampKeyMode::Auto
            },
            panic_after: std::env::var("ICMP_EXPORTER_TEST_ENGINE_PANIC_MS")
                .ok()
                .and_then(|ms| ms.parse().ok())
                .map(Duration::from_millis),
            failing_polls: std::env::var("ICMP_EXPORTER_TEST_POLL_FAILURES")
                .ok()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0),
            hang_on_stop: std::env::var("ICMP_EXPORTER_TEST_ENGINE_HANG_ON_STOP").is_ok_and(|v| v == "1"),
            interface4: interface(options.interface4)?,
            interface6: interface(options.interface6)?,
            hard: options.hard.unwrap_or(false),
            histograms: HistogramLayout::from_seconds(
                options.buckets_seconds.as_deref().unwrap_or(&[]),
                options.native_histograms.unwrap_or(true),
            )
            .map_err(|e| Error::new(Status::InvalidArg, e))?,
        };
        let bounds = config.histograms.bounds_ns.iter().map(|&ns| ns as f64 / 1e9).collect();
        config.validate().map_err(|e| Error::new(Status::InvalidArg, e.to_string()))?;
        let inner = netprobe::Engine::start(config).map_err(to_js_error)?;
        Ok(Engine { inner: Arc::new(inner), answers: None, bounds })
    }

    /// Starts probing an IP address, with ICMP echo or with TCP SYN to `port`; returns the
    /// target's id.
    #[napi(
        catch_unwind,
        ts_args_type = "address: string, protocol: 'icmp' | 'tcp', port?: number | undefined | null, options?: ProbeOptions | undefined | null"
    )]
    pub fn track(
        &self,
        address: String,
        protocol: String,
        port: Option<u32>,
        options: Option<ProbeOptions>,
    ) -> Result<u32> {
        let kind = match (protocol.as_str(), port) {
            ("icmp", None) => ProbeKind::Icmp,
            ("tcp", Some(p)) => {
                ProbeKind::Tcp { port: u16::try_from(p).map_err(|_| to_js_error(EngineError::InvalidPort))? }
            }
            _ => {
                return Err(Error::new(
                    Status::InvalidArg,
                    format!("expected ('icmp') or ('tcp', port), got ({protocol:?}, {port:?})"),
                ))
            }
        };
        let addr: IpAddr =
            address.parse().map_err(|_| Error::new(Status::InvalidArg, format!("{address:?} is not an IP address")))?;
        self.inner.track_with(addr, kind, probe_options(options)?).map_err(to_js_error)
    }

    #[napi(catch_unwind)]
    pub fn untrack(&self, id: u32) -> Result<()> {
        self.inner.untrack(id).map_err(to_js_error)
    }

    /// `listener(reason)` is called once, on the event loop, if the engine thread ends
    /// abnormally (a bug: a panic, or a loop that could not go on); at once if it already
    /// has. It keeps no process alive.
    #[napi(ts_args_type = "listener: (reason: string) => void")]
    pub fn on_failure(&self, listener: Function<String, ()>) -> Result<()> {
        let tell = listener.build_threadsafe_function::<String>().weak::<true>().callee_handled::<false>().build()?;
        self.inner.on_failure(Box::new(move |reason| {
            // Fails only when the environment is going away: nobody is left to tell.
            let _ = tell.call(reason, ThreadsafeFunctionCallMode::NonBlocking);
        }));
        Ok(())
    }

    /// Where the answers of `snapshotFlat` go, from now on: `listener(token, stats, error)`,
    /// called on the event loop.
    #[napi(ts_args_type = "listener: (token: number, stats: Float64Array | null, error: string | null) => void")]
    pub fn answer_snapshots_to(&mut self, listener: Function<Answer, ()>) -> Result<()> {
        let answers =
            listener.build_threadsafe_function::<Answer>().weak::<true>().callee_handled::<false>().build()?;
        self.answers = Some(Arc::new(answers));
        Ok(())
    }

    /// Upper bounds of the classic RTT histogram buckets, in seconds (as the engine rounded
    /// them, to the nanosecond).
    #[napi]
    pub fn histogram_bounds(&self) -> Float64Array {
        Float64Array::new(self.bounds.clone())
    }

    /// Numbers per id in `snapshotFlat`'s answer: `SNAPSHOT_STRIDE` and one per bound.
    #[napi]
    pub fn snapshot_stride(&self) -> u32 {
        SNAPSHOT_STRIDE + self.bounds.len() as u32
    }

    /// Statistics of each id, in order, as `snapshotStride()` numbers per id, answered to the
    /// `answerSnapshotsTo` listener with `token`. The engine thread hands them to the event
    /// loop itself: no thread of libuv's pool sits waiting for it, as an async task's did.
    #[napi(catch_unwind)]
    pub fn snapshot_flat(&self, ids: Uint32Array, token: u32) -> Result<()> {
        let answers = self
            .answers
            .clone()
            .ok_or_else(|| Error::new(Status::GenericFailure, "snapshotFlat before answerSnapshotsTo"))?;
        let bounds = self.bounds.len();
        self.inner.snapshot_with(
            ids.to_vec(),
            Box::new(move |result| {
                let answer = match result {
                    Ok(s) => (token, Some(Float64Array::new(flatten(s, bounds))), None),
                    Err(e) => (token, None, Some(e.to_string())),
                }
                .into();
                // Fails only when the environment is going away: nobody is left to answer.
                let _ = answers.call(answer, ThreadsafeFunctionCallMode::NonBlocking);
            }),
        );
        Ok(())
    }

    /// Engine-wide counters of one protocol.
    #[napi(catch_unwind, ts_args_type = "protocol: 'icmp' | 'tcp'")]
    pub fn counters(&self, protocol: String) -> Result<EngineCounters> {
        let proto = match protocol.as_str() {
            "icmp" => Proto::Icmp,
            "tcp" => Proto::Tcp,
            _ => return Err(Error::new(Status::InvalidArg, format!("unknown protocol {protocol:?}"))),
        };
        let c = self.inner.counters(proto);
        Ok(EngineCounters {
            packets_sent: c.packets_sent as f64,
            packets_received: c.packets_received as f64,
            send_errors: c.send_errors as f64,
            send_deferred: c.send_deferred as f64,
            poll_errors: c.poll_errors as f64,
            receive_errors: c.receive_errors as f64,
            replies_foreign: c.replies_foreign as f64,
            replies_duplicate: c.replies_duplicate as f64,
            replies_late: c.replies_late as f64,
            late_within_timeout: c.late_within_timeout as f64,
            icmp_errors: c.icmp_errors as f64,
            icmp_errors_unmatched: c.icmp_errors_unmatched as f64,
            packets_malformed: c.packets_malformed as f64,
            tx_timestamp_missing: c.tx_timestamp_missing as f64,
            rx_timestamp_missing: c.rx_timestamp_missing as f64,
            timestamp_inconsistent: c.timestamp_inconsistent as f64,
            tx_timestamps_unmatched: c.tx_timestamps_unmatched as f64,
            receive_queue_drops: c.receive_queue_drops as f64,
            inflight_full: c.inflight_full as f64,
            rtt_hardware: c.rtt_hardware as f64,
            rtt_software: c.rtt_software as f64,
            rtt_monotonic: c.rtt_monotonic as f64,
            send_delay_sum_ns: c.send_delay_sum_ns as f64,
            send_delay_max_ns: c.send_delay_max_ns as f64,
            send_delay_over_100us: c.send_delay_over_100us as f64,
            send_delay_over_1ms: c.send_delay_over_1ms as f64,
            send_delay_over_10ms: c.send_delay_over_10ms as f64,
        })
    }

    /// What did not work at start without preventing it (e.g. no IPv6 socket).
    #[napi(catch_unwind)]
    pub fn warnings(&self) -> Vec<String> {
        self.inner.warnings().to_vec()
    }

    /// Opens the TCP sockets now (before a privilege drop) instead of with the first TCP target.
    #[napi(catch_unwind)]
    pub fn prepare_tcp(&self) -> Result<()> {
        self.inner.prepare_tcp().map_err(to_js_error)
    }

    /// How ICMP probes are sent: raw sockets, or unprivileged datagram ("ping") sockets.
    #[napi(catch_unwind, ts_return_type = "'raw' | 'datagram'")]
    pub fn icmp_mode(&self) -> String {
        match self.inner.icmp_mode() {
            IcmpMode::Raw => "raw".into(),
            IcmpMode::Datagram => "datagram".into(),
        }
    }

    /// How transmit stamps are tied to their probes: by `SCM_TS_OPT_ID` (Linux >= 6.13), or by
    /// the copy of the packet each stamp comes with.
    #[napi(catch_unwind, ts_return_type = "'opt_id' | 'packet'")]
    pub fn stamp_matching(&self) -> String {
        match self.inner.stamp_matching() {
            StampMatching::OptId => "opt_id".into(),
            StampMatching::Packet => "packet".into(),
        }
    }

    /// Why the engine thread ended, when it ended abnormally.
    #[napi(catch_unwind)]
    pub fn failure(&self) -> Option<String> {
        self.inner.failure()
    }

    /// Stops the engine thread and closes its sockets (off the event loop).
    #[napi(ts_return_type = "Promise<void>")]
    pub fn stop(&self) -> AsyncTask<StopTask> {
        AsyncTask::new(StopTask { engine: self.inner.clone() })
    }
}

/// The engine's version: "netprobe " and its crate version.
#[napi]
pub fn engine_version() -> String {
    format!("netprobe {}", netprobe::VERSION)
}

/// The TCP probes' source ports on this host (and network namespace): `[first, last]`, from
/// `ip_local_port_range` as the engine chooses them.
#[napi]
pub fn tcp_probe_ports() -> Result<Vec<u32>> {
    let range = netprobe::ports::probe_port_range().map_err(|e| Error::new(Status::GenericFailure, e.to_string()))?;
    Ok(vec![u32::from(*range.start()), u32::from(*range.end())])
}
