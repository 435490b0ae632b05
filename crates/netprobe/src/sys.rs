//! Linux ABI constants that libc 0.2 does not export (values from include/uapi, identical on
//! x86_64 and aarch64, the only targets this crate supports).
use std::os::raw::c_int;

/// `SOL_SOCKET` control message carrying the OPT_ID key for one sendmsg (Linux >= 6.13).
pub const SCM_TS_OPT_ID: c_int = 81;
/// `SO_TIMESTAMPING_OLD`; on 64-bit targets its `struct scm_timestamping` is y2038-safe.
pub const SO_TIMESTAMPING: c_int = 37;
/// `SO_TIMESTAMPING_NEW`: the same layout on 64-bit targets; accepted when parsing.
pub const SO_TIMESTAMPING_NEW: c_int = 65;
/// `SOL_RAW` / `ICMP_FILTER`: a bitmap of ICMP types (0..31) the raw socket drops.
pub const ICMP_FILTER: c_int = 1;
/// `IPPROTO_ICMPV6` / `ICMP6_FILTER`: 256-bit bitmap, a set bit blocks that type.
pub const ICMP6_FILTER: c_int = 1;
/// `sendmsg` flag: do not send, only look up the path (with MSG_CONFIRM and no data, raw
/// sockets return before sending anything).
pub const MSG_PROBE: c_int = 0x10;
/// `ee_info` of a TX timestamp taken when the packet left for the device.
pub const SCM_TSTAMP_SND: u32 = 0;

#[cfg(not(all(target_os = "linux", target_pointer_width = "64")))]
compile_error!("netprobe supports 64-bit Linux only");
