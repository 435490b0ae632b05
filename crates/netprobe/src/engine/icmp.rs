//! ICMP echo probes: writing them, and reading the ICMP sockets (echo replies, and errors
//! that quote either kind of probe).
use super::event_loop::EngineLoop;
use super::{family_of, IcmpMode, ProbeKind, Proto};
use crate::cmsg;
use crate::counters::EngineCounters;
use crate::inflight::{Key, Reply};
use crate::lifecycle::{Answer, Nanos, QuotedErrorReport, ReadTime, Transmit};
use crate::options::ProbeOptions;
use crate::recv_batch;
use crate::wire::icmp::{self, EchoRepr, Family, Message, Quoted, QuotedError};
use std::net::IpAddr;

impl EngineLoop {
    /// Writes the echo request of `tx` into the packet buffer; returns its length.
    pub(super) fn write_echo(&mut self, tx: &Transmit, options: &ProbeOptions) -> usize {
        let repr = EchoRepr { ident: self.config.identifier, seq: tx.seq, key: tx.key.0, token: tx.token };
        // `size` is checked (options::MAX_SIZE) before a target is tracked; the buffer holds it.
        let len = (icmp::HEADER_LEN + options.payload_len()).min(self.packet.len());
        icmp::emit_echo_request(family_of(tx.addr), &repr, &mut self.packet[..len]);
        len
    }

    pub(super) fn receive_icmp(&mut self, family: Family) {
        self.drain(Proto::Icmp, family, false, |engine, m, read| engine.on_icmp_message(family, m, read));
    }

    fn on_icmp_message(&mut self, family: Family, m: recv_batch::Message<'_>, read: ReadTime) {
        let info = cmsg::parse(m.ctrl);
        self.count_receive_drops(Proto::Icmp, family, info.dropped);
        let parsed = match (family, self.icmp_mode) {
            (Family::V4, IcmpMode::Raw) => icmp::parse_v4(m.data).map(|(src, msg)| (Some(IpAddr::V4(src)), msg)),
            // Ping sockets deliver the ICMP message alone, the sender apart.
            (Family::V4, IcmpMode::Datagram) => icmp::parse_v4_message(m.data).map(|msg| (m.src, msg)),
            (Family::V6, _) => icmp::parse_v6(m.data).map(|msg| (m.src, msg)),
        };
        let c = self.counters(Proto::Icmp);
        match parsed {
            Ok((src, Message::EchoReply(echo))) => {
                EngineCounters::add(&c.packets_received, 1);
                let rx_stamp_ns = info.software.map(|t| t.0);
                let at = read.arrival(rx_stamp_ns);
                let reply = Reply { rx_stamp_ns, rx_hw_ns: info.hardware.map(|t| t.0), at, closed: false };
                self.on_echo_reply(src, echo, reply);
            }
            Ok((_, Message::Error(err))) => self.on_icmp_error(err, read.arrival(info.software.map(|t| t.0))),
            Ok((_, Message::Other)) => {}
            Err(_) => EngineCounters::add(&c.packets_malformed, 1),
        }
    }

    fn on_echo_reply(&mut self, src: Option<IpAddr>, echo: EchoRepr, reply: Reply) {
        // On ping sockets the kernel chose the identifier, and delivers only replies carrying it.
        if self.icmp_mode == IcmpMode::Raw && echo.ident != self.config.identifier {
            return EngineCounters::add(&self.counters(Proto::Icmp).replies_foreign, 1);
        }
        let answer =
            Answer { key: Key(echo.key), token: echo.token, from: src, kind: ProbeKind::Icmp, seq: echo.seq, reply };
        // A reply whose record is gone is still ours when it carries the token the engine
        // computes for it: only our own probes carry such tokens.
        self.core.on_answer(Proto::Icmp, answer, |tokens| {
            src.is_some_and(|a| tokens.token(echo.key, echo.seq, a) == echo.token)
        });
    }

    fn on_icmp_error(&mut self, err: QuotedError, at: Nanos) {
        match err.quoted {
            Quoted::Echo { ident, seq, key_token: Some((key, token)) } if ident == self.config.identifier => {
                let report =
                    QuotedErrorReport { key: Key(key), token, dst: err.original_dst, kind: ProbeKind::Icmp, seq, at };
                self.core.on_quoted_error(Proto::Icmp, report)
            }
            Quoted::Echo { .. } => EngineCounters::add(&self.counters(Proto::Icmp).icmp_errors_unmatched, 1),
            Quoted::Tcp { src_port, dst_port, seq } => {
                let key = self.syn_key(err.original_dst, dst_port, src_port, seq);
                let kind = ProbeKind::Tcp { port: dst_port };
                let report =
                    QuotedErrorReport { key, token: u64::from(seq), dst: err.original_dst, kind, seq: src_port, at };
                self.core.on_quoted_error(Proto::Tcp, report)
            }
        }
    }
}
