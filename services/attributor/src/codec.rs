//! The attributor's record formats: input events (protobuf `payoff.v1.Event`), credits
//! (protobuf `payoff.v1.Credit`), and its internal topics (the order index and the state
//! changelog, compact `postcard` encodings of the core's own types: internal, versioned
//! with the service, never read by anything else).

use payoff_core::{
    Rejection,
    attribution::{ConversionKey, ConversionRecord, StateEntry, StateEntryRef, StateKey},
    credit::Credit,
    event::{Event, RawEvent},
    ids::TenantId,
    time::Timestamp,
};
use payoff_proto::{
    convert::{CreditEncoder, borrowed_event},
    v1,
};
use prost::Message;
use serde::{Deserialize, Serialize};

/// Why a record could not be used (the dead-letter reason header).
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The record has no value.
    #[error("record has no value")]
    Empty,
    /// The bytes are not the expected message.
    #[error("not a {what}: {detail}")]
    Undecodable {
        /// The expected message.
        what: &'static str,
        /// The decoder's complaint.
        detail: String,
    },
    /// The event has no tenant.
    #[error("event has no tenant_id")]
    NoTenant,
    /// The event breaks a rule of §4.
    #[error("invalid event: {0}")]
    Invalid(Rejection),
}

impl DecodeError {
    /// A bounded label for metrics and the `reason` header.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Empty => "empty",
            Self::Undecodable { .. } => "undecodable",
            Self::NoTenant => "no_tenant",
            Self::Invalid(_) => "invalid",
        }
    }
}

/// Decodes and validates an input event. `now` is the record's timestamp: ingest checked
/// `occurred_at` against its clock when it accepted the event, so the same check against
/// the record's own time is deterministic on every replay of the log.
///
/// The bytes are read in place ([`borrowed_event`]), so each string is copied once, into
/// the event; what that reader leaves to prost is decoded with prost.
pub fn event(payload: Option<&[u8]>, now: Timestamp) -> Result<(TenantId, Event), DecodeError> {
    let bytes = payload.ok_or(DecodeError::Empty)?;
    if let Some(borrowed) = borrowed_event(bytes) {
        return validated(borrowed.tenant_id, &borrowed.event, now);
    }
    let proto = v1::Event::decode(bytes).map_err(|e| DecodeError::Undecodable {
        what: "payoff.v1.Event",
        detail: e.to_string(),
    })?;
    validated(&proto.tenant_id, &RawEvent::from(&proto), now)
}

/// The tenant and the validated event.
fn validated<S: AsRef<str>>(
    tenant: &str,
    raw: &RawEvent<S>,
    now: Timestamp,
) -> Result<(TenantId, Event), DecodeError> {
    if tenant.is_empty() {
        return Err(DecodeError::NoTenant);
    }
    let tenant = TenantId::parse("tenant_id", tenant)
        .map_err(|v| DecodeError::Invalid(Rejection::from(v)))?;
    let event = Event::validate(raw, now).map_err(DecodeError::Invalid)?;
    Ok((tenant, event))
}

/// The protobuf value of a credit on the `credits` topic (`encoder` keeps the last
/// explanation's bytes for the other credits of its conversion).
pub fn credit(encoder: &mut CreditEncoder, tenant: &TenantId, credit: &Credit) -> Vec<u8> {
    encoder.encode(tenant, credit)
}

/// A record of the order-index topic: a conversion that its corrections will look up.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexRecord {
    /// The tenant.
    pub tenant: TenantId,
    /// The order or lead.
    pub key: ConversionKey,
    /// What to remember.
    pub record: ConversionRecord,
}

/// Encodes an index record whole. The attributor builds its index records from a
/// conversion record encoded once ([`index_of_bytes`]); this is the encoding those bytes
/// are checked against.
pub fn index(record: &IndexRecord) -> Vec<u8> {
    encode(record, 128)
}

/// The postcard bytes of a conversion record: what an order-index record ends with
/// ([`index_of_bytes`]) and an index entry's changelog value follows its variant
/// ([`changelog_index_value`]), so that one encoding serves all three.
pub fn conversion_bytes(record: &ConversionRecord) -> Vec<u8> {
    encode(record, 128)
}

/// An order-index record from its tenant, key and the conversion record's bytes
/// ([`conversion_bytes`]): the bytes [`index`] gives for the same record.
pub fn index_of_bytes(tenant: &TenantId, key: &ConversionKey, record: &[u8]) -> Vec<u8> {
    // A struct's fields are written one after the other, as a tuple's are.
    let mut payload = encode(&(tenant, key), 64 + record.len());
    payload.extend_from_slice(record);
    payload
}

/// The changelog value of an index entry from its conversion record's bytes
/// ([`conversion_bytes`]): the bytes [`changelog_value_ref`] gives for
/// [`ChangelogValueRef::Index`] of the same record.
pub fn changelog_index_value(record: &[u8]) -> Vec<u8> {
    /// [`ChangelogValue`]'s variants at the same places, with nothing after the index's.
    #[derive(Serialize)]
    #[serde(rename = "ChangelogValue")]
    enum Variant {
        #[allow(dead_code)]
        State(()),
        Index(()),
    }
    let mut value = encode(&Variant::Index(()), 1 + record.len());
    value.extend_from_slice(record);
    value
}

/// Postcard bytes of `value`, written into a vector of `capacity` to begin with: a
/// vector grown from empty would be reallocated several times for one record.
fn encode<T: Serialize + ?Sized>(value: &T, capacity: usize) -> Vec<u8> {
    postcard::serialize_with_flavor(value, Bytes(Vec::with_capacity(capacity)))
        .unwrap_or_else(|e| unreachable!("postcard into a Vec: {e}"))
}

/// A postcard output that copies slices whole: postcard's own `Vec` outputs either start
/// empty (`to_allocvec`) or go through `Extend` a byte at a time (`to_extend`).
struct Bytes(Vec<u8>);

impl postcard::ser_flavors::Flavor for Bytes {
    type Output = Vec<u8>;

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(data);
        Ok(())
    }

    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.push(data);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<Vec<u8>> {
        Ok(self.0)
    }
}

/// Decodes an index record.
pub fn index_from(payload: Option<&[u8]>) -> Result<IndexRecord, DecodeError> {
    index_and_bytes_from(payload).map(|(record, _)| record)
}

/// [`index_from`], with the bytes of the conversion record within the payload (see
/// [`conversion_bytes`]).
pub fn index_and_bytes_from(payload: Option<&[u8]>) -> Result<(IndexRecord, &[u8]), DecodeError> {
    let bytes = payload.ok_or(DecodeError::Empty)?;
    let undecodable = |e: postcard::Error| DecodeError::Undecodable {
        what: "order-index record",
        detail: e.to_string(),
    };
    let ((tenant, key), rest): ((TenantId, ConversionKey), &[u8]) =
        postcard::take_from_bytes(bytes).map_err(undecodable)?;
    let (record, after) =
        postcard::take_from_bytes::<ConversionRecord>(rest).map_err(undecodable)?;
    let record_bytes = &rest[..rest.len() - after.len()];
    Ok((
        IndexRecord {
            tenant,
            key,
            record,
        },
        record_bytes,
    ))
}

/// What a changelog key names within a tenant.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Entry {
    /// An entry of the attribution state.
    State(StateKey),
    /// A conversion of the index slice.
    Index(ConversionKey),
    /// The newest event time the tenant's reorder buffer has seen (its watermark plus the
    /// grace): a restored task judges lateness as the task before it did.
    Watermark,
    /// The event ids first seen in one transaction, written once as one record (one record
    /// each would be a third of what the attributor writes) and removed when the newest of
    /// them expires. `id` is the xxh3-128 of the record's value.
    SeenBatch {
        /// The newest event time in the batch.
        newest: Timestamp,
        /// The batch's id.
        id: u128,
    },
    /// Where the last expiry sweep cut the state (event time): a restore sweeps there as
    /// the task did, so seen ids that expired from a batch still in the changelog are
    /// forgotten again.
    SeenHorizon,
}

/// A changelog key: tenant and entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ChangelogKey {
    /// The tenant.
    pub tenant: TenantId,
    /// The entry.
    pub entry: Entry,
}

/// A changelog value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ChangelogValue {
    /// An attribution-state entry.
    State(StateEntry),
    /// An index record.
    Index(ConversionRecord),
    /// The newest event time seen.
    Watermark(Timestamp),
    /// The digests of event ids first seen in one transaction, with their event times.
    SeenBatch(Vec<(u128, Timestamp)>),
    /// The event time the last expiry sweep cut at.
    SeenHorizon(Timestamp),
}

/// A borrowed [`ChangelogValue`] of the state or the index: it encodes to the same bytes
/// (same enum, same variants at the same places), without copying what it borrows.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename = "ChangelogValue")]
pub enum ChangelogValueRef<'a> {
    /// An attribution-state entry.
    State(StateEntryRef<'a>),
    /// An index record.
    Index(&'a ConversionRecord),
}

/// Encodes a borrowed changelog value (the bytes [`changelog_value`] gives the owned one).
pub fn changelog_value_ref(value: ChangelogValueRef<'_>) -> Vec<u8> {
    // A visitor's entry is about 180 bytes (the benchmark's figure).
    encode(&value, 256)
}

/// Encodes a changelog key.
pub fn changelog_key(key: &ChangelogKey) -> Vec<u8> {
    changelog_key_of(&key.tenant, &key.entry)
}

/// A borrowed [`ChangelogKey`]: it encodes to the same bytes.
#[derive(Serialize)]
#[serde(rename = "ChangelogKey")]
struct ChangelogKeyRef<'a> {
    tenant: &'a TenantId,
    entry: &'a Entry,
}

/// Encodes the changelog key of `entry` of `tenant` (the bytes [`changelog_key`] gives).
pub fn changelog_key_of(tenant: &TenantId, entry: &Entry) -> Vec<u8> {
    encode(&ChangelogKeyRef { tenant, entry }, 64)
}

/// Encodes a changelog value.
pub fn changelog_value(value: &ChangelogValue) -> Vec<u8> {
    encode(value, 256)
}

/// Decodes a changelog record (`None` value: a tombstone).
pub fn changelog_from(
    key: Option<&[u8]>,
    value: Option<&[u8]>,
) -> Result<(ChangelogKey, Option<ChangelogValue>), DecodeError> {
    let undecodable = |e: postcard::Error| DecodeError::Undecodable {
        what: "changelog record",
        detail: e.to_string(),
    };
    let key = postcard::from_bytes(key.ok_or(DecodeError::Empty)?).map_err(undecodable)?;
    let value = value
        .map(|v| postcard::from_bytes(v).map_err(undecodable))
        .transpose()?;
    Ok((key, value))
}

#[cfg(test)]
mod tests {
    use payoff_core::{
        attribution::{Touch, VisitorState},
        ids::{CampaignId, CreatorId, EventId, LinkCode},
    };

    use super::*;

    fn id<T>(parse: fn(&str, &str) -> Result<T, payoff_core::Violation>, text: &str) -> T {
        parse("id", text).unwrap_or_else(|e| panic!("{e:?}"))
    }

    /// A visitor with one touch and one paid click.
    fn visitor() -> VisitorState {
        let creator = id(CreatorId::parse, "cr-1");
        let campaign = id(CampaignId::parse, "ca-1");
        VisitorState {
            touches: [Touch {
                click: id(EventId::parse, "e-1"),
                at: Timestamp(1_000),
                creator: creator.clone(),
                campaign: campaign.clone(),
                fraud: None,
            }]
            .into(),
            paid_clicks: vec![(
                creator,
                campaign,
                Some(id(LinkCode::parse, "l-1")),
                Timestamp(2_000),
            )],
            has_ordered: true,
        }
    }

    #[test]
    fn a_borrowed_value_encodes_to_the_bytes_of_the_owned_one() {
        let visitor = visitor();
        let record = ConversionRecord {
            event: id(EventId::parse, "o-1"),
            at: Timestamp(3_000),
            config_version: 4,
            credits: Vec::new(),
            gross: None,
            refunded: "0.25".parse().unwrap_or_else(|e| panic!("{e}")),
            adjustments: vec![id(EventId::parse, "a-1")],
        };
        let pairs = [
            (
                ChangelogValueRef::State(StateEntryRef::Visitor(&visitor)),
                ChangelogValue::State(StateEntry::Visitor(visitor.clone())),
            ),
            (
                ChangelogValueRef::State(StateEntryRef::Seen(Timestamp(5))),
                ChangelogValue::State(StateEntry::Seen(Timestamp(5))),
            ),
            (
                ChangelogValueRef::State(StateEntryRef::Ip {
                    minute: 7,
                    clicks: 3,
                }),
                ChangelogValue::State(StateEntry::Ip {
                    minute: 7,
                    clicks: 3,
                }),
            ),
            (
                ChangelogValueRef::Index(&record),
                ChangelogValue::Index(record.clone()),
            ),
        ];
        for (borrowed, owned) in pairs {
            let bytes = changelog_value_ref(borrowed);
            assert_eq!(bytes, changelog_value(&owned), "{owned:?}");
            let decoded: ChangelogValue =
                postcard::from_bytes(&bytes).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(decoded, owned);
        }
    }

    /// A visitor's changelog value is encoded as 59e7f69 wrote it, so that changelogs
    /// written by earlier versions restore (a change to the state's types must keep it).
    #[test]
    fn a_visitor_keeps_the_encoding_changelogs_hold() {
        let written_by_59e7f69 = [
            0x00, 0x01, 0x01, 0x03, b'e', b'-', b'1', 0xd0, 0x0f, 0x04, b'c', b'r', b'-', b'1',
            0x04, b'c', b'a', b'-', b'1', 0x00, 0x01, 0x04, b'c', b'r', b'-', b'1', 0x04, b'c',
            b'a', b'-', b'1', 0x01, 0x03, b'l', b'-', b'1', 0xa0, 0x1f, 0x01,
        ];
        let visitor = visitor();
        let bytes = changelog_value_ref(ChangelogValueRef::State(StateEntryRef::Visitor(&visitor)));
        assert_eq!(bytes, written_by_59e7f69);
        let decoded: ChangelogValue =
            postcard::from_bytes(&written_by_59e7f69).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(decoded, ChangelogValue::State(StateEntry::Visitor(visitor)));
    }

    /// One encoding of a conversion record serves the order-index record and the index
    /// entry's changelog value, byte for byte.
    #[test]
    fn a_conversion_record_encoded_once_gives_the_index_record_and_the_changelog_value() {
        let share = payoff_core::credit::Share {
            campaign: id(CampaignId::parse, "ca-1"),
            creator: id(CreatorId::parse, "cr-1"),
            share: "0.5".parse().unwrap_or_else(|e| panic!("{e}")),
        };
        let record = ConversionRecord {
            event: id(EventId::parse, "o-1"),
            at: Timestamp(3_000),
            config_version: 4,
            credits: vec![(
                payoff_core::ids::DerivedId::derive("crd", &["o-1", "ca-1", "cr-1"]),
                share,
            )],
            gross: Some(payoff_core::money::Money::new(
                "12.34".parse().unwrap_or_else(|e| panic!("{e}")),
                payoff_core::money::Currency::parse("currency", "EUR")
                    .unwrap_or_else(|e| panic!("{e:?}")),
            )),
            refunded: "0.25".parse().unwrap_or_else(|e| panic!("{e}")),
            adjustments: vec![id(EventId::parse, "a-1")],
        };
        let tenant = id(TenantId::parse, "t-1");
        let key = ConversionKey::Order(id(payoff_core::ids::OrderId::parse, "o-1"));
        let bytes = conversion_bytes(&record);
        let whole = IndexRecord {
            tenant: tenant.clone(),
            key: key.clone(),
            record: record.clone(),
        };
        let payload = index_of_bytes(&tenant, &key, &bytes);
        assert_eq!(payload, index(&whole));
        let (decoded, within) =
            index_and_bytes_from(Some(&payload)).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(decoded, whole);
        assert_eq!(within, bytes.as_slice());
        assert_eq!(
            changelog_index_value(&bytes),
            changelog_value_ref(ChangelogValueRef::Index(&record))
        );
        // Bytes after the record (none are written) are not part of it.
        let mut longer = payload.clone();
        longer.push(0);
        let (_, within) = index_and_bytes_from(Some(&longer)).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(within, bytes.as_slice());
    }
}
