//! The late-click reorder buffer (§5.4): a pure function of event time and a watermark.
//!
//! Events are held until the watermark (the largest event time seen, less the grace
//! period) passes them, then released in event-time order, ties broken by event type
//! (clicks first) and id. So a click that arrives up to the grace period after a
//! conversion it precedes is still seen first, whichever topic was read first. An event
//! that arrives behind the watermark is released at once (it is late beyond grace).

use std::collections::BTreeMap;

use crate::{
    event::Event,
    ids::EventId,
    time::{Duration, Timestamp},
};

/// Sort key of a buffered event: time, type rank, id, arrival number (for duplicates).
type Key = (Timestamp, u8, EventId, u64);

/// Holds events until the watermark passes them.
#[derive(Debug, Clone, Default)]
pub struct ReorderBuffer {
    grace: Duration,
    max_seen: Option<Timestamp>,
    arrivals: u64,
    /// Boxed: events are large, and a B-tree node shifts its values on every insert.
    held: BTreeMap<Key, Box<Event>>,
}

impl ReorderBuffer {
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

    /// Number of events held.
    pub fn len(&self) -> usize {
        self.held.len()
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// Adds an event and appends to `out` every event the watermark now releases.
    pub fn push(&mut self, event: Event, out: &mut Vec<Event>) {
        let at = event.occurred_at;
        if self.watermark().is_some_and(|w| at <= w) {
            out.push(event);
            return;
        }
        self.arrivals += 1;
        self.held.insert(
            (at, event.payload.rank(), event.id.clone(), self.arrivals),
            Box::new(event),
        );
        if self.max_seen.is_none_or(|m| at > m) {
            self.max_seen = Some(at);
        }
        self.release_until(self.watermark(), out);
    }

    /// Advances event time without an event (an idle input: time as data), releasing
    /// what the new watermark passes.
    pub fn advance(&mut self, now: Timestamp, out: &mut Vec<Event>) {
        if self.max_seen.is_none_or(|m| now > m) {
            self.max_seen = Some(now);
        }
        self.release_until(self.watermark(), out);
    }

    /// Releases everything held (end of input).
    pub fn flush(&mut self, out: &mut Vec<Event>) {
        out.extend(std::mem::take(&mut self.held).into_values().map(|e| *e));
    }

    fn release_until(&mut self, watermark: Option<Timestamp>, out: &mut Vec<Event>) {
        let Some(w) = watermark else { return };
        while let Some(entry) = self.held.first_entry() {
            if entry.key().0 > w {
                break;
            }
            out.push(*entry.remove());
        }
    }

    /// Events held, in release order (for persisting the buffer).
    pub fn held(&self) -> impl Iterator<Item = &Event> {
        self.held.values().map(|e| &**e)
    }
}
