//! The late-click reorder buffer (§5.4): a pure function of event time and a watermark.
//!
//! Events are held until the watermark (the largest event time seen, less the grace
//! period) passes them, then released in event-time order, ties broken by event type
//! (clicks first) and id. So a click that arrives up to the grace period after a
//! conversion it precedes is still seen first, whichever topic was read first. An event
//! that arrives behind the watermark is released at once (it is late beyond grace).

use std::{
    cmp::Ordering,
    collections::{BTreeMap, VecDeque},
};

use crate::{
    event::Event,
    ids::EventId,
    time::{Duration, Timestamp},
};

/// Sort key of a buffered event: time, type rank, id, arrival number (for duplicates).
type Key = (Timestamp, u8, EventId, u64);

/// Holds events until the watermark passes them, each with what the caller attached to
/// it (`T`: the attributor keeps where the event came from there; the engine nothing).
///
/// Most events arrive in key order (a source emits them as they happen): those queue in
/// `in_order` as they are, with no tree and no allocation. Only an event that arrives
/// behind the newest one held goes into the `late` tree. Each part is sorted, and
/// releases take the smaller front of the two, so events leave in key order exactly as
/// from a single sorted map.
#[derive(Debug, Clone)]
pub struct ReorderBuffer<T = ()> {
    grace: Duration,
    max_seen: Option<Timestamp>,
    arrivals: u64,
    /// Events in key order, each with its arrival number.
    in_order: VecDeque<(u64, Event, T)>,
    /// Boxed: events are large, and a B-tree node shifts its values on every insert.
    late: BTreeMap<Key, Box<(Event, T)>>,
}

impl<T> Default for ReorderBuffer<T> {
    fn default() -> Self {
        Self {
            grace: Duration::default(),
            max_seen: None,
            arrivals: 0,
            in_order: VecDeque::new(),
            late: BTreeMap::new(),
        }
    }
}

/// An event's sort key, borrowed.
fn key_of(arrival: u64, event: &Event) -> (Timestamp, u8, &EventId, u64) {
    (event.occurred_at, event.payload.rank(), &event.id, arrival)
}

/// Where the next event to release is.
enum Next {
    InOrder,
    Late,
}

impl<T> ReorderBuffer<T> {
    /// An empty buffer with a grace period.
    pub fn new(grace: Duration) -> Self {
        Self {
            grace,
            ..Self::default()
        }
    }

    /// The watermark: events at or before it are released.
    pub fn watermark(&self) -> Option<Timestamp> {
        self.max_seen.map(|t| t.minus(self.grace))
    }

    /// The newest event time seen (the watermark plus the grace).
    pub fn newest(&self) -> Option<Timestamp> {
        self.max_seen
    }

    /// Number of events held.
    pub fn len(&self) -> usize {
        self.in_order.len() + self.late.len()
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.in_order.is_empty() && self.late.is_empty()
    }

    /// Adds an event (with `attached`) and appends to `out` every event the watermark now
    /// releases, each with what was attached to it.
    pub fn push(&mut self, event: Event, attached: T, out: &mut Vec<(Event, T)>) {
        let at = event.occurred_at;
        if self.watermark().is_some_and(|w| at <= w) {
            out.push((event, attached));
            return;
        }
        self.arrivals += 1;
        let arrival = self.arrivals;
        let behind = self
            .in_order
            .back()
            .is_some_and(|(a, last, _)| key_of(*a, last) > key_of(arrival, &event));
        if behind {
            let key = (at, event.payload.rank(), event.id.clone(), arrival);
            self.late.insert(key, Box::new((event, attached)));
        } else {
            self.in_order.push_back((arrival, event, attached));
        }
        if self.max_seen.is_none_or(|m| at > m) {
            self.max_seen = Some(at);
        }
        self.release_until(self.watermark(), out);
    }

    /// Advances event time without an event (an idle input: time as data), releasing
    /// what the new watermark passes.
    pub fn advance(&mut self, now: Timestamp, out: &mut Vec<(Event, T)>) {
        if self.max_seen.is_none_or(|m| now > m) {
            self.max_seen = Some(now);
        }
        self.release_until(self.watermark(), out);
    }

    /// Releases everything held and moves the watermark up to the newest event seen (an
    /// input gone quiet for longer than the grace: the tail of a stream is not held until
    /// the next event). Events that arrive later at or before that time count as late.
    pub fn release_all(&mut self, out: &mut Vec<(Event, T)>) {
        if let Some(newest) = self.max_seen {
            self.advance(newest.plus(self.grace), out);
        }
    }

    /// Releases everything held (end of input).
    pub fn flush(&mut self, out: &mut Vec<(Event, T)>) {
        while let Some(next) = self.next() {
            out.push(self.take(next));
        }
    }

    fn release_until(&mut self, watermark: Option<Timestamp>, out: &mut Vec<(Event, T)>) {
        let Some(w) = watermark else { return };
        if self.late.is_empty() {
            // The common case: everything held arrived in order.
            while self
                .in_order
                .front()
                .is_some_and(|(_, e, _)| e.occurred_at <= w)
            {
                out.extend(self.in_order.pop_front().map(|(_, e, t)| (e, t)));
            }
            return;
        }
        while let Some(next) = self.next() {
            let at = match next {
                Next::InOrder => self.in_order.front().map(|(_, e, _)| e.occurred_at),
                Next::Late => self.late.first_key_value().map(|(k, _)| k.0),
            };
            if at.is_none_or(|at| at > w) {
                break;
            }
            out.push(self.take(next));
        }
    }

    /// Which part holds the first event in key order, if any is held.
    fn next(&self) -> Option<Next> {
        match (self.in_order.front(), self.late.first_key_value()) {
            (None, None) => None,
            (Some(_), None) => Some(Next::InOrder),
            (None, Some(_)) => Some(Next::Late),
            (Some((a, e, _)), Some((k, _))) => match key_of(*a, e).cmp(&(k.0, k.1, &k.2, k.3)) {
                Ordering::Greater => Some(Next::Late),
                Ordering::Less | Ordering::Equal => Some(Next::InOrder),
            },
        }
    }

    fn take(&mut self, next: Next) -> (Event, T) {
        let taken = match next {
            Next::InOrder => self.in_order.pop_front().map(|(_, e, t)| (e, t)),
            Next::Late => self.late.pop_first().map(|(_, held)| *held),
        };
        taken.unwrap_or_else(|| unreachable!("`next` named a part that holds an event"))
    }

    /// Events held, in release order (for persisting the buffer).
    pub fn held(&self) -> impl Iterator<Item = &Event> {
        let mut held: Vec<(Key, &Event)> = self
            .in_order
            .iter()
            .map(|(a, e, _)| ((e.occurred_at, e.payload.rank(), e.id.clone(), *a), e))
            .chain(self.late.iter().map(|(k, held)| (k.clone(), &held.0)))
            .collect();
        held.sort_by(|a, b| a.0.cmp(&b.0));
        held.into_iter().map(|(_, e)| e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{LeadStatusChange, Payload};
    use crate::ids::LeadId;

    fn event(id: &str, at: i64) -> Event {
        Event {
            id: EventId::new(id),
            occurred_at: Timestamp(at),
            customer: None,
            ip_hash: None,
            user_agent_hash: None,
            payload: Payload::LeadStatus(LeadStatusChange {
                lead: LeadId::new("l"),
                qualified: true,
            }),
        }
    }

    /// The buffer as one sorted map: what the split buffer must release, in order.
    struct Reference {
        grace: Duration,
        max_seen: Option<Timestamp>,
        arrivals: u64,
        held: BTreeMap<Key, Event>,
    }

    impl Reference {
        fn push(&mut self, event: Event, out: &mut Vec<Event>) {
            let at = event.occurred_at;
            let watermark = self.max_seen.map(|t| t.minus(self.grace));
            if watermark.is_some_and(|w| at <= w) {
                out.push(event);
                return;
            }
            self.arrivals += 1;
            let key = (at, event.payload.rank(), event.id.clone(), self.arrivals);
            self.held.insert(key, event);
            if self.max_seen.is_none_or(|m| at > m) {
                self.max_seen = Some(at);
            }
            let w = self.max_seen.map_or(at, |t| t.minus(self.grace));
            while let Some(entry) = self.held.first_entry() {
                if entry.key().0 > w {
                    break;
                }
                out.push(entry.remove());
            }
        }
    }

    #[test]
    fn releases_in_key_order_whatever_the_arrival_order() {
        let grace = Duration(50);
        let mut buffer = ReorderBuffer::new(grace);
        let mut reference = Reference {
            grace,
            max_seen: None,
            arrivals: 0,
            held: BTreeMap::new(),
        };
        let (mut out, mut expected) = (Vec::new(), Vec::new());
        // A deterministic mix: mostly in order, some up to twice the grace late, repeated
        // ids and equal times.
        let mut x: u64 = 7;
        for i in 0..2_000i64 {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let jitter = i64::try_from(x >> 57).unwrap_or(0); // 0..128
            let at = i * 10 - if x.is_multiple_of(4) { jitter } else { 0 };
            let id = format!("e{}", (x >> 40) % 300);
            buffer.push(event(&id, at), (), &mut out);
            reference.push(event(&id, at), &mut expected);
            assert_eq!(buffer.len(), reference.held.len());
        }
        let held: Vec<&Event> = buffer.held().collect();
        let ref_held: Vec<&Event> = reference.held.values().collect();
        assert_eq!(held, ref_held);
        buffer.flush(&mut out);
        expected.extend(std::mem::take(&mut reference.held).into_values());
        let out: Vec<Event> = out.into_iter().map(|(e, ())| e).collect();
        assert_eq!(out, expected);
        assert!(buffer.is_empty());
    }

    #[test]
    fn release_all_empties_the_buffer_and_later_events_at_or_before_the_newest_are_late() {
        let mut buffer = ReorderBuffer::new(Duration(100));
        let mut out = Vec::new();
        buffer.push(event("a", 1_000), (), &mut out);
        buffer.push(event("b", 1_050), (), &mut out);
        buffer.push(event("c", 1_020), (), &mut out);
        assert!(out.is_empty(), "all within the grace of the newest");
        buffer.release_all(&mut out);
        let ids: Vec<&str> = out.iter().map(|(e, ())| e.id.as_str()).collect();
        assert_eq!(ids, ["a", "c", "b"]);
        assert!(buffer.is_empty());
        assert_eq!(buffer.watermark(), Some(Timestamp(1_050)));
        out.clear();
        // Within the grace of "b", but after the release: late, released at once.
        buffer.push(event("d", 1_040), (), &mut out);
        assert_eq!(out.len(), 1);
        // After the newest: held as usual.
        out.clear();
        buffer.push(event("e", 1_060), (), &mut out);
        assert!(out.is_empty());
        assert_eq!(buffer.len(), 1);
    }
}
