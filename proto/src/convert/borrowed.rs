//! `payoff.v1.Event` bytes read straight into a [`RawEvent`] that borrows its text from
//! the bytes: the attributor's hot path, where decoding with prost first copies every
//! string into a `String` of its own only for validation to copy it again.
//!
//! Only the form prost writes is read here: each singular field at most once (a string
//! given twice keeps the last, as prost does), known fields with their own wire types,
//! valid UTF-8. Anything else (a message field given twice, which prost would merge; an
//! unknown field; a malformed or truncated buffer) answers `None`, and the caller decodes
//! with prost, which has the last word on what the bytes mean and on their errors. The
//! wire primitives are prost's own.

use payoff_core::event::{
    RawAdjustment, RawClick, RawEngagement, RawEvent, RawLeadStatus, RawLineItem, RawMoney,
    RawOrder, RawPayload, RawSignup,
};
use prost::encoding::{WireType, decode_key, decode_varint};

use super::{adjustment_kind, qualification, timestamp};

/// An event read from its bytes, with the tenant it names.
#[derive(Debug, Clone, PartialEq)]
pub struct BorrowedEvent<'a> {
    /// `tenant_id`, as written (empty when absent).
    pub tenant_id: &'a str,
    /// The event, its text borrowed from the bytes.
    pub event: RawEvent<&'a str>,
}

/// Reads an event in the form prost writes; `None` for anything else (decode it with
/// prost then: see the module docs).
pub fn borrowed_event(bytes: &[u8]) -> Option<BorrowedEvent<'_>> {
    let mut tenant_id = "";
    let mut event = RawEvent::<&str>::default();
    let (mut occurred_at, mut context, mut received_at) = (false, false, false);
    fields(bytes, |tag, value| {
        match tag {
            1 => event.event_id = value.text()?,
            2 => {
                once(&mut occurred_at)?;
                event.occurred_at = Some(timestamp_of(value.bytes()?)?);
            }
            3 => event.customer_id = value.text()?,
            4 => {
                once(&mut context)?;
                fields(value.bytes()?, |tag, value| {
                    match tag {
                        // The raw ip and user agent are not carried (the edge hashed them).
                        1 | 2 => {
                            value.text()?;
                        }
                        3 => event.ip_hash = value.text()?,
                        4 => event.user_agent_hash = value.text()?,
                        _ => return None,
                    }
                    Some(())
                })?;
            }
            5 => tenant_id = value.text()?,
            6 => {
                once(&mut received_at)?;
                timestamp_of(value.bytes()?)?;
            }
            10..=15 => {
                if event.payload.is_some() {
                    return None;
                }
                event.payload = Some(payload(tag, value.bytes()?)?);
            }
            _ => return None,
        }
        Some(())
    })?;
    Some(BorrowedEvent { tenant_id, event })
}

/// One field's value as it stands on the wire.
#[derive(Clone, Copy)]
enum Value<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
}

impl<'a> Value<'a> {
    fn text(self) -> Option<&'a str> {
        std::str::from_utf8(self.bytes()?).ok()
    }

    fn bytes(self) -> Option<&'a [u8]> {
        match self {
            Value::Bytes(b) => Some(b),
            Value::Varint(_) => None,
        }
    }

    fn varint(self) -> Option<u64> {
        match self {
            Value::Varint(v) => Some(v),
            Value::Bytes(_) => None,
        }
    }

    /// An `int32` (an enum's number): prost keeps the low 32 bits.
    fn int32(self) -> Option<i32> {
        self.varint().map(|v| v as i32)
    }
}

/// Calls `field` with each (tag, value) of a message; `None` when the message is not in
/// the form read here or `field` refuses one.
fn fields<'a>(
    mut buf: &'a [u8],
    mut field: impl FnMut(u32, Value<'a>) -> Option<()>,
) -> Option<()> {
    while !buf.is_empty() {
        let (tag, wire_type) = decode_key(&mut buf).ok()?;
        let value = match wire_type {
            WireType::Varint => Value::Varint(decode_varint(&mut buf).ok()?),
            WireType::LengthDelimited => {
                let len = usize::try_from(decode_varint(&mut buf).ok()?).ok()?;
                if len > buf.len() {
                    return None;
                }
                let (value, rest) = buf.split_at(len);
                buf = rest;
                Value::Bytes(value)
            }
            _ => return None,
        };
        field(tag, value)?;
    }
    Some(())
}

/// A message field met for the first time (prost would merge a second one).
fn once(seen: &mut bool) -> Option<()> {
    if std::mem::replace(seen, true) {
        return None;
    }
    Some(())
}

fn timestamp_of(bytes: &[u8]) -> Option<payoff_core::time::Timestamp> {
    let mut t = pbjson_types::Timestamp::default();
    fields(bytes, |tag, value| {
        match tag {
            1 => t.seconds = value.varint()? as i64,
            2 => t.nanos = value.int32()?,
            _ => return None,
        }
        Some(())
    })?;
    Some(timestamp(&t))
}

fn money(bytes: &[u8]) -> Option<RawMoney<&str>> {
    let mut m = RawMoney::<&str>::default();
    fields(bytes, |tag, value| {
        match tag {
            1 => m.amount = value.text()?,
            2 => m.currency = value.text()?,
            _ => return None,
        }
        Some(())
    })?;
    Some(m)
}

/// A money field met for the first time.
fn money_once<'a>(slot: &mut Option<RawMoney<&'a str>>, value: Value<'a>) -> Option<()> {
    if slot.is_some() {
        return None;
    }
    *slot = Some(money(value.bytes()?)?);
    Some(())
}

fn payload(tag: u32, bytes: &[u8]) -> Option<RawPayload<&str>> {
    Some(match tag {
        10 => RawPayload::Click(click(bytes)?),
        11 => {
            let mut s = RawSignup::<&str>::default();
            fields(bytes, |tag, value| {
                match tag {
                    1 => s.visitor_id = value.text()?,
                    2 => s.lead_id = value.text()?,
                    3 => s.email_hash = value.text()?,
                    4 => {
                        value.text()?;
                    }
                    5 => s.promo_code = value.text()?,
                    _ => return None,
                }
                Some(())
            })?;
            RawPayload::Signup(s)
        }
        12 => RawPayload::Order(order(bytes)?),
        13 => {
            let mut a = RawAdjustment::<&str>::default();
            fields(bytes, |tag, value| {
                match tag {
                    1 => a.order_id = value.text()?,
                    2 => a.kind = adjustment_kind(value.int32()?),
                    3 => money_once(&mut a.amount, value)?,
                    4 => a.reason = value.text()?,
                    _ => return None,
                }
                Some(())
            })?;
            RawPayload::Adjustment(a)
        }
        14 => {
            let mut l = RawLeadStatus::<&str>::default();
            fields(bytes, |tag, value| {
                match tag {
                    1 => l.lead_id = value.text()?,
                    2 => l.qualified = qualification(value.int32()?),
                    _ => return None,
                }
                Some(())
            })?;
            RawPayload::LeadStatus(l)
        }
        15 => {
            let mut e = RawEngagement::<&str>::default();
            fields(bytes, |tag, value| {
                match tag {
                    1 => e.creator_id = value.text()?,
                    2 => e.campaign_id = value.text()?,
                    3 => e.post_id = value.text()?,
                    4 => e.platform = value.text()?,
                    5 => e.views = value.varint()?,
                    6 => e.likes = value.varint()?,
                    7 => e.comments = value.varint()?,
                    8 => e.shares = value.varint()?,
                    _ => return None,
                }
                Some(())
            })?;
            RawPayload::Engagement(e)
        }
        _ => return None,
    })
}

fn click(bytes: &[u8]) -> Option<RawClick<&str>> {
    let mut k = RawClick::<&str>::default();
    let mut utm = false;
    fields(bytes, |tag, value| {
        match tag {
            1 => k.visitor_id = value.text()?,
            2 => k.link_code = value.text()?,
            3 => k.creator_id = value.text()?,
            4 => k.campaign_id = value.text()?,
            5 => {
                once(&mut utm)?;
                fields(value.bytes()?, |tag, value| {
                    let text = value.text()?;
                    match tag {
                        1 => k.utm_source = text,
                        2 => k.utm_medium = text,
                        3 => k.utm_campaign = text,
                        4 => k.utm_content = text,
                        5 => k.utm_term = text,
                        _ => return None,
                    }
                    Some(())
                })?;
            }
            6 => k.landing_url = value.text()?,
            7 => k.referrer = value.text()?,
            _ => return None,
        }
        Some(())
    })?;
    Some(k)
}

fn order(bytes: &[u8]) -> Option<RawOrder<&str>> {
    let mut o = RawOrder::<&str>::default();
    fields(bytes, |tag, value| {
        match tag {
            1 => o.visitor_id = value.text()?,
            2 => o.order_id = value.text()?,
            3 => money_once(&mut o.amount, value)?,
            4 => money_once(&mut o.tax, value)?,
            5 => money_once(&mut o.shipping, value)?,
            6 => {
                let mut item = RawLineItem::<&str>::default();
                fields(value.bytes()?, |tag, value| {
                    match tag {
                        1 => item.sku = value.text()?,
                        2 => item.category = value.text()?,
                        3 => item.quantity = value.varint()? as u32,
                        4 => item.unit_price = value.text()?,
                        _ => return None,
                    }
                    Some(())
                })?;
                o.line_items.push(item);
            }
            7 => o.promo_codes.push(value.text()?),
            8 => o.renewal_of = value.text()?,
            9 => o.first_order = Some(value.varint()? != 0),
            10 => o.email_hash = value.text()?,
            11 => {
                value.text()?;
            }
            _ => return None,
        }
        Some(())
    })?;
    Some(o)
}
