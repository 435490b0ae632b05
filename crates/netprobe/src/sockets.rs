//! The raw sockets of one protocol and address family: a send socket whose only traffic is
//! its error queue of transmit timestamps, and a receive socket that, thanks to the kernel
//! filters, sees only what can answer our probes (echo replies and ICMP errors that quote
//! our probes; TCP segments to our probe ports).
use crate::config::StampKeyMode;
use crate::filter::{self, Insn};
use crate::recv_batch::RecvBatch;
use crate::sys;
use crate::wire::icmp::Family;
use crate::wire::tcp;
use socket2::{Domain, MsgHdr, Protocol, SockAddr, SockFilter, Socket, Type};
use std::io::{self, IoSlice};
use std::mem::MaybeUninit;
use std::ops::RangeInclusive;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::raw::{c_int, c_void};

/// Receive buffer asked for; the kernel caps it at `net.core.rmem_max` unless CAP_NET_ADMIN
/// lets `SO_RCVBUFFORCE` through.
pub const RECV_BUFFER: usize = 4 << 20;

pub struct FamilySockets {
    pub family: Family,
    pub tx: Socket,
    pub rx: Socket,
    /// How this pair's transmit stamps name their probe.
    pub matching: StampMatching,
}

/// How a transmit stamp is tied to its probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StampMatching {
    /// Each send carries its probe's key in `SCM_TS_OPT_ID` (Linux >= 6.13); the stamp comes
    /// with that key and nothing else (OPT_TSONLY).
    OptId,
    /// The stamp comes with a copy of the packet as the driver saw it, which carries the probe's
    /// key and token (`wire::looped`). Works on every kernel; costs the copy's room in the
    /// socket buffer until it is read.
    Packet,
}

const TX_SOFTWARE: u32 =
    libc::SOF_TIMESTAMPING_TX_SOFTWARE | libc::SOF_TIMESTAMPING_SOFTWARE | libc::SOF_TIMESTAMPING_OPT_ID;

/// The send socket's timestamping flags for a way of matching, with `-hard`'s (`hw`) added.
fn tx_flags(matching: StampMatching, hw: u32) -> u32 {
    match matching {
        StampMatching::OptId => TX_SOFTWARE | libc::SOF_TIMESTAMPING_OPT_TSONLY | hw,
        StampMatching::Packet => TX_SOFTWARE | hw,
    }
}

/// Whether this kernel takes `SCM_TS_OPT_ID` on `sock`, asked once at start with the socket
/// itself. A raw socket: a `sendmsg` with the control message, MSG_CONFIRM|MSG_PROBE and no
/// data, which sends nothing (on ICMP sockets it fails with EFAULT reading the type of the
/// empty message, after the control data was parsed): a kernel without `SCM_TS_OPT_ID` refuses
/// the control message with EINVAL while parsing it. EINVAL, whatever its cause, means the
/// packet copy, which works on every kernel.
/// A ping socket cannot be asked so (an empty echo is refused first, and older kernels ignore
/// its control data instead of refusing it): it sends one echo request to the loopback address
/// with a key of its own, and takes `SCM_TS_OPT_ID` only if the transmit stamp comes back with
/// that key.
fn kernel_takes_opt_id(sock: &Socket, family: Family, ping: bool) -> bool {
    const ASKED: u32 = 0x5ca1_ab1e;
    let dst = match family {
        Family::V4 => SockAddr::from(std::net::SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, 0))),
        Family::V6 => SockAddr::from(std::net::SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, 0))),
    };
    let mut opt_id = crate::cmsg::OptIdCmsg::new();
    if !ping {
        let bufs = [IoSlice::new(&[])];
        let msg = MsgHdr::new().with_addr(&dst).with_buffers(&bufs).with_control(opt_id.set(ASKED));
        let refused = sock.sendmsg(&msg, libc::MSG_CONFIRM | sys::MSG_PROBE).err().and_then(|e| e.raw_os_error());
        return refused != Some(libc::EINVAL);
    }
    let echo_type = match family {
        Family::V4 => crate::wire::icmp::types::V4_ECHO_REQUEST,
        Family::V6 => crate::wire::icmp::types::V6_ECHO_REQUEST,
    };
    let echo = [echo_type, 0, 0, 0, 0, 0, 0, 0];
    let bufs = [IoSlice::new(&echo)];
    let msg = MsgHdr::new().with_addr(&dst).with_buffers(&bufs).with_control(opt_id.set(ASKED));
    let mut takes = false;
    if sock.sendmsg(&msg, 0).is_ok() {
        let mut batch = RecvBatch::new(4);
        // The loopback stamps at once; a bounded wait covers a busy host.
        for _ in 0..50 {
            let mut pfd = libc::pollfd { fd: sock.as_raw_fd(), events: 0, revents: 0 };
            // SAFETY: one valid pollfd for the call.
            unsafe { libc::poll(&mut pfd, 1, 10) };
            let n = batch.read(sock, libc::MSG_ERRQUEUE, false).unwrap_or(0);
            let mut stamps =
                (0..n).filter_map(|i| batch.message(i)).filter_map(|m| crate::cmsg::parse(m.ctrl).extended_err);
            if let Some(err) = stamps.rfind(|e| e.is_tx_timestamp()) {
                takes = err.data == ASKED;
                break;
            }
        }
    }
    drain(sock);
    drain_errors(sock);
    takes
}

/// Empties a socket's error queue.
fn drain_errors(sock: &Socket) {
    let mut batch = RecvBatch::new(crate::recv_batch::MAX_BATCH);
    while matches!(batch.read(sock, libc::MSG_ERRQUEUE, false), Ok(n) if n > 0) {}
}

/// Sets `sock`'s transmit timestamping for `want` (`Auto`: by what the kernel takes), and says
/// which it is.
fn set_tx_stamping(
    sock: &Socket,
    family: Family,
    want: StampKeyMode,
    hw: u32,
    ping: bool,
    rx_flags: u32,
) -> io::Result<StampMatching> {
    setsockopt(sock, libc::SOL_SOCKET, sys::SO_TIMESTAMPING, &(tx_flags(StampMatching::OptId, hw) | rx_flags))?;
    let matching = match want {
        StampKeyMode::Packet => StampMatching::Packet,
        StampKeyMode::Auto if kernel_takes_opt_id(sock, family, ping) => StampMatching::OptId,
        StampKeyMode::Auto => StampMatching::Packet,
    };
    if matching == StampMatching::Packet {
        setsockopt(sock, libc::SOL_SOCKET, sys::SO_TIMESTAMPING, &(tx_flags(matching, hw) | rx_flags))?;
    }
    Ok(matching)
}

/// Reports errors the kernel hides otherwise: without IP_RECVERR (IPV6_RECVERR) a raw socket's
/// sendmsg returns success when the queueing discipline dropped the packet for a full queue
/// (ENOBUFS), and the probe would look lost in the network. ICMP errors then also reach the
/// error queue; they are read and ignored there (the receive socket handles ICMP errors).
fn report_send_errors(sock: &Socket, family: Family) -> io::Result<()> {
    match family {
        Family::V4 => setsockopt(sock, libc::SOL_IP, libc::IP_RECVERR, &(1 as c_int)),
        Family::V6 => setsockopt(sock, libc::SOL_IPV6, libc::IPV6_RECVERR, &(1 as c_int)),
    }
}

pub(crate) fn getsockopt_int(sock: &Socket, level: c_int, name: c_int) -> io::Result<c_int> {
    let mut value: c_int = 0;
    let mut len = std::mem::size_of::<c_int>() as libc::socklen_t;
    // SAFETY: `value` and `len` are live for the call and `len` is the size of `value`.
    let rc = unsafe {
        libc::getsockopt(sock.as_raw_fd(), level, name, (&mut value as *mut c_int).cast::<c_void>(), &mut len)
    };
    if rc == 0 {
        Ok(value)
    } else {
        Err(io::Error::last_os_error())
    }
}

pub(crate) fn setsockopt<T>(sock: &Socket, level: c_int, name: c_int, value: &T) -> io::Result<()> {
    // SAFETY: `value` is a live, properly sized T for the duration of the call.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            level,
            name,
            (value as *const T).cast::<c_void>(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn attach(sock: &Socket, prog: &[Insn]) -> io::Result<()> {
    let filters: Vec<SockFilter> = prog.iter().map(|i| SockFilter::new(i.code, i.jt, i.jf, i.k)).collect();
    sock.attach_filter(&filters)
}

/// Which protocol a pair of sockets carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeProto {
    Icmp,
    Tcp,
}

fn raw_socket(family: Family, probe: ProbeProto) -> io::Result<Socket> {
    let domain = match family {
        Family::V4 => Domain::IPV4,
        Family::V6 => Domain::IPV6,
    };
    let proto = match (family, probe) {
        (Family::V4, ProbeProto::Icmp) => Protocol::ICMPV4,
        (Family::V6, ProbeProto::Icmp) => Protocol::ICMPV6,
        (_, ProbeProto::Tcp) => Protocol::TCP,
    };
    let sock = Socket::new(domain, Type::RAW.cloexec(), Some(proto))?;
    sock.set_nonblocking(true)?;
    Ok(sock)
}

fn grow_receive_buffer(sock: &Socket) -> io::Result<()> {
    let size = RECV_BUFFER as c_int;
    if setsockopt(sock, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, &size).is_err() {
        sock.set_recv_buffer_size(RECV_BUFFER)?;
    }
    Ok(())
}

/// Asks the kernel to tell, with each packet, how many it has dropped for a full buffer: an
/// answer lost there is our loss, not the network's, and is counted apart.
fn count_receive_drops(sock: &Socket) -> io::Result<()> {
    setsockopt(sock, libc::SOL_SOCKET, libc::SO_RXQ_OVFL, &(1 as c_int))
}

/// Drops whatever reached a socket before its filter was attached.
fn drain(sock: &Socket) {
    let mut buf = [MaybeUninit::<u8>::uninit(); 256];
    while sock.recv(&mut buf).is_ok() {}
}

fn block_all_but_replies(sock: &Socket, family: Family) -> io::Result<()> {
    use crate::wire::icmp::types::*;
    match family {
        Family::V4 => {
            // A set bit drops that type.
            let pass = [V4_ECHO_REPLY, V4_DEST_UNREACHABLE, V4_TIME_EXCEEDED, V4_PARAMETER_PROBLEM];
            let mask: u32 = !pass.iter().fold(0u32, |m, t| m | (1 << t));
            setsockopt(sock, libc::SOL_RAW, sys::ICMP_FILTER, &mask)
        }
        Family::V6 => {
            let pass = [V6_ECHO_REPLY, V6_DEST_UNREACHABLE, V6_PACKET_TOO_BIG, V6_TIME_EXCEEDED, V6_PARAMETER_PROBLEM];
            let mut mask = [u32::MAX; 8];
            for t in pass {
                mask[usize::from(t >> 5)] &= !(1u32 << (t & 31));
            }
            setsockopt(sock, libc::IPPROTO_ICMPV6, sys::ICMP6_FILTER, &mask)
        }
    }
}

/// IPv6 raw sockets compute (send) and verify (receive) the TCP checksum at this offset.
fn kernel_tcp_checksum(sock: &Socket) -> io::Result<()> {
    setsockopt(sock, libc::IPPROTO_IPV6, libc::IPV6_CHECKSUM, &(tcp::CHECKSUM_OFFSET as c_int))
}

impl FamilySockets {
    /// The ICMP pair. Its receive socket also takes ICMP errors quoting SYNs from `tcp_ports`.
    /// Needs CAP_NET_RAW.
    pub fn open_icmp(
        family: Family,
        ident: u16,
        tcp_ports: &RangeInclusive<u16>,
        hard: bool,
        stamps: StampKeyMode,
    ) -> io::Result<Self> {
        let prog = match family {
            Family::V4 => filter::icmp_v4_replies(ident, tcp_ports),
            Family::V6 => filter::icmp_v6_replies(ident, tcp_ports),
        };
        Self::open(family, ProbeProto::Icmp, &prog, hard, stamps, |rx| block_all_but_replies(rx, family))
    }

    /// An unprivileged ICMP ("ping") socket, for hosts without CAP_NET_RAW: allowed when the
    /// process's group is in `net.ipv4.ping_group_range`. The kernel sets the identifier (the
    /// socket's "port") and hands the socket only the replies that carry it, so no filter is
    /// needed; one socket sends and receives (`tx` is a second descriptor of it).
    pub fn open_ping(family: Family, stamps: StampKeyMode) -> io::Result<Self> {
        let (domain, proto) = match family {
            Family::V4 => (Domain::IPV4, Protocol::ICMPV4),
            Family::V6 => (Domain::IPV6, Protocol::ICMPV6),
        };
        let rx = Socket::new(domain, Type::DGRAM.cloexec(), Some(proto))?;
        rx.set_nonblocking(true)?;
        grow_receive_buffer(&rx)?;
        count_receive_drops(&rx)?;
        // No IP_RECVERR here: on a ping socket an ICMP error would also fail the next sendmsg.
        let matching = set_tx_stamping(&rx, family, stamps, 0, true, libc::SOF_TIMESTAMPING_RX_SOFTWARE)?;
        let tx = rx.try_clone()?;
        Ok(Self { family, tx, rx, matching })
    }

    /// The TCP pair for SYN probes from `ports`. Needs CAP_NET_RAW.
    pub fn open_tcp(family: Family, ports: &RangeInclusive<u16>, hard: bool, stamps: StampKeyMode) -> io::Result<Self> {
        let prog = match family {
            Family::V4 => filter::tcp_v4_to_ports(ports),
            Family::V6 => filter::tcp_v6_to_ports(ports),
        };
        let sockets = Self::open(family, ProbeProto::Tcp, &prog, hard, stamps, |rx| match family {
            Family::V4 => Ok(()),
            Family::V6 => kernel_tcp_checksum(rx),
        })?;
        if family == Family::V6 {
            kernel_tcp_checksum(&sockets.tx)?;
        }
        Ok(sockets)
    }

    fn open(
        family: Family,
        probe: ProbeProto,
        rx_filter: &[Insn],
        hard: bool,
        stamps: StampKeyMode,
        rx_setup: impl Fn(&Socket) -> io::Result<()>,
    ) -> io::Result<Self> {
        // With -hard, both clocks: the NIC's stamps, and software ones for the packets it skips
        // (many drivers stamp one transmit at a time); OPT_TX_SWHW reports both on transmit.
        let (tx_hard, rx_hard) = if hard {
            (
                libc::SOF_TIMESTAMPING_TX_HARDWARE
                    | libc::SOF_TIMESTAMPING_RAW_HARDWARE
                    | libc::SOF_TIMESTAMPING_OPT_TX_SWHW,
                libc::SOF_TIMESTAMPING_RX_HARDWARE | libc::SOF_TIMESTAMPING_RAW_HARDWARE,
            )
        } else {
            (0, 0)
        };
        let tx = raw_socket(family, probe)?;
        attach(&tx, &filter::drop_all())?;
        grow_receive_buffer(&tx)?;
        report_send_errors(&tx, family)?;
        let matching = set_tx_stamping(&tx, family, stamps, tx_hard, false, 0)?;
        drain(&tx);

        let rx = raw_socket(family, probe)?;
        rx_setup(&rx)?;
        attach(&rx, rx_filter)?;
        let rx_flags = libc::SOF_TIMESTAMPING_RX_SOFTWARE | libc::SOF_TIMESTAMPING_SOFTWARE | rx_hard;
        setsockopt(&rx, libc::SOL_SOCKET, sys::SO_TIMESTAMPING, &rx_flags)?;
        grow_receive_buffer(&rx)?;
        count_receive_drops(&rx)?;
        drain(&rx);
        Ok(Self { family, tx, rx, matching })
    }

    /// Binds both sockets to an interface by index (`None` unbinds): probes leave from it and
    /// take its address as their source.
    pub fn bind_to_interface(&self, ifindex: Option<u32>) -> io::Result<()> {
        let index = ifindex.unwrap_or(0) as c_int;
        setsockopt(&self.tx, libc::SOL_SOCKET, libc::SO_BINDTOIFINDEX, &index)?;
        setsockopt(&self.rx, libc::SOL_SOCKET, libc::SO_BINDTOIFINDEX, &index)
    }

    pub fn tx_fd(&self) -> BorrowedFd<'_> {
        self.tx.as_fd()
    }
    pub fn rx_fd(&self) -> BorrowedFd<'_> {
        self.rx.as_fd()
    }

    /// Sends one probe; `ctrl` carries its timestamp key (`SCM_TS_OPT_ID`) when stamps are
    /// matched by it.
    pub fn send(&self, dst: &SockAddr, packet: &[u8], ctrl: Option<&[u8]>) -> io::Result<()> {
        let bufs = [IoSlice::new(packet)];
        let mut msg = MsgHdr::new().with_addr(dst).with_buffers(&bufs);
        if let Some(c) = ctrl {
            msg = msg.with_control(c);
        }
        self.tx.sendmsg(&msg, 0).map(|_| ())
    }

    /// Reads the queued packets of the receive socket into `batch` (non-blocking).
    pub fn recv_replies(&self, batch: &mut RecvBatch) -> io::Result<usize> {
        batch.read(&self.rx, 0, true)
    }

    /// Reads queued entries of the send socket's error queue into `batch` (non-blocking).
    pub fn recv_tx_stamps(&self, batch: &mut RecvBatch) -> io::Result<usize> {
        batch.read(&self.tx, libc::MSG_ERRQUEUE, false)
    }
}
