//! The raw sockets of one protocol and address family: a send socket whose only traffic is
//! its error queue of transmit timestamps, and a receive socket that, thanks to the kernel
//! filters, sees only what can answer our probes (echo replies and ICMP errors that quote
//! our probes; TCP segments to our probe ports).
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
    pub fn open_icmp(family: Family, ident: u16, tcp_ports: &RangeInclusive<u16>, hard: bool) -> io::Result<Self> {
        let prog = match family {
            Family::V4 => filter::icmp_v4_replies(ident, tcp_ports),
            Family::V6 => filter::icmp_v6_replies(ident, tcp_ports),
        };
        Self::open(family, ProbeProto::Icmp, &prog, hard, |rx| block_all_but_replies(rx, family))
    }

    /// An unprivileged ICMP ("ping") socket, for hosts without CAP_NET_RAW: allowed when the
    /// process's group is in `net.ipv4.ping_group_range`. The kernel sets the identifier (the
    /// socket's "port") and hands the socket only the replies that carry it, so no filter is
    /// needed; one socket sends and receives (`tx` is a second descriptor of it).
    pub fn open_ping(family: Family) -> io::Result<Self> {
        let (domain, proto) = match family {
            Family::V4 => (Domain::IPV4, Protocol::ICMPV4),
            Family::V6 => (Domain::IPV6, Protocol::ICMPV6),
        };
        let rx = Socket::new(domain, Type::DGRAM.cloexec(), Some(proto))?;
        rx.set_nonblocking(true)?;
        let flags = libc::SOF_TIMESTAMPING_TX_SOFTWARE
            | libc::SOF_TIMESTAMPING_RX_SOFTWARE
            | libc::SOF_TIMESTAMPING_SOFTWARE
            | libc::SOF_TIMESTAMPING_OPT_ID
            | libc::SOF_TIMESTAMPING_OPT_TSONLY;
        setsockopt(&rx, libc::SOL_SOCKET, sys::SO_TIMESTAMPING, &flags)?;
        grow_receive_buffer(&rx)?;
        count_receive_drops(&rx)?;
        let tx = rx.try_clone()?;
        Ok(Self { family, tx, rx })
    }

    /// The TCP pair for SYN probes from `ports`. Needs CAP_NET_RAW.
    pub fn open_tcp(family: Family, ports: &RangeInclusive<u16>, hard: bool) -> io::Result<Self> {
        let prog = match family {
            Family::V4 => filter::tcp_v4_to_ports(ports),
            Family::V6 => filter::tcp_v6_to_ports(ports),
        };
        let sockets = Self::open(family, ProbeProto::Tcp, &prog, hard, |rx| match family {
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
        let tx_flags = libc::SOF_TIMESTAMPING_TX_SOFTWARE
            | libc::SOF_TIMESTAMPING_SOFTWARE
            | libc::SOF_TIMESTAMPING_OPT_ID
            | libc::SOF_TIMESTAMPING_OPT_TSONLY
            | tx_hard;
        setsockopt(&tx, libc::SOL_SOCKET, sys::SO_TIMESTAMPING, &tx_flags)?;
        grow_receive_buffer(&tx)?;
        drain(&tx);

        let rx = raw_socket(family, probe)?;
        rx_setup(&rx)?;
        attach(&rx, rx_filter)?;
        let rx_flags = libc::SOF_TIMESTAMPING_RX_SOFTWARE | libc::SOF_TIMESTAMPING_SOFTWARE | rx_hard;
        setsockopt(&rx, libc::SOL_SOCKET, sys::SO_TIMESTAMPING, &rx_flags)?;
        grow_receive_buffer(&rx)?;
        count_receive_drops(&rx)?;
        drain(&rx);
        Ok(Self { family, tx, rx })
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

    /// Sends one probe; `ctrl` carries the per-send timestamp key when the kernel supports it.
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
