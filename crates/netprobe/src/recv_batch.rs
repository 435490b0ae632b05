//! Reading many messages in one `recvmmsg` call into buffers owned here: packet bytes,
//! control data and sender address per message. One call drains what one `recvmsg` per
//! packet took, and a short batch means the queue is empty, so no extra call has to come back
//! with EAGAIN to say so.
use socket2::Socket;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;

/// Bytes kept of each packet: a reply to a default probe is under 100, an ICMP error quotes at
/// most 576 (IPv4) or fills 1,280 (IPv6), and the reply to (or transmit stamp copy of) a probe
/// with the largest `size` is 9,000 bytes and its link header; anything longer is cut, which
/// the parsers see as a short packet. 32 of them: 300 KB, once.
pub const DATA_LEN: usize = 9216;
/// Messages one call reads at most.
pub const MAX_BATCH: usize = 32;
/// Control data per message: a timestamping message (64 bytes), an extended error with its
/// offender address (48), a drop count (24), with room to spare.
pub const CTRL_LEN: usize = 256;

/// One message of the last batch.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    pub data: &'a [u8],
    pub ctrl: &'a [u8],
    pub src: Option<IpAddr>,
}

#[derive(Debug, Default)]
pub struct RecvBatch {
    data: Vec<u8>,
    /// u64 words: control data must be aligned for `cmsghdr`.
    ctrl: Vec<u64>,
    addrs: Vec<libc::sockaddr_storage>,
    /// (data length, control length, address length) of each message read.
    lens: Vec<(usize, usize, libc::socklen_t)>,
    want_addr: bool,
}

impl RecvBatch {
    /// Room for `capacity` messages (at most MAX_BATCH) a call.
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.clamp(1, MAX_BATCH);
        // SAFETY: an all-zero sockaddr_storage is a valid (AF_UNSPEC) value.
        let empty: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        RecvBatch {
            data: vec![0; capacity * DATA_LEN],
            ctrl: vec![0; capacity * CTRL_LEN / 8],
            addrs: vec![empty; capacity],
            lens: Vec::with_capacity(capacity),
            want_addr: false,
        }
    }

    pub fn capacity(&self) -> usize {
        self.addrs.len()
    }

    /// Reads what is queued, up to the capacity, without waiting (`flags` adds e.g.
    /// `MSG_ERRQUEUE`). Ok(0) when nothing was queued.
    pub fn read(&mut self, sock: &Socket, flags: libc::c_int, want_addr: bool) -> io::Result<usize> {
        let n = self.capacity();
        self.lens.clear();
        self.want_addr = want_addr;
        // On the stack, rebuilt each call: nothing here points into itself.
        let mut iovs = [libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }; MAX_BATCH];
        // SAFETY: an all-zero mmsghdr is valid (no buffers).
        let mut hdrs: [libc::mmsghdr; MAX_BATCH] = unsafe { std::mem::zeroed() };
        let ctrl_base = self.ctrl.as_mut_ptr().cast::<u8>();
        for (i, (chunk, addr)) in self.data.chunks_exact_mut(DATA_LEN).zip(self.addrs.iter_mut()).enumerate() {
            iovs[i] = libc::iovec { iov_base: chunk.as_mut_ptr().cast(), iov_len: DATA_LEN };
            let h = &mut hdrs[i].msg_hdr;
            h.msg_iov = &mut iovs[i];
            h.msg_iovlen = 1;
            // SAFETY: i < capacity, so the region lies inside the control buffer.
            h.msg_control = unsafe { ctrl_base.add(i * CTRL_LEN) }.cast();
            h.msg_controllen = CTRL_LEN;
            if want_addr {
                // An address the kernel does not write must not be last call's.
                addr.ss_family = libc::AF_UNSPEC as libc::sa_family_t;
                h.msg_name = (addr as *mut libc::sockaddr_storage).cast();
                h.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            }
        }
        // SAFETY: `hdrs` holds n valid headers whose pointers stay valid for the call.
        let rc = unsafe {
            libc::recvmmsg(
                sock.as_raw_fd(),
                hdrs.as_mut_ptr(),
                n as libc::c_uint,
                flags | libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if rc < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::WouldBlock { Ok(0) } else { Err(e) };
        }
        for h in &hdrs[..rc as usize] {
            self.lens.push((h.msg_len as usize, h.msg_hdr.msg_controllen, h.msg_hdr.msg_namelen));
        }
        Ok(rc as usize)
    }

    /// Messages read by the last `read`.
    pub fn len(&self) -> usize {
        self.lens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lens.is_empty()
    }

    /// The i-th message of the last `read`.
    pub fn message(&self, i: usize) -> Option<Message<'_>> {
        let &(len, ctrl_len, addr_len) = self.lens.get(i)?;
        let data = self.data.get(i * DATA_LEN..i * DATA_LEN + len.min(DATA_LEN))?;
        // SAFETY: u64 words viewed as bytes; the length stays inside the vector.
        let ctrl_bytes = unsafe { std::slice::from_raw_parts(self.ctrl.as_ptr().cast::<u8>(), self.ctrl.len() * 8) };
        let ctrl = ctrl_bytes.get(i * CTRL_LEN..i * CTRL_LEN + ctrl_len.min(CTRL_LEN))?;
        let src = if self.want_addr { ip_of(self.addrs.get(i)?, addr_len) } else { None };
        Some(Message { data, ctrl, src })
    }
}

/// The IP address of a socket address the kernel wrote (`len` bytes of it).
fn ip_of(storage: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<IpAddr> {
    let len = len as usize;
    match libc::c_int::from(storage.ss_family) {
        libc::AF_INET if len >= std::mem::size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family says the storage holds a sockaddr_in, and it is large enough.
            let sin = unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr))))
        }
        libc::AF_INET6 if len >= std::mem::size_of::<libc::sockaddr_in6>() => {
            // SAFETY: as above, for sockaddr_in6.
            let sin6 = unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            Some(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use socket2::{Domain, Type};
    use std::net::SocketAddr;

    fn pair() -> (Socket, Socket, SocketAddr) {
        let rx = Socket::new(Domain::IPV4, Type::DGRAM, None).unwrap();
        rx.bind(&SocketAddr::from((Ipv4Addr::LOCALHOST, 0)).into()).unwrap();
        let to = rx.local_addr().unwrap().as_socket().unwrap();
        let tx = Socket::new(Domain::IPV4, Type::DGRAM, None).unwrap();
        tx.bind(&SocketAddr::from((Ipv4Addr::LOCALHOST, 0)).into()).unwrap();
        (rx, tx, to)
    }

    #[test]
    fn reads_what_is_queued_in_batches_then_nothing() {
        let (rx, tx, to) = pair();
        let on = 1 as libc::c_int;
        crate::sockets::setsockopt(&rx, libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, &on).unwrap();
        for i in 0..5u8 {
            tx.send_to(&[i; 10], &to.into()).unwrap();
        }
        let mut batch = RecvBatch::new(3);
        assert_eq!(batch.read(&rx, 0, true).unwrap(), 3, "a full batch");
        for i in 0..3 {
            let m = batch.message(i).unwrap();
            assert_eq!(m.data, &[i as u8; 10]);
            assert_eq!(m.src, Some(IpAddr::V4(Ipv4Addr::LOCALHOST)));
            assert!(m.ctrl.len() >= 16, "each message has its own control data");
        }
        assert!(batch.message(3).is_none());
        assert_eq!(batch.read(&rx, 0, false).unwrap(), 2, "the rest");
        assert_eq!(batch.message(1).unwrap().data, &[4u8; 10]);
        assert_eq!(batch.message(1).unwrap().src, None, "no address asked for");
        assert_eq!(batch.read(&rx, 0, true).unwrap(), 0, "empty: no error");
        assert!(batch.is_empty());
    }

    #[test]
    fn a_long_packet_is_cut_to_the_buffer() {
        let (rx, tx, to) = pair();
        tx.send_to(&[7u8; DATA_LEN + 100], &to.into()).unwrap();
        let mut batch = RecvBatch::new(2);
        assert_eq!(batch.read(&rx, 0, false).unwrap(), 1);
        assert_eq!(batch.message(0).unwrap().data.len(), DATA_LEN);
    }
}
