//! Probes in flight, in a slab addressed by a key that travels in the probe's payload and
//! in its transmit timestamp (OPT_ID). A key names a slot and its generation, so a stale
//! reply or stamp never lands on the probe that reuses the slot. Grows to the peak number
//! of probes in flight and then allocates nothing.
//!
//! A key's generation has 12 bits, so a key names a slot's probe only for 4,096 reuses of that
//! slot: whatever must name one probe for longer (a deadline) carries its `serial` too. Freed
//! slots are reused oldest first, so a slot comes back as late as the table allows and what a
//! slot remembers of its last probe (for telling late and duplicate replies apart) lasts.
use std::collections::VecDeque;

const INDEX_BITS: u32 = 20;
const INDEX_MASK: u32 = (1 << INDEX_BITS) - 1;
const GEN_MASK: u16 = 0x0fff;
/// At most this many probes in flight (100k probes/s for 10 s).
pub const MAX_SLOTS: usize = 1 << INDEX_BITS;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key(pub u32);

impl Key {
    fn new(index: usize, gen: u16) -> Self {
        Key(index as u32 | (u32::from(gen & GEN_MASK) << INDEX_BITS))
    }
    fn index(self) -> usize {
        (self.0 & INDEX_MASK) as usize
    }
    fn gen(self) -> u16 {
        (self.0 >> INDEX_BITS) as u16
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Probe {
    pub target_index: u32,
    pub target_id: u32,
    /// A TCP SYN rather than an ICMP echo request.
    pub tcp: bool,
    /// ICMP sequence number; for TCP the source port.
    pub seq: u16,
    /// What only our own answer can carry: the ICMP payload token, or the TCP initial sequence number.
    pub token: u64,
    /// This probe's number, unique for the engine's life.
    pub serial: u64,
    /// When its target's turn was due (ns since start): a probe the kernel had no room for goes
    /// again at that place in the schedule.
    pub due: u64,
    /// CLOCK_MONOTONIC right before `sendmsg` (ns since start).
    pub sent_at: u64,
    /// CLOCK_REALTIME right before `sendmsg` (ns since the epoch): a software transmit stamp
    /// earlier than this belongs to another probe.
    pub sent_rt: i64,
    /// When the probe is given up if unanswered (ns since start): its timeout plus a grace
    /// for the kernel's transmit path (see `lifecycle::GRACE`).
    pub expiry: u64,
    pub tx_stamp_ns: Option<i64>,
    /// The NIC's transmit stamp (`-hard`).
    pub tx_hw_ns: Option<i64>,
    pub reply: Option<Reply>,
    /// When an ICMP error quoting it arrived, if after its expiry as it stood then (a transmit
    /// stamp not read yet may still move the expiry): judged when the probe ends.
    pub error_at: Option<u64>,
}

#[derive(Debug, Clone, Copy)]
pub struct Reply {
    pub rx_stamp_ns: Option<i64>,
    /// The NIC's receive stamp (`-hard`).
    pub rx_hw_ns: Option<i64>,
    /// When it arrived, CLOCK_MONOTONIC ns since start: the kernel's receive stamp carried over
    /// to the monotonic clock where it has one, else when it was read.
    pub at: u64,
    /// A TCP RST rather than a SYN-ACK or an echo reply.
    pub closed: bool,
}

/// How a probe left the table, remembered so a later packet for it can be classified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    Replied,
    /// Answered by an ICMP error.
    Errored,
    Other,
}

#[derive(Debug)]
struct Slot {
    gen: u16,
    probe: Option<Probe>,
    last: Option<(u64, Ended)>,
    /// When the slot's last probe was sent (CLOCK_REALTIME), to tell how long a late answer took.
    last_sent_rt: i64,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Lookup {
    Live,
    /// The slot's previous probe, with this token, already ended this way.
    Ended(Ended),
    Unknown,
}

#[derive(Debug, Default)]
pub struct InFlight {
    slots: Vec<Slot>,
    free: VecDeque<u32>,
    live: usize,
}

impl InFlight {
    pub fn len(&self) -> usize {
        self.live
    }

    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// None when the table is full.
    pub fn insert(&mut self, probe: Probe) -> Option<Key> {
        let index = match self.free.pop_front() {
            Some(i) => i as usize,
            None if self.slots.len() < MAX_SLOTS => {
                self.slots.push(Slot { gen: 0, probe: None, last: None, last_sent_rt: 0 });
                self.slots.len() - 1
            }
            None => return None,
        };
        let slot = &mut self.slots[index];
        slot.probe = Some(probe);
        self.live += 1;
        Some(Key::new(index, slot.gen))
    }

    pub fn get(&self, key: Key) -> Option<&Probe> {
        let slot = self.slots.get(key.index())?;
        if slot.gen != key.gen() {
            return None;
        }
        slot.probe.as_ref()
    }

    pub fn get_mut(&mut self, key: Key) -> Option<&mut Probe> {
        let slot = self.slots.get_mut(key.index())?;
        if slot.gen != key.gen() {
            return None;
        }
        slot.probe.as_mut()
    }

    /// Classifies a packet that names `key` and carries `token`.
    pub fn lookup(&self, key: Key, token: u64) -> Lookup {
        let Some(slot) = self.slots.get(key.index()) else {
            return Lookup::Unknown;
        };
        if slot.gen == key.gen() {
            return match &slot.probe {
                Some(p) if p.token == token => Lookup::Live,
                _ => Lookup::Unknown,
            };
        }
        match slot.last {
            Some((t, ended)) if t == token && slot.gen == (key.gen() + 1) & GEN_MASK => Lookup::Ended(ended),
            _ => Lookup::Unknown,
        }
    }

    /// When the probe `key` named was sent (CLOCK_REALTIME), once it has ended (and while its
    /// slot has not been reused).
    pub fn ended_sent_rt(&self, key: Key) -> Option<i64> {
        let slot = self.slots.get(key.index())?;
        (slot.probe.is_none() && slot.gen == (key.gen() + 1) & GEN_MASK).then_some(slot.last_sent_rt)
    }

    pub fn remove(&mut self, key: Key, ended: Ended) -> Option<Probe> {
        let slot = self.slots.get_mut(key.index())?;
        if slot.gen != key.gen() {
            return None;
        }
        let probe = slot.probe.take()?;
        slot.last = Some((probe.token, ended));
        slot.last_sent_rt = probe.sent_rt;
        slot.gen = (slot.gen + 1) & GEN_MASK;
        self.free.push_back(key.index() as u32);
        self.live -= 1;
        Some(probe)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(token: u64) -> Probe {
        Probe {
            target_index: 0,
            target_id: 1,
            tcp: false,
            seq: 0,
            token,
            serial: token,
            due: 0,
            sent_at: 0,
            sent_rt: 0,
            expiry: 0,
            tx_stamp_ns: None,
            tx_hw_ns: None,
            reply: None,
            error_at: None,
        }
    }

    #[test]
    fn stale_keys_never_reach_a_reused_slot() {
        let mut t = InFlight::default();
        let k1 = t.insert(probe(11)).unwrap();
        assert_eq!(t.lookup(k1, 11), Lookup::Live);
        assert_eq!(t.lookup(k1, 12), Lookup::Unknown, "wrong token");
        t.remove(k1, Ended::Replied).unwrap();
        assert_eq!(t.lookup(k1, 11), Lookup::Ended(Ended::Replied), "a duplicate");
        let k2 = t.insert(probe(22)).unwrap();
        assert_ne!(k1, k2, "same slot, new generation");
        assert!(t.get_mut(k1).is_none());
        assert_eq!(t.get_mut(k2).unwrap().token, 22);
        t.remove(k2, Ended::Other).unwrap();
        assert_eq!(t.lookup(k2, 22), Lookup::Ended(Ended::Other), "a late reply");
        assert_eq!(t.lookup(k1, 11), Lookup::Unknown, "two generations back");
        assert!(t.remove(k2, Ended::Other).is_none(), "removing twice");
        assert!(t.is_empty());
    }

    #[test]
    fn keys_out_of_range_are_unknown() {
        let t = InFlight::default();
        assert_eq!(t.lookup(Key(12345), 0), Lookup::Unknown);
    }

    #[test]
    fn generations_wrap() {
        let mut t = InFlight::default();
        let mut last = None;
        for i in 0..5000u64 {
            let k = t.insert(probe(i)).unwrap();
            t.remove(k, Ended::Other);
            last = Some(k);
        }
        assert_eq!(t.lookup(last.unwrap(), 4999), Lookup::Ended(Ended::Other));
        assert_eq!(t.len(), 0);
    }
}
