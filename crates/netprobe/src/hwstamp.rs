//! NIC hardware timestamping (`-hard`), through nix ioctls: what an interface can do (`ETHTOOL_GET_TS_INFO`), its
//! current setting (`SIOCGHWTSTAMP`), and a change that never turns a mode off (a running
//! ptp4l may depend on it), undone at exit. The struct layouts and the decisions are pure and
//! tested with bytes; the ioctls need CAP_NET_ADMIN and a NIC that stamps.
use std::io;
use std::os::fd::AsRawFd;

const SIOCETHTOOL: libc::c_ulong = 0x8946;
const ETHTOOL_GET_TS_INFO: u32 = 0x41;
const IFNAMSIZ: usize = 16;

pub const TX_OFF: u32 = 0;
pub const TX_ON: u32 = 1;
pub const FILTER_NONE: u32 = 0;
pub const FILTER_ALL: u32 = 1;

/// `struct ethtool_ts_info` (44 bytes): what the interface can stamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TsInfo {
    pub so_timestamping: u32,
    pub phc_index: i32,
    /// Bit n set: `HWTSTAMP_TX_*` mode n is available.
    pub tx_types: u32,
    /// Bit n set: `HWTSTAMP_FILTER_*` n is available.
    pub rx_filters: u32,
}

pub const TS_INFO_LEN: usize = 44;

impl TsInfo {
    pub fn from_bytes(b: &[u8; TS_INFO_LEN]) -> Self {
        let u = |o: usize| u32::from_ne_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        TsInfo { so_timestamping: u(4), phc_index: u(8) as i32, tx_types: u(12), rx_filters: u(28) }
    }
}

/// `struct hwtstamp_config`: the interface's current (or wanted) setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HwConfig {
    pub flags: u32,
    pub tx_type: u32,
    pub rx_filter: u32,
}

pub const HW_CONFIG_LEN: usize = 12;

impl HwConfig {
    pub fn to_bytes(self) -> [u8; HW_CONFIG_LEN] {
        let mut b = [0u8; HW_CONFIG_LEN];
        b[0..4].copy_from_slice(&self.flags.to_ne_bytes());
        b[4..8].copy_from_slice(&self.tx_type.to_ne_bytes());
        b[8..12].copy_from_slice(&self.rx_filter.to_ne_bytes());
        b
    }
    pub fn from_bytes(b: &[u8; HW_CONFIG_LEN]) -> Self {
        let u = |o: usize| u32::from_ne_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        HwConfig { flags: u(0), tx_type: u(4), rx_filter: u(8) }
    }
}

/// What `-hard` needs, named as `ethtool -T` names it; the missing ones.
pub fn missing_capabilities(info: &TsInfo) -> Vec<&'static str> {
    let mut missing = Vec::new();
    for (bit, name) in [
        (libc::SOF_TIMESTAMPING_TX_HARDWARE, "hardware-transmit (SOF_TIMESTAMPING_TX_HARDWARE)"),
        (libc::SOF_TIMESTAMPING_RX_HARDWARE, "hardware-receive (SOF_TIMESTAMPING_RX_HARDWARE)"),
        (libc::SOF_TIMESTAMPING_RAW_HARDWARE, "hardware-raw-clock (SOF_TIMESTAMPING_RAW_HARDWARE)"),
    ] {
        if info.so_timestamping & bit == 0 {
            missing.push(name);
        }
    }
    if info.tx_types & (1 << TX_ON) == 0 {
        missing.push("transmit mode on (HWTSTAMP_TX_ON)");
    }
    if info.rx_filters & (1 << FILTER_ALL) == 0 {
        missing.push("receive filter all (HWTSTAMP_FILTER_ALL)");
    }
    missing
}

/// The setting to apply so every packet is stamped, or None when `current` already does. It
/// only ever adds: a transmit mode already on (one-step PTP modes included) stays as it is,
/// and a PTP receive filter widens to `all`, which stamps PTP packets too.
pub fn plan(current: HwConfig) -> Option<HwConfig> {
    let tx_type = if current.tx_type == TX_OFF { TX_ON } else { current.tx_type };
    let rx_filter = FILTER_ALL;
    let wanted = HwConfig { flags: current.flags, tx_type, rx_filter };
    (wanted != current).then_some(wanted)
}

/// `struct ifreq` with `ifr_data` pointing at `data`.
#[repr(C)]
struct IfreqData {
    name: [u8; IFNAMSIZ],
    data: *mut libc::c_void,
    _pad: [u8; 16],
}

fn ifreq(name: &str, data: *mut libc::c_void) -> io::Result<IfreqData> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() >= IFNAMSIZ || bytes.contains(&0) {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("bad interface name {name:?}")));
    }
    let mut r = IfreqData { name: [0; IFNAMSIZ], data, _pad: [0; 16] };
    r.name[..bytes.len()].copy_from_slice(bytes);
    Ok(r)
}

fn control_socket() -> io::Result<socket2::Socket> {
    socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM.cloexec(), None)
}

nix::ioctl_readwrite_bad!(siocethtool, SIOCETHTOOL, IfreqData);
nix::ioctl_readwrite_bad!(siocghwtstamp, libc::SIOCGHWTSTAMP, IfreqData);
nix::ioctl_readwrite_bad!(siocshwtstamp, libc::SIOCSHWTSTAMP, IfreqData);

/// Runs one of the ioctls above on a throw-away control socket.
fn ioctl(
    call: unsafe fn(libc::c_int, *mut IfreqData) -> nix::Result<libc::c_int>,
    req: &mut IfreqData,
) -> io::Result<()> {
    let sock = control_socket()?;
    // SAFETY: `req` is a valid ifreq whose data pointer points at a live buffer of the size
    // the request expects.
    unsafe { call(sock.as_raw_fd(), req as *mut IfreqData) }.map(|_| ()).map_err(io::Error::from)
}

/// What `ifname` can stamp.
pub fn ts_info(ifname: &str) -> io::Result<TsInfo> {
    let mut buf = [0u8; TS_INFO_LEN];
    buf[0..4].copy_from_slice(&ETHTOOL_GET_TS_INFO.to_ne_bytes());
    let mut req = ifreq(ifname, buf.as_mut_ptr().cast())?;
    ioctl(siocethtool, &mut req)?;
    Ok(TsInfo::from_bytes(&buf))
}

/// The interface's current setting (EOPNOTSUPP/EINVAL where the driver has none).
pub fn get_config(ifname: &str) -> io::Result<HwConfig> {
    let mut buf = [0u8; HW_CONFIG_LEN];
    let mut req = ifreq(ifname, buf.as_mut_ptr().cast())?;
    ioctl(siocghwtstamp, &mut req)?;
    Ok(HwConfig::from_bytes(&buf))
}

/// Applies `wanted`; returns what the driver actually set (it may widen the filter).
pub fn set_config(ifname: &str, wanted: HwConfig) -> io::Result<HwConfig> {
    let mut buf = wanted.to_bytes();
    let mut req = ifreq(ifname, buf.as_mut_ptr().cast())?;
    ioctl(siocshwtstamp, &mut req)?;
    Ok(HwConfig::from_bytes(&buf))
}

/// A change made to an interface, to undo at exit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub ifname: String,
    pub before: HwConfig,
}

/// Checks and configures `ifname` for hardware stamps. Err names the interface and what is missing.
pub fn enable(ifname: &str) -> Result<Option<Change>, String> {
    let info =
        ts_info(ifname).map_err(|e| format!("-hard: cannot read the timestamping capabilities of {ifname}: {e}"))?;
    let missing = missing_capabilities(&info);
    if !missing.is_empty() {
        return Err(format!(
            "-hard: interface {ifname} cannot timestamp in hardware; missing: {} (see ethtool -T {ifname})",
            missing.join(", ")
        ));
    }
    let current = get_config(ifname).map_err(|e| format!("-hard: SIOCGHWTSTAMP on {ifname}: {e}"))?;
    let Some(wanted) = plan(current) else {
        return Ok(None);
    };
    let applied = set_config(ifname, wanted).map_err(|e| format!("-hard: SIOCSHWTSTAMP on {ifname}: {e}"))?;
    if applied.tx_type == TX_OFF || applied.rx_filter != FILTER_ALL {
        let _ = set_config(ifname, current);
        return Err(format!("-hard: {ifname} did not accept transmit on and filter all (got {applied:?})"));
    }
    Ok(Some(Change { ifname: ifname.to_string(), before: current }))
}

/// Puts an interface back as it was before `enable`.
pub fn restore(change: &Change) -> io::Result<()> {
    set_config(&change.ifname, change.before).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `ethtool -T` of an Intel I350 (igb): all hardware capabilities, TX off/on, filters
    /// none, all and the PTP ones.
    fn i350() -> [u8; TS_INFO_LEN] {
        let mut b = [0u8; TS_INFO_LEN];
        b[0..4].copy_from_slice(&ETHTOOL_GET_TS_INFO.to_ne_bytes());
        b[4..8].copy_from_slice(&0x5fu32.to_ne_bytes()); // TX/RX hardware+software, SOFTWARE, RAW_HARDWARE
        b[8..12].copy_from_slice(&0i32.to_ne_bytes());
        b[12..16].copy_from_slice(&0b11u32.to_ne_bytes());
        b[28..32].copy_from_slice(&0x7fffu32.to_ne_bytes());
        b
    }

    #[test]
    fn ts_info_layout() {
        let info = TsInfo::from_bytes(&i350());
        assert_eq!(info, TsInfo { so_timestamping: 0x5f, phc_index: 0, tx_types: 3, rx_filters: 0x7fff });
        assert!(missing_capabilities(&info).is_empty());
    }

    #[test]
    fn veth_like_interfaces_lack_everything_hardware() {
        // veth: software stamps only (TX_SOFTWARE | RX_SOFTWARE | SOFTWARE), no PHC.
        let info = TsInfo { so_timestamping: 0x1a, phc_index: -1, tx_types: 0, rx_filters: 0 };
        let missing = missing_capabilities(&info);
        assert_eq!(missing.len(), 5);
        assert!(missing[0].contains("SOF_TIMESTAMPING_TX_HARDWARE"));
        assert!(missing[4].contains("HWTSTAMP_FILTER_ALL"));
    }

    #[test]
    fn ptp_only_filters_are_not_enough() {
        // An 82599 lists only PTP receive filters (bits 3..), no `all`.
        let info = TsInfo { so_timestamping: 0x5f, phc_index: 1, tx_types: 3, rx_filters: 0b1111_1111_1000 };
        assert_eq!(missing_capabilities(&info), vec!["receive filter all (HWTSTAMP_FILTER_ALL)"]);
    }

    #[test]
    fn config_layout_roundtrips() {
        let c = HwConfig { flags: 0, tx_type: TX_ON, rx_filter: FILTER_ALL };
        assert_eq!(c.to_bytes(), [0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0]);
        assert_eq!(HwConfig::from_bytes(&c.to_bytes()), c);
    }

    #[test]
    fn plan_never_turns_anything_off() {
        let off = HwConfig { flags: 0, tx_type: TX_OFF, rx_filter: FILTER_NONE };
        assert_eq!(plan(off), Some(HwConfig { flags: 0, tx_type: TX_ON, rx_filter: FILTER_ALL }));
        // ptp4l running: TX on, PTPv2 event filter (12). Widened to all, TX left on.
        let ptp = HwConfig { flags: 0, tx_type: TX_ON, rx_filter: 12 };
        assert_eq!(plan(ptp), Some(HwConfig { flags: 0, tx_type: TX_ON, rx_filter: FILTER_ALL }));
        // A one-step PTP transmit mode stays as it is.
        let one_step = HwConfig { flags: 0, tx_type: 2, rx_filter: FILTER_ALL };
        assert_eq!(plan(one_step), None);
        assert_eq!(plan(HwConfig { flags: 0, tx_type: TX_ON, rx_filter: FILTER_ALL }), None);
    }

    #[test]
    fn interface_names_are_checked() {
        assert!(ifreq("", std::ptr::null_mut()).is_err());
        assert!(ifreq("sixteen-chars-xx", std::ptr::null_mut()).is_err());
        assert_eq!(&ifreq("eth0", std::ptr::null_mut()).unwrap().name[..5], b"eth0\0");
        assert_eq!(std::mem::size_of::<IfreqData>(), 40, "struct ifreq on 64-bit Linux");
    }

    #[test]
    fn loopback_has_no_hardware_stamps() {
        // A real ioctl on an interface every namespace has: software stamps only. ETHTOOL_GET_TS_INFO
        // needs no privilege, so a failure here is a failure, not a reason to skip.
        let info = ts_info("lo").expect("ETHTOOL_GET_TS_INFO on lo");
        assert!(!missing_capabilities(&info).is_empty());
    }
}
