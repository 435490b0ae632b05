//! The engine on real sockets, over loopback only (the lab tests in __test__ cover veth).
//! Needs CAP_NET_RAW: the tests run as root (CI does), and fail without it rather than skip.
use netprobe::sockets::StampMatching;
use netprobe::{Engine, EngineConfig, EngineError, ProbeKind, Proto, StampKeyMode};
use std::net::IpAddr;
use std::time::Duration;

fn engine_with(stamp_keys: StampKeyMode) -> Engine {
    let config = EngineConfig {
        interval: Duration::from_millis(10),
        timeout: Duration::from_millis(500),
        stamp_keys,
        ..EngineConfig::default()
    };
    Engine::start(config).unwrap_or_else(|e| panic!("the engine needs CAP_NET_RAW (run as root): {e}"))
}

fn engine() -> Engine {
    engine_with(StampKeyMode::Auto)
}

/// Linux >= 6.13 takes SCM_TS_OPT_ID.
fn kernel_has_opt_id() -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").expect("kernel release");
    let mut parts = release.trim().split(['.', '-']).map(|p| p.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0)) >= (6, 13)
}

#[test]
fn loopback_v4_and_v6_with_kernel_timestamps() {
    let engine = engine();
    let expected = if kernel_has_opt_id() { StampMatching::OptId } else { StampMatching::Packet };
    assert_eq!(engine.stamp_matching(), expected, "decided by asking the socket at start");
    probe_loopback(engine);
}

/// The path kernels before 6.13 take: each transmit stamp tied to its probe by the copy of the
/// packet it comes with.
#[test]
fn loopback_with_stamps_matched_by_the_packet() {
    let engine = engine_with(StampKeyMode::Packet);
    assert_eq!(engine.stamp_matching(), StampMatching::Packet);
    probe_loopback(engine);
}

fn probe_loopback(engine: Engine) {
    let v4 = engine.track("127.0.0.1".parse().unwrap(), ProbeKind::Icmp).unwrap();
    let v6 = engine.track("::1".parse::<IpAddr>().unwrap(), ProbeKind::Icmp);
    std::thread::sleep(Duration::from_millis(400));
    let mut ids = vec![v4];
    if let Ok(v6) = v6 {
        ids.push(v6);
    }
    let snaps = engine.snapshot(ids.clone()).unwrap();
    for (id, snap) in ids.iter().zip(&snaps) {
        let s = snap.as_ref().expect("tracked target has a snapshot");
        assert!(s.counters.sent >= 10, "target {id}: {s:?} {:?}", engine.counters(Proto::Icmp));
        assert_eq!(s.counters.sent, s.counters.received, "loopback loses nothing: {s:?}");
        let mean = s.counters.rtt_sum_ns as f64 / s.counters.received as f64;
        assert!(mean > 0.0 && mean < 1e6, "mean RTT {mean} ns");
        assert_eq!(s.window.loss_ratio, Some(0.0));
    }
    let c = engine.counters(Proto::Icmp);
    assert_eq!(c.tx_timestamp_missing, 0, "{c:?}");
    assert_eq!(c.rx_timestamp_missing, 0, "{c:?}");
    assert_eq!(c.send_errors, 0, "{c:?}");
    assert_eq!(c.tx_timestamps_unmatched, 0, "{c:?}");
    assert_eq!(c.timestamp_inconsistent, 0, "{c:?}");
    engine.untrack(v4).unwrap();
    assert_eq!(engine.snapshot(vec![v4]).unwrap(), vec![None]);
    engine.stop().expect("the engine stops");
    assert!(matches!(engine.snapshot(vec![v4]), Err(EngineError::Stopped(_))));
}

#[test]
fn unusable_addresses_are_refused() {
    let engine = engine();
    for a in ["0.0.0.0", "224.0.0.1", "255.255.255.255", "::", "ff02::1"] {
        assert!(matches!(engine.track(a.parse().unwrap(), ProbeKind::Icmp), Err(EngineError::Unusable(_))), "{a}");
    }
}

/// SYN probes over loopback: an open port answers SYN-ACK, a closed one RST.
#[test]
fn loopback_tcp_open_and_closed_ports() {
    for stamps in [StampKeyMode::Auto, StampKeyMode::Packet] {
        tcp_open_and_closed_ports(engine_with(stamps));
    }
}

fn tcp_open_and_closed_ports(engine: Engine) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let open = listener.local_addr().unwrap().port();
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port() // dropped: nobody listens there any more
    };
    let lo: IpAddr = "127.0.0.1".parse().unwrap();
    let track = |port| engine.track(lo, ProbeKind::Tcp { port }).expect("TCP probing (as root)");
    let ids = vec![track(open), track(closed)];
    assert!(matches!(engine.track(lo, ProbeKind::Tcp { port: 0 }), Err(EngineError::InvalidPort)));
    std::thread::sleep(Duration::from_millis(400));
    let snaps = engine.snapshot(ids).unwrap();
    let counters = |i: usize| snaps[i].as_ref().map(|s| s.counters).expect("tracked");
    let (o, c) = (counters(0), counters(1));
    let t = engine.counters(Proto::Tcp);
    assert!(o.sent >= 10 && o.received == o.sent && o.closed == 0, "open: {o:?} {t:?}");
    assert!(c.sent >= 10 && c.received == c.sent && c.closed == c.sent, "closed: {c:?}");
    assert_eq!((t.tx_timestamp_missing, t.rx_timestamp_missing, t.send_errors), (0, 0, 0), "{t:?}");
    assert_eq!(t.tx_timestamps_unmatched, 0, "{t:?}");
    drop(listener);
}

/// A failing engine thread tells its failure listener once, whether the listener came before
/// the failure or after it; `stop` is not a failure.
#[test]
fn a_failure_is_told_to_its_listener_once() {
    let (tx, rx) = std::sync::mpsc::channel();
    let config = EngineConfig { panic_after: Some(Duration::from_millis(50)), ..EngineConfig::default() };
    let failing = Engine::start(config).expect("the engine needs CAP_NET_RAW (run as root)");
    let before = tx.clone();
    failing.on_failure(Box::new(move |reason| before.send(("before", reason)).expect("test channel")));
    let (when, reason) = rx.recv_timeout(Duration::from_secs(30)).expect("told of the failure");
    assert_eq!(when, "before");
    assert!(reason.contains("injected failure"), "{reason}");
    failing.on_failure(Box::new(move |reason| tx.send(("after", reason)).expect("test channel")));
    let (when, reason) = rx.recv_timeout(Duration::from_secs(30)).expect("told at once");
    assert_eq!(when, "after");
    assert!(reason.contains("injected failure"), "{reason}");
    assert!(rx.try_recv().is_err(), "each listener told once");

    let stopped = engine();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    stopped.on_failure(Box::new(move |reason| tx.send(reason).expect("test channel")));
    stopped.stop().expect("the engine stops");
    assert!(rx.try_recv().is_err(), "stop is not a failure");
}
