//! Classic BPF socket filters, so that the kernel hands the engine only packets that can
//! be answers to its probes: echo replies carrying our identifier, TCP segments to our probe
//! ports, and ICMP errors that quote one of our echo requests or SYNs. Everything else a busy
//! host receives stays in the kernel.
use crate::wire::icmp::types;
use std::ops::RangeInclusive;

/// One classic BPF instruction (`struct sock_filter`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

mod op {
    pub const LD_H_ABS: u16 = 0x28;
    pub const LD_B_ABS: u16 = 0x30;
    pub const LD_H_IND: u16 = 0x48;
    pub const LD_B_IND: u16 = 0x50;
    pub const LDX_B_MSH: u16 = 0xb1;
    pub const ALU_ADD_K: u16 = 0x04;
    pub const ALU_ADD_X: u16 = 0x0c;
    pub const ALU_AND_K: u16 = 0x54;
    pub const ALU_LSH_K: u16 = 0x64;
    pub const JEQ_K: u16 = 0x15;
    pub const JGT_K: u16 = 0x25;
    pub const JGE_K: u16 = 0x35;
    pub const JSET_K: u16 = 0x45;
    pub const RET_K: u16 = 0x06;
    pub const TAX: u16 = 0x07;
}

/// Bytes of an accepted packet the socket keeps: all of it.
const ACCEPT_LEN: u32 = 0x0004_0000;

#[derive(Clone, Copy)]
enum To {
    Next,
    Accept,
    Drop,
    Echo,
    Error,
    QuotedEcho,
    QuotedTcp,
}

enum Step {
    Stmt(u16, u32),
    Jump(u16, u32, To, To),
    Label(To),
}

/// Resolves symbolic jump targets into the relative offsets cBPF uses; the program ends
/// with the accept and drop returns.
fn assemble(steps: &[Step]) -> Vec<Insn> {
    let mut positions = Vec::new();
    let mut pc = 0usize;
    for s in steps {
        match s {
            Step::Label(l) => positions.push((*l as u8, pc)),
            _ => pc += 1,
        }
    }
    let accept_at = pc;
    let drop_at = pc + 1;
    let find = |t: To, from: usize| -> u8 {
        let target = match t {
            To::Next => from + 1,
            To::Accept => accept_at,
            To::Drop => drop_at,
            other => positions.iter().find(|(l, _)| *l == other as u8).map(|(_, p)| *p).unwrap_or(drop_at),
        };
        u8::try_from(target - from - 1).unwrap_or(u8::MAX)
    };
    let mut out = Vec::new();
    for s in steps {
        let pc = out.len();
        match *s {
            Step::Stmt(code, k) => out.push(Insn { code, jt: 0, jf: 0, k }),
            Step::Jump(code, k, jt, jf) => out.push(Insn { code, jt: find(jt, pc), jf: find(jf, pc), k }),
            Step::Label(_) => {}
        }
    }
    out.push(Insn { code: op::RET_K, jt: 0, jf: 0, k: ACCEPT_LEN });
    out.push(Insn { code: op::RET_K, jt: 0, jf: 0, k: 0 });
    out
}

/// Accepts when A (a port) lies in `ports`.
fn port_in(ports: &RangeInclusive<u16>) -> [Step; 2] {
    [
        Step::Jump(op::JGE_K, u32::from(*ports.start()), To::Next, To::Drop),
        Step::Jump(op::JGT_K, u32::from(*ports.end()), To::Drop, To::Accept),
    ]
}

/// X += length of the quoted IPv4 header + 8, i.e. X = offset of the quoted transport header
/// (X holding the outer header length on entry).
fn skip_quoted_ipv4() -> [Step; 6] {
    [
        Step::Stmt(op::LD_B_IND, 8), // quoted header's version and length
        Step::Stmt(op::ALU_AND_K, 0x0f),
        Step::Stmt(op::ALU_LSH_K, 2),
        Step::Stmt(op::ALU_ADD_X, 0),
        Step::Stmt(op::ALU_ADD_K, 8),
        Step::Stmt(op::TAX, 0),
    ]
}

/// For a raw IPv4 ICMP socket, which sees the IPv4 header at offset 0: our echo replies, and
/// errors quoting our echo requests or SYNs from `tcp_ports`.
pub fn icmp_v4_replies(ident: u16, tcp_ports: &RangeInclusive<u16>) -> Vec<Insn> {
    use Step::*;
    let id = u32::from(ident);
    let mut steps = vec![
        Stmt(op::LD_H_ABS, 6),
        Jump(op::JSET_K, 0x1fff, To::Drop, To::Next), // later fragments carry no ICMP header
        Stmt(op::LDX_B_MSH, 0),                       // X = IPv4 header length
        Stmt(op::LD_B_IND, 0),                        // ICMP type
        Jump(op::JEQ_K, types::V4_ECHO_REPLY.into(), To::Echo, To::Next),
        Jump(op::JEQ_K, types::V4_DEST_UNREACHABLE.into(), To::Error, To::Next),
        Jump(op::JEQ_K, types::V4_TIME_EXCEEDED.into(), To::Error, To::Next),
        Jump(op::JEQ_K, types::V4_PARAMETER_PROBLEM.into(), To::Error, To::Drop),
        Label(To::Echo),
        Stmt(op::LD_H_IND, 4),
        Jump(op::JEQ_K, id, To::Accept, To::Drop),
        Label(To::Error),
        Stmt(op::LD_B_IND, 8 + 9), // quoted header's protocol
        Jump(op::JEQ_K, 1, To::QuotedEcho, To::Next),
        Jump(op::JEQ_K, 6, To::QuotedTcp, To::Drop),
        Label(To::QuotedEcho),
    ];
    steps.extend(skip_quoted_ipv4());
    steps.extend([
        Stmt(op::LD_B_IND, 0),
        Jump(op::JEQ_K, types::V4_ECHO_REQUEST.into(), To::Next, To::Drop),
        Stmt(op::LD_H_IND, 4),
        Jump(op::JEQ_K, id, To::Accept, To::Drop),
        Label(To::QuotedTcp),
    ]);
    steps.extend(skip_quoted_ipv4());
    steps.push(Stmt(op::LD_H_IND, 0)); // quoted source port
    steps.extend(port_in(tcp_ports));
    assemble(&steps)
}

/// For a raw ICMPv6 socket, which sees the ICMPv6 header at offset 0.
pub fn icmp_v6_replies(ident: u16, tcp_ports: &RangeInclusive<u16>) -> Vec<Insn> {
    use Step::*;
    let id = u32::from(ident);
    let mut steps = vec![
        Stmt(op::LD_B_ABS, 0),
        Jump(op::JEQ_K, types::V6_ECHO_REPLY.into(), To::Echo, To::Next),
        Jump(op::JEQ_K, types::V6_DEST_UNREACHABLE.into(), To::Error, To::Next),
        Jump(op::JEQ_K, types::V6_PACKET_TOO_BIG.into(), To::Error, To::Next),
        Jump(op::JEQ_K, types::V6_TIME_EXCEEDED.into(), To::Error, To::Next),
        Jump(op::JEQ_K, types::V6_PARAMETER_PROBLEM.into(), To::Error, To::Drop),
        Label(To::Echo),
        Stmt(op::LD_H_ABS, 4),
        Jump(op::JEQ_K, id, To::Accept, To::Drop),
        Label(To::Error),
        Stmt(op::LD_B_ABS, 8 + 6), // quoted IPv6 next header (probes carry no extension headers)
        Jump(op::JEQ_K, 58, To::QuotedEcho, To::Next),
        Jump(op::JEQ_K, 6, To::QuotedTcp, To::Drop),
        Label(To::QuotedEcho),
        Stmt(op::LD_B_ABS, 8 + 40),
        Jump(op::JEQ_K, types::V6_ECHO_REQUEST.into(), To::Next, To::Drop),
        Stmt(op::LD_H_ABS, 8 + 40 + 4),
        Jump(op::JEQ_K, id, To::Accept, To::Drop),
        Label(To::QuotedTcp),
        Stmt(op::LD_H_ABS, 8 + 40), // quoted source port
    ];
    steps.extend(port_in(tcp_ports));
    assemble(&steps)
}

/// For a raw IPv4 TCP socket (IPv4 header at offset 0): segments to our probe ports only.
pub fn tcp_v4_to_ports(ports: &RangeInclusive<u16>) -> Vec<Insn> {
    use Step::*;
    let mut steps = vec![
        Stmt(op::LD_H_ABS, 6),
        Jump(op::JSET_K, 0x1fff, To::Drop, To::Next),
        Stmt(op::LDX_B_MSH, 0),
        Stmt(op::LD_H_IND, 2), // destination port
    ];
    steps.extend(port_in(ports));
    assemble(&steps)
}

/// For a raw IPv6 TCP socket (TCP header at offset 0).
pub fn tcp_v6_to_ports(ports: &RangeInclusive<u16>) -> Vec<Insn> {
    let mut steps = vec![Step::Stmt(op::LD_H_ABS, 2)];
    steps.extend(port_in(ports));
    assemble(&steps)
}

/// For send-only sockets: nothing enters their receive queue, so their buffer holds only
/// the error queue's transmit timestamps (which no socket filter sees).
pub fn drop_all() -> Vec<Insn> {
    vec![Insn { code: op::RET_K, jt: 0, jf: 0, k: 0 }]
}

#[cfg(test)]
pub(crate) mod interp {
    //! Just enough of a cBPF interpreter to run the programs above on byte fixtures.
    use super::{op, Insn};

    pub fn run(prog: &[Insn], pkt: &[u8]) -> u32 {
        let (mut a, mut x, mut pc) = (0u32, 0u32, 0usize);
        let load = |off: usize, size: usize| -> Option<u32> {
            let b = pkt.get(off..off.checked_add(size)?)?;
            Some(b.iter().fold(0u32, |acc, &v| (acc << 8) | u32::from(v)))
        };
        while let Some(i) = prog.get(pc) {
            pc += 1;
            let k = i.k as usize;
            match i.code {
                op::LD_H_ABS | op::LD_B_ABS => match load(k, if i.code == op::LD_H_ABS { 2 } else { 1 }) {
                    Some(v) => a = v,
                    None => return 0,
                },
                op::LD_H_IND | op::LD_B_IND => match load(x as usize + k, if i.code == op::LD_H_IND { 2 } else { 1 }) {
                    Some(v) => a = v,
                    None => return 0,
                },
                op::LDX_B_MSH => match load(k, 1) {
                    Some(v) => x = (v & 0xf) * 4,
                    None => return 0,
                },
                op::ALU_ADD_K => a = a.wrapping_add(i.k),
                op::ALU_ADD_X => a = a.wrapping_add(x),
                op::ALU_AND_K => a &= i.k,
                op::ALU_LSH_K => a <<= i.k,
                op::TAX => x = a,
                op::JEQ_K => pc += usize::from(if a == i.k { i.jt } else { i.jf }),
                op::JGT_K => pc += usize::from(if a > i.k { i.jt } else { i.jf }),
                op::JGE_K => pc += usize::from(if a >= i.k { i.jt } else { i.jf }),
                op::JSET_K => pc += usize::from(if a & i.k != 0 { i.jt } else { i.jf }),
                op::RET_K => return i.k,
                other => panic!("opcode {other:#x} not modelled"),
            }
        }
        0
    }
}

#[cfg(test)]
mod tests {
    use super::interp::run;
    use super::*;
    use crate::checksum::internet_checksum;
    use crate::wire::icmp::{emit_echo_request, EchoRepr, Family, PROBE_LEN};

    const IDENT: u16 = 0x4242;
    const PORTS: RangeInclusive<u16> = 61000..=61127;

    fn echo(family: Family, ident: u16, reply: bool) -> Vec<u8> {
        let mut buf = [0u8; PROBE_LEN];
        emit_echo_request(family, &EchoRepr { ident, seq: 1, key: 9, token: 99 }, &mut buf);
        if reply {
            buf[0] = if family == Family::V4 { 0 } else { 129 };
        }
        buf.to_vec()
    }

    fn ipv4(ihl_words: u8, frag: u16, payload: &[u8]) -> Vec<u8> {
        let mut h = vec![0x40 | ihl_words, 0, 0, 0, 0, 0];
        h.extend_from_slice(&frag.to_be_bytes());
        h.extend_from_slice(&[64, 1, 0, 0, 198, 18, 0, 2, 198, 18, 0, 1]);
        h.resize(usize::from(ihl_words) * 4, 0);
        h.extend_from_slice(payload);
        h
    }

    fn v4_error(icmp_type: u8, quoted_ihl: u8, probe: &[u8]) -> Vec<u8> {
        let mut icmp = vec![icmp_type, 0, 0, 0, 0, 0, 0, 0];
        icmp.extend(ipv4(quoted_ihl, 0x4000, probe));
        let sum = internet_checksum(&icmp);
        icmp[2..4].copy_from_slice(&sum.to_be_bytes());
        ipv4(5, 0, &icmp)
    }

    #[test]
    fn v4_accepts_our_replies_only() {
        let prog = icmp_v4_replies(IDENT, &PORTS);
        assert_eq!(run(&prog, &ipv4(5, 0, &echo(Family::V4, IDENT, true))), ACCEPT_LEN);
        assert_eq!(run(&prog, &ipv4(6, 0, &echo(Family::V4, IDENT, true))), ACCEPT_LEN);
        assert_eq!(run(&prog, &ipv4(5, 0, &echo(Family::V4, IDENT + 1, true))), 0, "foreign ident");
        assert_eq!(run(&prog, &ipv4(5, 0, &echo(Family::V4, IDENT, false))), 0, "echo request");
        assert_eq!(run(&prog, &ipv4(5, 0x0010, &echo(Family::V4, IDENT, true))), 0, "later fragment");
        assert_eq!(run(&prog, &ipv4(5, 0, &[0])), 0, "truncated");
    }

    #[test]
    fn v4_accepts_errors_quoting_our_probes() {
        let prog = icmp_v4_replies(IDENT, &PORTS);
        let ours = echo(Family::V4, IDENT, false);
        for t in [3, 11, 12] {
            assert_eq!(run(&prog, &v4_error(t, 5, &ours)), ACCEPT_LEN, "type {t}");
        }
        assert_eq!(run(&prog, &v4_error(3, 7, &ours)), ACCEPT_LEN, "quoted header with options");
        assert_eq!(run(&prog, &v4_error(3, 5, &echo(Family::V4, 7, false))), 0, "someone else's probe");
        assert_eq!(run(&prog, &v4_error(5, 5, &ours)), 0, "redirect");
        assert_eq!(run(&prog, &v4_error(3, 5, &ours[..4])), 0, "quote too short");
    }

    #[test]
    fn v6_accepts_our_replies_and_quoting_errors() {
        let prog = icmp_v6_replies(IDENT, &PORTS);
        assert_eq!(run(&prog, &echo(Family::V6, IDENT, true)), ACCEPT_LEN);
        assert_eq!(run(&prog, &echo(Family::V6, IDENT ^ 1, true)), 0);
        assert_eq!(run(&prog, &echo(Family::V6, IDENT, false)), 0);
        let mut err = vec![1, 4, 0, 0, 0, 0, 0, 0, 0x60, 0, 0, 0, 0, 64, 58, 64];
        err.resize(8 + 40, 0);
        err.extend(echo(Family::V6, IDENT, false));
        assert_eq!(run(&prog, &err), ACCEPT_LEN);
        err[8 + 6] = 17;
        assert_eq!(run(&prog, &err), 0, "quoted UDP");
        assert_eq!(run(&prog, &[135, 0, 0, 0]), 0, "neighbour solicitation");
    }

    fn syn(src_port: u16, dst_port: u16) -> Vec<u8> {
        let mut seg = vec![0u8; 20];
        seg[0..2].copy_from_slice(&src_port.to_be_bytes());
        seg[2..4].copy_from_slice(&dst_port.to_be_bytes());
        seg[12] = 0x50;
        seg[13] = 0x12;
        seg
    }

    fn ipv4_tcp(payload: &[u8]) -> Vec<u8> {
        let mut p = ipv4(5, 0, payload);
        p[9] = 6;
        p
    }

    #[test]
    fn tcp_sockets_see_only_segments_to_probe_ports() {
        let v4 = tcp_v4_to_ports(&PORTS);
        let v6 = tcp_v6_to_ports(&PORTS);
        for (port, expected) in [(60999, 0), (61000, ACCEPT_LEN), (61127, ACCEPT_LEN), (61128, 0), (22, 0)] {
            assert_eq!(run(&v4, &ipv4_tcp(&syn(443, port))), expected, "v4 port {port}");
            assert_eq!(run(&v6, &syn(443, port)), expected, "v6 port {port}");
        }
        assert_eq!(run(&v4, &ipv4(5, 0x0020, &syn(443, 61000))[..]), 0, "later fragment");
    }

    #[test]
    fn icmp_sockets_accept_errors_quoting_our_syns() {
        let v4 = icmp_v4_replies(IDENT, &PORTS);
        let quote = |sport| {
            let mut q = ipv4(5, 0x4000, &syn(sport, 443));
            q[9] = 6;
            q
        };
        let error = |quoted: Vec<u8>| {
            let mut icmp = vec![3, 3, 0, 0, 0, 0, 0, 0];
            icmp.extend(quoted);
            ipv4(5, 0, &icmp)
        };
        assert_eq!(run(&v4, &error(quote(61005))), ACCEPT_LEN);
        assert_eq!(run(&v4, &error(quote(50000))), 0, "someone else's connection");
        let v6 = icmp_v6_replies(IDENT, &PORTS);
        let mut err6 = vec![1, 4, 0, 0, 0, 0, 0, 0, 0x60, 0, 0, 0, 0, 20, 6, 64];
        err6.resize(8 + 40, 0);
        err6.extend(syn(61005, 443));
        assert_eq!(run(&v6, &err6), ACCEPT_LEN);
        err6[48..50].copy_from_slice(&50000u16.to_be_bytes());
        assert_eq!(run(&v6, &err6), 0);
    }

    #[test]
    fn drop_all_drops() {
        assert_eq!(run(&drop_all(), &[1, 2, 3]), 0);
    }
}
