//! Control messages: parsing what `recvmsg` returns (timestamps, extended errors) and
//! building the per-send OPT_ID message. Pure functions over bytes; the layout is the
//! 64-bit Linux one (`cmsghdr` = usize length, i32 level, i32 type; data aligned to 8).
use crate::options::ProbeOptions;
use crate::sys;
use std::net::IpAddr;

const HDR_LEN: usize = 16;
const ALIGN: usize = 8;
const SOL_SOCKET: i32 = libc::SOL_SOCKET;
const SOL_IP: i32 = libc::SOL_IP;
const SOL_IPV6: i32 = libc::SOL_IPV6;
const SO_EE_ORIGIN_TIMESTAMPING: u8 = libc::SO_EE_ORIGIN_TIMESTAMPING;
const SOCK_EXTENDED_ERR_LEN: usize = 16;
const TIMESPEC_LEN: usize = 16;

const fn align(len: usize) -> usize {
    (len + ALIGN - 1) & !(ALIGN - 1)
}

/// Space one control message with `data_len` bytes of data takes (`CMSG_SPACE`).
pub const fn space(data_len: usize) -> usize {
    HDR_LEN + align(data_len)
}

/// A kernel timestamp in nanoseconds since the Unix epoch (CLOCK_REALTIME for software
/// stamps, the NIC's clock for hardware stamps).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timestamp(pub i64);

/// `struct sock_extended_err`, as found on the error queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtendedErr {
    pub errno: u32,
    pub origin: u8,
    pub icmp_type: u8,
    pub code: u8,
    pub info: u32,
    pub data: u32,
}

impl ExtendedErr {
    /// A transmit timestamp notification for the moment the packet went to the device;
    /// its `data` is the OPT_ID key.
    pub fn is_tx_timestamp(&self) -> bool {
        self.errno == libc::ENOMSG as u32
            && self.origin == SO_EE_ORIGIN_TIMESTAMPING
            && self.info == sys::SCM_TSTAMP_SND
    }
}

/// What the engine needs out of one message's control data.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ControlInfo {
    /// `ts[0]` of `SCM_TIMESTAMPING`, when set.
    pub software: Option<Timestamp>,
    /// `ts[2]` of `SCM_TIMESTAMPING`, when set.
    pub hardware: Option<Timestamp>,
    pub extended_err: Option<ExtendedErr>,
    /// `SO_RXQ_OVFL`: how many packets the socket has dropped for a full receive buffer since
    /// it opened (a wrapping count; the kernel attaches it once it is not zero).
    pub dropped: Option<u32>,
    /// A control message was cut short (`MSG_CTRUNC` or a malformed length).
    pub truncated: bool,
}

fn ne_u32(b: &[u8]) -> u32 {
    u32::from_ne_bytes([b[0], b[1], b[2], b[3]])
}

fn ne_i64(b: &[u8]) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    i64::from_ne_bytes(a)
}

fn timespec(b: &[u8]) -> Option<Timestamp> {
    let (sec, nsec) = (ne_i64(&b[0..8]), ne_i64(&b[8..16]));
    if sec == 0 && nsec == 0 {
        return None;
    }
    sec.checked_mul(1_000_000_000).and_then(|ns| ns.checked_add(nsec)).map(Timestamp)
}

/// Walks the control buffer filled in by `recvmsg` (`ctrl` = the first `msg_controllen` bytes).
pub fn parse(ctrl: &[u8]) -> ControlInfo {
    let mut info = ControlInfo::default();
    let mut rest = ctrl;
    while rest.len() >= HDR_LEN {
        let mut len_bytes = [0u8; 8];
        len_bytes.copy_from_slice(&rest[0..8]);
        let len = usize::from_ne_bytes(len_bytes);
        let level = ne_u32(&rest[8..12]) as i32;
        let kind = ne_u32(&rest[12..16]) as i32;
        if len < HDR_LEN || len > rest.len() {
            info.truncated = true;
            break;
        }
        let data = &rest[HDR_LEN..len];
        match (level, kind) {
            (SOL_SOCKET, sys::SO_TIMESTAMPING | sys::SO_TIMESTAMPING_NEW) => {
                if data.len() >= 3 * TIMESPEC_LEN {
                    info.software = timespec(&data[0..TIMESPEC_LEN]);
                    info.hardware = timespec(&data[2 * TIMESPEC_LEN..3 * TIMESPEC_LEN]);
                } else {
                    info.truncated = true;
                }
            }
            (SOL_SOCKET, libc::SO_RXQ_OVFL) => {
                if data.len() >= 4 {
                    info.dropped = Some(ne_u32(data));
                } else {
                    info.truncated = true;
                }
            }
            (SOL_IP, libc::IP_RECVERR) | (SOL_IPV6, libc::IPV6_RECVERR) => {
                if data.len() >= SOCK_EXTENDED_ERR_LEN {
                    info.extended_err = Some(ExtendedErr {
                        errno: ne_u32(&data[0..4]),
                        origin: data[4],
                        icmp_type: data[5],
                        code: data[6],
                        info: ne_u32(&data[8..12]),
                        data: ne_u32(&data[12..16]),
                    });
                } else {
                    info.truncated = true;
                }
            }
            _ => {}
        }
        let advance = align(len);
        if advance >= rest.len() {
            break;
        }
        rest = &rest[advance..];
    }
    info
}

/// Buffer for the one control message a probe send carries; 8-byte aligned as the kernel expects.
#[repr(C, align(8))]
pub struct OptIdCmsg(pub [u8; space(4)]);

impl OptIdCmsg {
    pub fn new() -> Self {
        Self([0; space(4)])
    }

    /// Writes `SOL_SOCKET/SCM_TS_OPT_ID` with `key`: the kernel reports this key with the
    /// transmit timestamp instead of its own counter.
    pub fn set(&mut self, key: u32) -> &[u8] {
        let b = &mut self.0;
        b[0..8].copy_from_slice(&(HDR_LEN + 4).to_ne_bytes());
        b[8..12].copy_from_slice(&SOL_SOCKET.to_ne_bytes());
        b[12..16].copy_from_slice(&sys::SCM_TS_OPT_ID.to_ne_bytes());
        b[16..20].copy_from_slice(&key.to_ne_bytes());
        &b[..]
    }
}

impl Default for OptIdCmsg {
    fn default() -> Self {
        Self::new()
    }
}

/// Room for every control message a probe send can carry: SCM_TS_OPT_ID, TTL or hop limit,
/// TOS or traffic class, the source (`in6_pktinfo`, 20 bytes) and IPV6_DONTFRAG.
const SEND_CMSG_LEN: usize = 4 * space(4) + space(20);

/// The control messages of one probe send, written afresh for each: 8-byte aligned as the
/// kernel expects.
#[repr(C, align(8))]
pub struct SendCmsg {
    buf: [u8; SEND_CMSG_LEN],
    len: usize,
}

impl SendCmsg {
    pub fn new() -> Self {
        Self { buf: [0; SEND_CMSG_LEN], len: 0 }
    }

    fn push(&mut self, level: i32, kind: i32, data: &[u8]) {
        let at = self.len;
        let Some(b) = self.buf.get_mut(at..at + space(data.len())) else { return };
        b.fill(0);
        b[0..8].copy_from_slice(&(HDR_LEN + data.len()).to_ne_bytes());
        b[8..12].copy_from_slice(&level.to_ne_bytes());
        b[12..16].copy_from_slice(&kind.to_ne_bytes());
        b[HDR_LEN..HDR_LEN + data.len()].copy_from_slice(data);
        self.len += space(data.len());
    }

    /// `opt_id`: the key the kernel reports with the transmit stamp (SCM_TS_OPT_ID); then the
    /// options that are per packet: IPv4 IP_TTL, IP_TOS and IP_PKTINFO (its `ipi_spec_dst` is
    /// the source), or IPv6 IPV6_HOPLIMIT, IPV6_TCLASS, IPV6_PKTINFO and IPV6_DONTFRAG. Empty
    /// when there is none (IPv4 DF is the socket's setting, not a message).
    pub fn build(&mut self, opt_id: Option<u32>, options: &ProbeOptions, v6: bool) -> &[u8] {
        self.len = 0;
        if let Some(key) = opt_id {
            self.push(SOL_SOCKET, sys::SCM_TS_OPT_ID, &key.to_ne_bytes());
        }
        let (level, ttl, tos) = if v6 {
            (libc::IPPROTO_IPV6, libc::IPV6_HOPLIMIT, libc::IPV6_TCLASS)
        } else {
            (libc::IPPROTO_IP, libc::IP_TTL, libc::IP_TOS)
        };
        if let Some(t) = options.ttl {
            self.push(level, ttl, &i32::from(t).to_ne_bytes());
        }
        if let Some(t) = options.tos {
            self.push(level, tos, &i32::from(t).to_ne_bytes());
        }
        match options.source {
            Some(IpAddr::V4(a)) if !v6 => {
                // in_pktinfo: ifindex 0 (any), spec_dst the source, addr unused on send.
                let mut info = [0u8; 12];
                info[4..8].copy_from_slice(&a.octets());
                self.push(libc::IPPROTO_IP, libc::IP_PKTINFO, &info);
            }
            Some(IpAddr::V6(a)) if v6 => {
                // in6_pktinfo: the address, then ifindex 0 (any).
                let mut info = [0u8; 20];
                info[..16].copy_from_slice(&a.octets());
                self.push(libc::IPPROTO_IPV6, libc::IPV6_PKTINFO, &info);
            }
            _ => {}
        }
        if v6 && options.df == Some(true) {
            self.push(libc::IPPROTO_IPV6, libc::IPV6_DONTFRAG, &1i32.to_ne_bytes());
        }
        &self.buf[..self.len]
    }
}

impl Default for SendCmsg {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmsg(level: i32, kind: i32, data: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&(HDR_LEN + data.len()).to_ne_bytes());
        v.extend_from_slice(&level.to_ne_bytes());
        v.extend_from_slice(&kind.to_ne_bytes());
        v.extend_from_slice(data);
        v.resize(space(data.len()), 0);
        v
    }

    fn ts3(sw: (i64, i64), hw: (i64, i64)) -> Vec<u8> {
        let mut v = Vec::new();
        for (s, n) in [sw, (0, 0), hw] {
            v.extend_from_slice(&s.to_ne_bytes());
            v.extend_from_slice(&n.to_ne_bytes());
        }
        v
    }

    fn ext_err(errno: u32, origin: u8, info: u32, data: u32) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&errno.to_ne_bytes());
        v.extend_from_slice(&[origin, 0, 0, 0]);
        v.extend_from_slice(&info.to_ne_bytes());
        v.extend_from_slice(&data.to_ne_bytes());
        v.extend_from_slice(&[0u8; 16]); // offender sockaddr_in (zeroed for timestamps)
        v
    }

    #[test]
    fn rx_software_stamp_v4() {
        let buf = cmsg(libc::SOL_SOCKET, 37, &ts3((1_700_000_000, 123_456_789), (0, 0)));
        let info = parse(&buf);
        assert_eq!(info.software, Some(Timestamp(1_700_000_000_123_456_789)));
        assert_eq!(info.hardware, None);
        assert_eq!(info.extended_err, None);
        assert!(!info.truncated);
    }

    #[test]
    fn rx_hardware_stamp_new_api() {
        let buf = cmsg(libc::SOL_SOCKET, 65, &ts3((0, 0), (42, 7)));
        let info = parse(&buf);
        assert_eq!(info.software, None);
        assert_eq!(info.hardware, Some(Timestamp(42_000_000_007)));
    }

    #[test]
    fn tx_stamp_from_error_queue_v4_and_v6() {
        for (level, kind) in [(libc::SOL_IP, libc::IP_RECVERR), (libc::SOL_IPV6, libc::IPV6_RECVERR)] {
            let mut buf = cmsg(libc::SOL_SOCKET, 37, &ts3((5, 10), (0, 0)));
            buf.extend(cmsg(level, kind, &ext_err(libc::ENOMSG as u32, 4, 0, 0x0030_0002)));
            let info = parse(&buf);
            assert_eq!(info.software, Some(Timestamp(5_000_000_010)));
            let e = info.extended_err.unwrap();
            assert!(e.is_tx_timestamp());
            assert_eq!(e.data, 0x0030_0002);
        }
    }

    #[test]
    fn tx_hardware_stamp_from_error_queue() {
        // With OPT_TX_SWHW the NIC's stamp arrives as its own message: ts[0] empty, ts[2] set.
        for (level, kind) in [(libc::SOL_IP, libc::IP_RECVERR), (libc::SOL_IPV6, libc::IPV6_RECVERR)] {
            let mut buf = cmsg(libc::SOL_SOCKET, 37, &ts3((0, 0), (1_700_000_000, 250)));
            buf.extend(cmsg(level, kind, &ext_err(libc::ENOMSG as u32, 4, 0, 7)));
            let info = parse(&buf);
            assert_eq!(info.software, None);
            assert_eq!(info.hardware, Some(Timestamp(1_700_000_000_000_000_250)));
            assert!(info.extended_err.unwrap().is_tx_timestamp());
            assert_eq!(info.extended_err.unwrap().data, 7);
        }
    }

    #[test]
    fn rx_both_clocks_v6() {
        let info = parse(&cmsg(libc::SOL_SOCKET, 37, &ts3((3, 1), (4, 2))));
        assert_eq!((info.software, info.hardware), (Some(Timestamp(3_000_000_001)), Some(Timestamp(4_000_000_002))));
    }

    #[test]
    fn icmp_origin_and_sched_stamps_are_not_tx_stamps() {
        let icmp = parse(&cmsg(libc::SOL_IP, libc::IP_RECVERR, &ext_err(libc::EHOSTUNREACH as u32, 2, 0, 0)));
        assert!(!icmp.extended_err.unwrap().is_tx_timestamp());
        let sched = parse(&cmsg(libc::SOL_IP, libc::IP_RECVERR, &ext_err(libc::ENOMSG as u32, 4, 1, 9)));
        assert!(!sched.extended_err.unwrap().is_tx_timestamp());
    }

    #[test]
    fn receive_drop_count_beside_a_stamp() {
        let mut buf = cmsg(libc::SOL_SOCKET, 37, &ts3((1, 0), (0, 0)));
        buf.extend(cmsg(libc::SOL_SOCKET, libc::SO_RXQ_OVFL, &4_000_000_123u32.to_ne_bytes()));
        let info = parse(&buf);
        assert_eq!(info.software, Some(Timestamp(1_000_000_000)));
        assert_eq!(info.dropped, Some(4_000_000_123));
        assert!(!info.truncated);
        assert_eq!(parse(&cmsg(libc::SOL_SOCKET, 37, &ts3((1, 0), (0, 0)))).dropped, None, "none reported: none");
        let short = parse(&cmsg(libc::SOL_SOCKET, libc::SO_RXQ_OVFL, &[1, 0]));
        assert_eq!((short.dropped, short.truncated), (None, true));
    }

    #[test]
    fn truncated_and_garbage_control_data() {
        let full = cmsg(libc::SOL_SOCKET, 37, &ts3((1, 0), (0, 0)));
        for len in 0..full.len() {
            let _ = parse(&full[..len]);
        }
        assert!(parse(&full[..40]).truncated);
        let mut bogus = full.clone();
        bogus[0..8].copy_from_slice(&3usize.to_ne_bytes());
        assert!(parse(&bogus).truncated);
        let mut huge = full;
        huge[0..8].copy_from_slice(&usize::MAX.to_ne_bytes());
        assert!(parse(&huge).truncated);
        // Short timestamp payload claimed by a well-formed header.
        assert!(parse(&cmsg(libc::SOL_SOCKET, 37, &[0u8; 8])).truncated);
    }

    #[test]
    fn unknown_messages_are_skipped() {
        let mut buf = cmsg(libc::SOL_IP, libc::IP_TTL, &64i32.to_ne_bytes());
        buf.extend(cmsg(libc::SOL_SOCKET, 37, &ts3((2, 0), (0, 0))));
        assert_eq!(parse(&buf).software, Some(Timestamp(2_000_000_000)));
    }

    #[test]
    fn lengths_are_the_c_librarys() {
        for n in [4usize, 12, 20] {
            // SAFETY: CMSG_LEN and CMSG_SPACE are arithmetic on their argument.
            let (len, space_c) = unsafe { (libc::CMSG_LEN(n as u32), libc::CMSG_SPACE(n as u32)) };
            assert_eq!(HDR_LEN + n, len as usize, "CMSG_LEN({n})");
            assert_eq!(space(n), space_c as usize, "CMSG_SPACE({n})");
        }
    }

    #[test]
    fn send_messages_carry_the_options() {
        let mut c = SendCmsg::new();
        assert!(c.build(None, &ProbeOptions::default(), false).is_empty());
        let source = "198.18.0.9".parse().unwrap();
        let o = ProbeOptions { ttl: Some(7), tos: Some(0xb8), source: Some(source), df: Some(true), size: None };
        let v4 = c.build(Some(5), &o, false).to_vec();
        let mut want = cmsg(SOL_SOCKET, sys::SCM_TS_OPT_ID, &5u32.to_ne_bytes());
        want.extend(cmsg(libc::IPPROTO_IP, libc::IP_TTL, &7i32.to_ne_bytes()));
        want.extend(cmsg(libc::IPPROTO_IP, libc::IP_TOS, &0xb8i32.to_ne_bytes()));
        want.extend(cmsg(libc::IPPROTO_IP, libc::IP_PKTINFO, &[0, 0, 0, 0, 198, 18, 0, 9, 0, 0, 0, 0]));
        assert_eq!(v4, want, "IPv4: DF is no message");
        let source6: IpAddr = "2001:2::9".parse().unwrap();
        let o6 = ProbeOptions { source: Some(source6), ..o };
        let v6 = c.build(None, &o6, true).to_vec();
        let mut info = match source6 {
            IpAddr::V6(a) => a.octets().to_vec(),
            IpAddr::V4(_) => unreachable!(),
        };
        info.extend([0; 4]);
        let mut want6 = cmsg(libc::IPPROTO_IPV6, libc::IPV6_HOPLIMIT, &7i32.to_ne_bytes());
        want6.extend(cmsg(libc::IPPROTO_IPV6, libc::IPV6_TCLASS, &0xb8i32.to_ne_bytes()));
        want6.extend(cmsg(libc::IPPROTO_IPV6, libc::IPV6_PKTINFO, &info));
        want6.extend(cmsg(libc::IPPROTO_IPV6, libc::IPV6_DONTFRAG, &1i32.to_ne_bytes()));
        assert_eq!(v6, want6);
        assert!(v6.len() <= SEND_CMSG_LEN);
    }

    #[test]
    fn opt_id_message_layout() {
        let mut c = OptIdCmsg::new();
        let bytes = c.set(0xdead_beef).to_vec();
        assert_eq!(bytes.len(), 24);
        assert_eq!(&bytes[0..8], &20usize.to_ne_bytes());
        assert_eq!(&bytes[8..12], &1i32.to_ne_bytes());
        assert_eq!(&bytes[12..16], &81i32.to_ne_bytes());
        assert_eq!(&bytes[16..20], &0xdead_beefu32.to_ne_bytes());
    }
}
