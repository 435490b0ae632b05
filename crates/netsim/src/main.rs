//! `netsim --tun NAME --config FILE --truth FILE [--seconds N]`: creates the TUN device, prints
//! `netsim ready` once it exists, answers until SIGTERM/SIGINT (or N seconds), and writes the
//! truth to FILE at exit and on every SIGUSR1.
use netsim::profile::{Config, Hosts};
use netsim::sim::Sim;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

static STOP: AtomicBool = AtomicBool::new(false);
static DUMP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}
extern "C" fn on_dump(_: libc::c_int) {
    DUMP.store(true, Ordering::Relaxed);
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned()
}

fn write_truth(path: &str, sim: &Sim) -> std::io::Result<()> {
    let tmp = format!("{path}.tmp");
    std::fs::write(&tmp, sim.truth.to_json())?;
    std::fs::rename(tmp, path)
}

fn run() -> Result<(), String> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(tun_name), Some(config_path), Some(truth_path)) =
        (arg(&args, "--tun"), arg(&args, "--config"), arg(&args, "--truth"))
    else {
        return Err("usage: netsim --tun NAME --config FILE --truth FILE [--seconds N]".into());
    };
    let seconds: Option<f64> =
        arg(&args, "--seconds").map(|s| s.parse().map_err(|_| format!("bad --seconds {s:?}"))).transpose()?;
    let text = std::fs::read_to_string(&config_path).map_err(|e| format!("{config_path}: {e}"))?;
    let config: Config = serde_json::from_str(&text).map_err(|e| format!("{config_path}: {e}"))?;
    let hosts = Hosts::new(config).map_err(|e| format!("{config_path}: {e}"))?;
    let mut tun = netsim::tun::open(&tun_name).map_err(|e| format!("TUN {tun_name}: {e}"))?;
    // SAFETY: installing async-signal-safe handlers that only store to atomics.
    unsafe {
        libc::signal(libc::SIGTERM, on_stop as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, on_stop as *const () as libc::sighandler_t);
        libc::signal(libc::SIGUSR1, on_dump as *const () as libc::sighandler_t);
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong);
    }
    let started = Instant::now();
    let end = seconds.map(|s| started + Duration::from_secs_f64(s));
    let mut sim = Sim::new(hosts, started);
    println!("netsim ready on {tun_name}");
    let _ = std::io::stdout().flush();
    let mut buf = vec![0u8; 65536];
    while !STOP.load(Ordering::Relaxed) && end.is_none_or(|e| Instant::now() < e) {
        if DUMP.swap(false, Ordering::Relaxed) {
            write_truth(&truth_path, &sim).map_err(|e| format!("{truth_path}: {e}"))?;
        }
        let now = Instant::now();
        while let Some(packet) = sim.pop_due(now) {
            // A full TUN queue drops the answer, as a congested link would.
            let _ = tun.write(&packet);
        }
        let wait = sim
            .next_due()
            .map_or(Duration::from_millis(50), |d| d.saturating_duration_since(Instant::now()))
            .min(Duration::from_millis(50));
        let ts =
            libc::timespec { tv_sec: wait.as_secs() as libc::time_t, tv_nsec: wait.subsec_nanos() as libc::c_long };
        let mut fd = libc::pollfd { fd: tun.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd and a valid timespec; no signal mask.
        unsafe { libc::ppoll(&mut fd, 1, &ts, std::ptr::null()) };
        while let Ok(n) = tun.read(&mut buf) {
            sim.handle(&buf[..n], Instant::now());
        }
    }
    write_truth(&truth_path, &sim).map_err(|e| format!("{truth_path}: {e}"))
}

fn main() {
    if let Err(e) = run() {
        eprintln!("netsim: {e}");
        std::process::exit(1);
    }
}
