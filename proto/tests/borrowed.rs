//! `borrowed_event` (the attributor's in-place reader) against prost: on any event prost
//! writes it reads exactly what prost decodes; on any other bytes (merged messages,
//! unknown fields, damage) it either reads what prost decodes or leaves them to prost, and
//! it never accepts bytes prost refuses.

use payoff_core::{event::RawEvent, time::Timestamp};
use payoff_proto::{
    convert::{BorrowedEvent, borrowed_event},
    v1,
};
use proptest::prelude::*;
use prost::Message;

/// Text the validation cares about: empty, ids, non-ASCII, control characters, long.
fn text() -> BoxedStrategy<String> {
    prop_oneof![
        3 => Just(String::new()),
        4 => "[a-z0-9-]{1,16}",
        1 => "\\PC{0,6}",
        1 => "[a-z]{0,3}[\\x00-\\x1f\\x7f\\u{80}-\\u{9f}][a-z]{0,3}",
        1 => "[ -~]{120,140}",
        1 => "-?[0-9]{1,4}(\\.[0-9]{1,3})?",
    ]
    .boxed()
}

fn timestamp() -> BoxedStrategy<Option<pbjson_types::Timestamp>> {
    prop::option::of(
        (any::<i64>(), any::<i32>(), 1_600_000_000i64..1_900_000_000).prop_flat_map(
            |(seconds, nanos, sane)| {
                prop_oneof![
                    Just(pbjson_types::Timestamp { seconds, nanos }),
                    Just(pbjson_types::Timestamp {
                        seconds: sane,
                        nanos: nanos.rem_euclid(1_000_000_000),
                    }),
                ]
            },
        ),
    )
    .boxed()
}

fn money() -> BoxedStrategy<Option<v1::Money>> {
    prop::option::of(
        (
            text(),
            prop_oneof![Just("USD".to_owned()), Just("JPY".to_owned()), text()],
        )
            .prop_map(|(amount, currency)| v1::Money { amount, currency }),
    )
    .boxed()
}

fn click() -> BoxedStrategy<v1::event::Payload> {
    (
        (text(), text(), text(), text()),
        prop::option::of((text(), text(), text(), text(), text())),
        (text(), text()),
    )
        .prop_map(
            |((visitor_id, link_code, creator_id, campaign_id), utm, (landing_url, referrer))| {
                v1::event::Payload::Click(v1::Click {
                    visitor_id,
                    link_code,
                    creator_id,
                    campaign_id,
                    utm: utm.map(|(source, medium, campaign, content, term)| v1::Utm {
                        source,
                        medium,
                        campaign,
                        content,
                        term,
                    }),
                    landing_url,
                    referrer,
                })
            },
        )
        .boxed()
}

fn order() -> BoxedStrategy<v1::event::Payload> {
    let item =
        (text(), text(), any::<u32>(), text()).prop_map(|(sku, category, quantity, unit_price)| {
            v1::LineItem {
                sku,
                category,
                quantity,
                unit_price,
            }
        });
    (
        (text(), text(), money(), money(), money()),
        prop::collection::vec(item, 0..3),
        prop::collection::vec(text(), 0..3),
        (text(), prop::option::of(any::<bool>()), text(), text()),
    )
        .prop_map(
            |(
                (visitor_id, order_id, amount, tax, shipping),
                line_items,
                promo_codes,
                (renewal_of, first_order, email_hash, email),
            )| {
                v1::event::Payload::Order(v1::Order {
                    visitor_id,
                    order_id,
                    amount,
                    tax,
                    shipping,
                    line_items,
                    promo_codes,
                    renewal_of,
                    first_order,
                    email_hash,
                    email,
                })
            },
        )
        .boxed()
}

fn payload() -> BoxedStrategy<Option<v1::event::Payload>> {
    use v1::event::Payload as P;
    prop::option::of(prop_oneof![
        4 => click(),
        2 => order(),
        1 => (text(), text(), text(), text(), text()).prop_map(
            |(visitor_id, lead_id, email_hash, email, promo_code)| P::Signup(v1::Signup {
                visitor_id,
                lead_id,
                email_hash,
                email,
                promo_code,
            })
        ),
        1 => (text(), -1..5i32, money(), text()).prop_map(|(order_id, kind, amount, reason)| {
            P::Adjustment(v1::Adjustment {
                order_id,
                kind,
                amount,
                reason,
            })
        }),
        1 => (text(), -1..4i32)
            .prop_map(|(lead_id, status)| P::LeadStatus(v1::LeadStatus { lead_id, status })),
        1 => (
            (text(), text(), text(), text()),
            (any::<u64>(), any::<u64>(), any::<u64>(), any::<u64>())
        )
            .prop_map(
                |((creator_id, campaign_id, post_id, platform), (views, likes, comments, shares))| {
                    P::Engagement(v1::Engagement {
                        creator_id,
                        campaign_id,
                        post_id,
                        platform,
                        views,
                        likes,
                        comments,
                        shares,
                    })
                }
            ),
    ])
    .boxed()
}

fn event() -> BoxedStrategy<v1::Event> {
    (
        (text(), timestamp(), text(), text(), timestamp()),
        prop::option::of((text(), text(), text(), text())),
        payload(),
    )
        .prop_map(
            |((event_id, occurred_at, customer_id, tenant_id, received_at), context, payload)| {
                v1::Event {
                    event_id,
                    occurred_at,
                    customer_id,
                    context: context.map(|(ip, user_agent, ip_hash, user_agent_hash)| {
                        v1::Context {
                            ip,
                            user_agent,
                            ip_hash,
                            user_agent_hash,
                        }
                    }),
                    tenant_id,
                    received_at,
                    payload,
                }
            },
        )
        .boxed()
}

/// The same event, whether its text is borrowed or owned (`Debug` prints `&str` and
/// `String` alike, so equal text prints equal).
fn same(borrowed: &BorrowedEvent<'_>, decoded: &v1::Event) -> Result<(), TestCaseError> {
    prop_assert_eq!(borrowed.tenant_id, decoded.tenant_id.as_str());
    let owned = RawEvent::from(decoded);
    prop_assert_eq!(format!("{:?}", borrowed.event), format!("{owned:?}"));
    // And validation judges both alike.
    let now = Timestamp::from_millis(1_800_000_000_000);
    prop_assert_eq!(
        payoff_core::event::Event::validate(&borrowed.event, now),
        payoff_core::event::Event::validate(&owned, now)
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// What prost writes is read, and read as prost reads it.
    #[test]
    fn reads_every_event_prost_writes(event in event()) {
        let bytes = event.encode_to_vec();
        let borrowed = borrowed_event(&bytes);
        prop_assert!(borrowed.is_some(), "left to prost: {event:?}");
        same(&borrowed.unwrap(), &event)?;
    }

    /// Two events back to back are one message to prost (fields merged, strings
    /// replaced): read the same, or left to prost.
    #[test]
    fn merged_events_are_read_as_prost_reads_them_or_left_to_it(a in event(), b in event()) {
        let mut bytes = a.encode_to_vec();
        bytes.extend(b.encode_to_vec());
        let decoded = v1::Event::decode(bytes.as_slice());
        prop_assert!(decoded.is_ok());
        if let Some(borrowed) = borrowed_event(&bytes) {
            same(&borrowed, &decoded.unwrap())?;
        }
    }

    /// Damaged bytes (cut short, a byte changed): never accepted where prost refuses,
    /// never read otherwise than prost reads them.
    #[test]
    fn damaged_bytes_are_never_read_otherwise_than_prost(
        event in event(),
        cut in any::<prop::sample::Index>(),
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        let mut bytes = event.encode_to_vec();
        if !bytes.is_empty() {
            let i = at.index(bytes.len());
            bytes[i] = byte;
            bytes.truncate(cut.index(bytes.len() + 1));
        }
        let decoded = v1::Event::decode(bytes.as_slice());
        if let Some(borrowed) = borrowed_event(&bytes) {
            prop_assert!(decoded.is_ok(), "read bytes prost refuses: {bytes:?}");
            same(&borrowed, &decoded.unwrap())?;
        }
    }
}

/// A click with every field, for the hand-written cases below.
fn full_click() -> v1::Event {
    v1::Event {
        event_id: "e-1".into(),
        occurred_at: Some(pbjson_types::Timestamp {
            seconds: 1_790_000_000,
            nanos: 5_000_000,
        }),
        tenant_id: "acme".into(),
        context: Some(v1::Context {
            ip_hash: "ip".into(),
            user_agent_hash: "ua".into(),
            ..Default::default()
        }),
        payload: Some(v1::event::Payload::Click(v1::Click {
            visitor_id: "v-1".into(),
            link_code: "anna-spring".into(),
            utm: Some(v1::Utm {
                source: "ig".into(),
                ..Default::default()
            }),
            ..Default::default()
        })),
        ..Default::default()
    }
}

#[test]
fn a_click_is_read_with_its_text_borrowed_from_the_bytes() {
    let bytes = full_click().encode_to_vec();
    let borrowed = borrowed_event(&bytes).expect("read");
    let range = bytes.as_ptr_range();
    assert!(range.contains(&borrowed.event.event_id.as_ptr()));
    assert!(range.contains(&borrowed.tenant_id.as_ptr()));
    assert_eq!(borrowed.event.event_id, "e-1");
    assert_eq!(
        borrowed.event.occurred_at,
        Some(Timestamp::from_millis(1_790_000_000_005))
    );
}

#[test]
fn a_message_given_twice_an_unknown_field_or_a_wrong_wire_type_is_left_to_prost() {
    let click = full_click();
    // The context twice: prost merges the two, which this reader does not.
    let mut twice = click.encode_to_vec();
    v1::Event {
        context: click.context.clone(),
        ..Default::default()
    }
    .encode(&mut twice)
    .expect("encode");
    assert!(borrowed_event(&twice).is_none());
    assert!(v1::Event::decode(twice.as_slice()).is_ok());
    // Field 99 (unknown): prost skips it.
    let mut unknown = click.encode_to_vec();
    prost::encoding::string::encode(99, &"x".to_owned(), &mut unknown);
    assert!(borrowed_event(&unknown).is_none());
    assert_eq!(
        v1::Event::decode(unknown.as_slice()).expect("decode"),
        click
    );
    // event_id (a string) as a varint: prost refuses it.
    let mut wrong = click.encode_to_vec();
    prost::encoding::uint64::encode(1, &7, &mut wrong);
    assert!(borrowed_event(&wrong).is_none());
    assert!(v1::Event::decode(wrong.as_slice()).is_err());
    // Invalid UTF-8 in a string: prost refuses it.
    let mut bad = Vec::new();
    prost::encoding::bytes::encode(1, &vec![0xff, 0xfe], &mut bad);
    assert!(borrowed_event(&bad).is_none());
    assert!(v1::Event::decode(bad.as_slice()).is_err());
}
