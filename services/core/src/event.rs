//! The events of §4: their unchecked form as it arrives (mirroring the proto contract)
//! and their validated domain form.
//!
//! [`Event::validate`] is the only way to build a domain [`Event`]: it checks every rule of
//! §4 and reports each broken one with its field path, so that a storefront gets all its
//! mistakes in one answer. PII (IP, user agent, raw email) is hashed by ingest before it
//! gets here; the core only ever sees hashes.

use std::fmt;

use rust_decimal::Decimal;
use serde::Serialize;

use crate::{
    attribution::{Digest, digest},
    error::{Rejection, Violation},
    ids::{
        CampaignId, CreatorId, CustomerId, EventId, LeadId, LinkCode, OrderId, PostId, PromoCode,
        VisitorId, check_id,
    },
    money::{Currency, Money, parse_decimal},
    time::{Duration, Timestamp},
};

/// Text an event carries besides its ids (hashes, UTM fields, URLs, SKUs): up to 15 bytes
/// inline and longer behind a reference count, as the ids are ([`crate::ids`]).
pub type Text = ecow::EcoString;

/// How far in the future an `occurred_at` may lie (§4).
pub const MAX_CLOCK_SKEW: Duration = Duration::minutes(5);
/// The earliest `occurred_at` accepted: 2000-01-01, to catch zero or seconds-for-millis bugs.
pub const EARLIEST: Timestamp = Timestamp(946_684_800_000);
/// Longest free-text field (URLs, reasons, platform, UTM values), in bytes.
pub const MAX_TEXT_BYTES: usize = 2048;
/// Most line items in one order.
pub const MAX_LINE_ITEMS: usize = 500;
/// Most promo codes on one order.
pub const MAX_PROMO_CODES: usize = 20;

/// An event exactly as a client sent it: text where the contract has text, empty for absent.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RawEvent<S = String> {
    /// Client-chosen idempotency key.
    pub event_id: S,
    /// Event time; `None` when missing.
    pub occurred_at: Option<Timestamp>,
    /// The brand's customer id, when known.
    pub customer_id: S,
    /// Salted hash of the client IP (hashed at ingest).
    pub ip_hash: S,
    /// Salted hash of the user agent (hashed at ingest).
    pub user_agent_hash: S,
    /// The event itself; `None` when the client sent no payload.
    pub payload: Option<RawPayload<S>>,
}

/// The payload of a [`RawEvent`].
#[derive(Debug, Clone, PartialEq)]
#[allow(missing_docs)]
pub enum RawPayload<S = String> {
    Click(RawClick<S>),
    Signup(RawSignup<S>),
    Order(RawOrder<S>),
    Adjustment(RawAdjustment<S>),
    LeadStatus(RawLeadStatus<S>),
    Engagement(RawEngagement<S>),
}

/// A click as sent.
#[derive(Debug, Clone, Default, PartialEq)]
#[allow(missing_docs)]
pub struct RawClick<S = String> {
    pub visitor_id: S,
    pub link_code: S,
    pub creator_id: S,
    pub campaign_id: S,
    pub utm_source: S,
    pub utm_medium: S,
    pub utm_campaign: S,
    pub utm_content: S,
    pub utm_term: S,
    pub landing_url: S,
    pub referrer: S,
}

/// A signup (lead) as sent.
#[derive(Debug, Clone, Default, PartialEq)]
#[allow(missing_docs)]
pub struct RawSignup<S = String> {
    pub visitor_id: S,
    pub lead_id: S,
    pub email_hash: S,
    pub promo_code: S,
}

/// An amount as sent: decimal text and currency code.
#[derive(Debug, Clone, Default, PartialEq)]
#[allow(missing_docs)]
pub struct RawMoney<S = String> {
    pub amount: S,
    pub currency: S,
}

/// A line item as sent.
#[derive(Debug, Clone, Default, PartialEq)]
#[allow(missing_docs)]
pub struct RawLineItem<S = String> {
    pub sku: S,
    pub category: S,
    pub quantity: u32,
    pub unit_price: S,
}

/// An order as sent.
#[derive(Debug, Clone, Default, PartialEq)]
#[allow(missing_docs)]
pub struct RawOrder<S = String> {
    pub visitor_id: S,
    pub order_id: S,
    pub amount: Option<RawMoney<S>>,
    pub tax: Option<RawMoney<S>>,
    pub shipping: Option<RawMoney<S>>,
    pub line_items: Vec<RawLineItem<S>>,
    pub promo_codes: Vec<S>,
    pub renewal_of: S,
    pub first_order: Option<bool>,
    pub email_hash: S,
}

/// The kinds of adjustment (§4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdjustmentKind {
    /// Money back to the customer, whole or in part.
    Refund,
    /// The order never completed.
    Cancel,
    /// The payment was disputed and taken back.
    Chargeback,
}

impl AdjustmentKind {
    /// Lower-case name, for ids and labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Refund => "refund",
            Self::Cancel => "cancel",
            Self::Chargeback => "chargeback",
        }
    }
}

/// An adjustment as sent.
#[derive(Debug, Clone, Default, PartialEq)]
#[allow(missing_docs)]
pub struct RawAdjustment<S = String> {
    pub order_id: S,
    /// `None` when unspecified or unknown.
    pub kind: Option<AdjustmentKind>,
    pub amount: Option<RawMoney<S>>,
    pub reason: S,
}

/// A lead status as sent.
#[derive(Debug, Clone, Default, PartialEq)]
#[allow(missing_docs)]
pub struct RawLeadStatus<S = String> {
    pub lead_id: S,
    /// `None` when unspecified or unknown; `Some(true)` for qualified.
    pub qualified: Option<bool>,
}

/// An engagement snapshot as sent (cumulative counters of one post).
#[derive(Debug, Clone, Default, PartialEq)]
#[allow(missing_docs)]
pub struct RawEngagement<S = String> {
    pub creator_id: S,
    pub campaign_id: S,
    pub post_id: S,
    pub platform: S,
    pub views: u64,
    pub likes: u64,
    pub comments: u64,
    pub shares: u64,
}

/// A validated event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    /// Idempotency key, unique per tenant.
    pub id: EventId,
    /// Event time.
    pub occurred_at: Timestamp,
    /// The customer, when known.
    pub customer: Option<CustomerId>,
    /// The [`digest`] of the salted IP hash, when given: the rules only tell one IP from
    /// another (click floods), so the text is not kept.
    pub ip_hash: Option<Digest>,
    /// The digest of the salted user-agent hash, when given (no rule reads it yet).
    pub user_agent_hash: Option<Digest>,
    /// What happened.
    pub payload: Payload,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[allow(missing_docs)]
pub enum Payload {
    Click(Click),
    Signup(Signup),
    Order(Box<Order>),
    Adjustment(Adjustment),
    LeadStatus(LeadStatusChange),
    Engagement(Engagement),
}

impl Payload {
    /// Lower-case name of the event type (a bounded metric label).
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Click(_) => "click",
            Self::Signup(_) => "signup",
            Self::Order(_) => "order",
            Self::Adjustment(_) => "adjustment",
            Self::LeadStatus(_) => "lead_status",
            Self::Engagement(_) => "engagement",
        }
    }

    /// The order in which events of one instant are processed: clicks before the
    /// conversions they may lead to, conversions before their corrections.
    pub fn rank(&self) -> u8 {
        match self {
            Self::Click(_) => 0,
            Self::Engagement(_) => 1,
            Self::Signup(_) => 2,
            Self::Order(_) => 3,
            Self::LeadStatus(_) => 4,
            Self::Adjustment(_) => 5,
        }
    }
}

/// Where a click points: a tracking link, or a creator and campaign given directly.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClickTarget {
    /// A tracking link code (§3).
    Link(LinkCode),
    /// A creator and campaign named by the storefront.
    Direct {
        /// The creator.
        creator: CreatorId,
        /// The campaign.
        campaign: CampaignId,
    },
}

/// A click on a creator's link.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Click {
    /// The visitor who clicked.
    pub visitor: VisitorId,
    /// What was clicked.
    pub target: ClickTarget,
    /// UTM fields, landing URL and referrer, kept for explanation.
    pub utm: Vec<(&'static str, Text)>,
    /// Landing URL, when given.
    pub landing_url: Option<Text>,
    /// Referrer, when given.
    pub referrer: Option<Text>,
}

/// A signup: a lead.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Signup {
    /// The visitor who signed up.
    pub visitor: VisitorId,
    /// The lead id.
    pub lead: LeadId,
    /// Hashed email, when given.
    pub email_hash: Option<Text>,
    /// Promo code used, when any.
    pub promo_code: Option<PromoCode>,
}

/// One line of an order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LineItem {
    /// Stock keeping unit.
    pub sku: Text,
    /// Category, for per-category commission rates.
    pub category: Option<Text>,
    /// Units bought (at least one).
    pub quantity: u32,
    /// Price of one unit, in the order's currency.
    #[serde(with = "crate::money::decimal_str")]
    pub unit_price: Decimal,
}

/// An order (a sale).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Order {
    /// The visitor who ordered.
    pub visitor: VisitorId,
    /// The storefront's order id.
    pub order: OrderId,
    /// What the customer paid for the goods after discounts (tax and shipping included
    /// when they are given separately below).
    pub amount: Money,
    /// Tax included in `amount`, when given.
    pub tax: Option<Money>,
    /// Shipping included in `amount`, when given.
    pub shipping: Option<Money>,
    /// Line items, when given.
    pub line_items: Vec<LineItem>,
    /// Promo codes used, in the order given.
    pub promo_codes: Vec<PromoCode>,
    /// The order this one renews (subscriptions).
    pub renewal_of: Option<OrderId>,
    /// Storefront's word that this is the customer's first order.
    pub first_order: Option<bool>,
    /// Hashed email of the buyer, when given (self-referral checks).
    pub email_hash: Option<Text>,
}

impl Order {
    /// The commissionable amount: `amount` less tax and shipping (§6).
    pub fn net_amount(&self) -> Money {
        let mut net = self.amount.amount;
        for extra in [self.tax, self.shipping].into_iter().flatten() {
            net -= extra.amount;
        }
        Money::new(net.max(Decimal::ZERO), self.amount.currency)
    }
}

/// A refund, cancel or chargeback of an order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Adjustment {
    /// The order it changes.
    pub order: OrderId,
    /// What kind of adjustment.
    pub kind: AdjustmentKind,
    /// The amount refunded; `None` means the whole order.
    pub amount: Option<Money>,
    /// Free-text reason.
    pub reason: Option<Text>,
}

/// A lead becoming qualified or rejected.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LeadStatusChange {
    /// The lead.
    pub lead: LeadId,
    /// Qualified (`true`) or rejected.
    pub qualified: bool,
}

/// Cumulative engagement counters of one post.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[allow(missing_docs)]
pub struct Engagement {
    pub creator: CreatorId,
    pub campaign: CampaignId,
    pub post: PostId,
    pub platform: Option<Text>,
    pub views: u64,
    pub likes: u64,
    pub comments: u64,
    pub shares: u64,
}

/// Collects violations so that a client hears about all of them at once.
///
/// Field paths are [`Display`](fmt::Display) values, written out only when a rule is
/// broken: a valid event (nearly every event) costs no formatting and no allocation for
/// its paths.
#[derive(Default)]
struct Checks(Vec<Violation>);

impl Checks {
    fn id<T>(
        &mut self,
        field: impl fmt::Display,
        value: &str,
        parse: fn(&str, &str) -> Result<T, Violation>,
    ) -> Option<T> {
        match parse("", value) {
            Ok(v) => Some(v),
            Err(e) => {
                self.0.push(e.at(field));
                None
            }
        }
    }

    fn optional_id<T>(
        &mut self,
        field: impl fmt::Display,
        value: &str,
        parse: fn(&str, &str) -> Result<T, Violation>,
    ) -> Option<Option<T>> {
        if value.is_empty() {
            Some(None)
        } else {
            self.id(field, value, parse).map(Some)
        }
    }

    fn text(&mut self, field: impl fmt::Display, value: &str) -> Option<Text> {
        if value.is_empty() {
            return None;
        }
        if value.len() > MAX_TEXT_BYTES {
            self.0.push(Violation::new(
                field.to_string(),
                "too_long",
                format!("is {} bytes, at most {MAX_TEXT_BYTES} allowed", value.len()),
            ));
            return None;
        }
        if crate::ids::has_control(value) {
            self.0.push(Violation::new(
                field.to_string(),
                "control_character",
                "must not contain control characters",
            ));
            return None;
        }
        Some(Text::from(value))
    }

    /// An optional hash, checked by the id rules: `None` when absent or broken.
    fn hash(&mut self, field: impl fmt::Display, value: &str) -> Option<Text> {
        self.optional_id(field, value, |f, v| check_id(f, v).map(|()| Text::from(v)))
            .flatten()
    }

    /// [`Checks::hash`], kept as its digest: no allocation for the text.
    fn hash_digest(&mut self, field: impl fmt::Display, value: &str) -> Option<Digest> {
        self.optional_id(field, value, |f, v| check_id(f, v).map(|()| digest(v)))
            .flatten()
    }

    fn money(
        &mut self,
        field: &str,
        raw: Option<&RawMoney<impl AsRef<str>>>,
        required: bool,
    ) -> Option<Option<Money>> {
        let Some(raw) = raw else {
            if required {
                self.0
                    .push(Violation::new(field, "required", "must be given"));
                return None;
            }
            return Some(None);
        };
        let currency = match Currency::parse("", raw.currency.as_ref()) {
            Ok(c) => c,
            Err(e) => {
                self.0.push(e.at(format_args!("{field}.currency")));
                return None;
            }
        };
        match Money::parse_positive("", raw.amount.as_ref(), currency, !required) {
            Ok(m) => Some(Some(m)),
            Err(e) => {
                self.0.push(e.at(format_args!("{field}.amount")));
                None
            }
        }
    }

    fn push(&mut self, v: Violation) {
        self.0.push(v);
    }
}

/// The path of one element of a repeated field (`order.line_items[2]`), written out only
/// when a rule is broken.
#[derive(Clone, Copy)]
struct Element(&'static str, usize);

impl fmt::Display for Element {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}[{}]", self.0, self.1)
    }
}

impl Event {
    /// Checks every §4 rule of `raw`, judged at `now` (for the future-time rule), and builds
    /// the domain event; or reports every broken rule with its field path.
    pub fn validate<S: AsRef<str>>(raw: &RawEvent<S>, now: Timestamp) -> Result<Self, Rejection> {
        let mut c = Checks::default();
        let id = c.id("event_id", raw.event_id.as_ref(), EventId::parse);
        let occurred_at = match raw.occurred_at {
            None => {
                c.push(Violation::new("occurred_at", "required", "must be given"));
                None
            }
            Some(t) if t > now.plus(MAX_CLOCK_SKEW) => {
                c.push(Violation::new(
                    "occurred_at",
                    "in_future",
                    format!("{t} is more than 5 minutes after {now}"),
                ));
                None
            }
            Some(t) if t < EARLIEST => {
                c.push(Violation::new(
                    "occurred_at",
                    "too_old",
                    format!("{t} is before {EARLIEST}"),
                ));
                None
            }
            Some(t) => Some(t),
        };
        let customer = c.optional_id("customer_id", raw.customer_id.as_ref(), CustomerId::parse);
        let ip_hash = c.hash_digest("context.ip_hash", raw.ip_hash.as_ref());
        let user_agent_hash =
            c.hash_digest("context.user_agent_hash", raw.user_agent_hash.as_ref());
        let payload = match &raw.payload {
            None => {
                c.push(Violation::new("payload", "required", "one of click, signup, order, adjustment, lead_status, engagement must be given"));
                None
            }
            Some(p) => validate_payload(&mut c, p),
        };
        match (id, occurred_at, customer, payload) {
            (Some(id), Some(occurred_at), Some(customer), Some(payload)) if c.0.is_empty() => {
                Ok(Self {
                    id,
                    occurred_at,
                    customer,
                    ip_hash,
                    user_agent_hash,
                    payload,
                })
            }
            _ => Err(Rejection::Invalid(c.0)),
        }
    }
}

fn validate_payload<S: AsRef<str>>(c: &mut Checks, p: &RawPayload<S>) -> Option<Payload> {
    match p {
        RawPayload::Click(k) => validate_click(c, k).map(Payload::Click),
        RawPayload::Signup(s) => {
            let visitor = c.id("signup.visitor_id", s.visitor_id.as_ref(), VisitorId::parse);
            let lead = c.id("signup.lead_id", s.lead_id.as_ref(), LeadId::parse);
            let email_hash = c.hash("signup.email_hash", s.email_hash.as_ref());
            let promo_code =
                c.optional_id("signup.promo_code", s.promo_code.as_ref(), PromoCode::parse);
            Some(Payload::Signup(Signup {
                visitor: visitor?,
                lead: lead?,
                email_hash,
                promo_code: promo_code?,
            }))
        }
        RawPayload::Order(o) => validate_order(c, o).map(|o| Payload::Order(Box::new(o))),
        RawPayload::Adjustment(a) => {
            let order = c.id("adjustment.order_id", a.order_id.as_ref(), OrderId::parse);
            if a.kind.is_none() {
                c.push(Violation::new(
                    "adjustment.kind",
                    "required",
                    "must be refund, cancel or chargeback",
                ));
            }
            let mut amount = c.money("adjustment.amount", a.amount.as_ref(), false);
            // Optional, but when given a refund amount must be positive (§4): a zero
            // "partial refund" would be acknowledged and then change nothing.
            if amount.flatten().is_some_and(|m| m.is_zero()) {
                c.push(Violation::new(
                    "adjustment.amount.amount",
                    "not_positive",
                    "a partial refund amount must be greater than zero; omit it for all",
                ));
                amount = None;
            }
            let reason = c.text("adjustment.reason", a.reason.as_ref());
            Some(Payload::Adjustment(Adjustment {
                order: order?,
                kind: a.kind?,
                amount: amount?,
                reason,
            }))
        }
        RawPayload::LeadStatus(l) => {
            let lead = c.id("lead_status.lead_id", l.lead_id.as_ref(), LeadId::parse);
            if l.qualified.is_none() {
                c.push(Violation::new(
                    "lead_status.status",
                    "required",
                    "must be qualified or rejected",
                ));
            }
            Some(Payload::LeadStatus(LeadStatusChange {
                lead: lead?,
                qualified: l.qualified?,
            }))
        }
        RawPayload::Engagement(e) => {
            let creator = c.id(
                "engagement.creator_id",
                e.creator_id.as_ref(),
                CreatorId::parse,
            );
            let campaign = c.id(
                "engagement.campaign_id",
                e.campaign_id.as_ref(),
                CampaignId::parse,
            );
            let post = c.id("engagement.post_id", e.post_id.as_ref(), PostId::parse);
            let platform = c.text("engagement.platform", e.platform.as_ref());
            Some(Payload::Engagement(Engagement {
                creator: creator?,
                campaign: campaign?,
                post: post?,
                platform,
                views: e.views,
                likes: e.likes,
                comments: e.comments,
                shares: e.shares,
            }))
        }
    }
}

fn validate_click<S: AsRef<str>>(c: &mut Checks, k: &RawClick<S>) -> Option<Click> {
    let visitor = c.id("click.visitor_id", k.visitor_id.as_ref(), VisitorId::parse);
    let target = match (
        k.link_code.as_ref().is_empty(),
        k.creator_id.as_ref().is_empty() && k.campaign_id.as_ref().is_empty(),
    ) {
        (false, true) => c
            .id("click.link_code", k.link_code.as_ref(), LinkCode::parse)
            .map(ClickTarget::Link),
        (true, false) => {
            let creator = c.id("click.creator_id", k.creator_id.as_ref(), CreatorId::parse);
            let campaign = c.id(
                "click.campaign_id",
                k.campaign_id.as_ref(),
                CampaignId::parse,
            );
            Some(ClickTarget::Direct {
                creator: creator?,
                campaign: campaign?,
            })
        }
        (true, true) => {
            c.push(Violation::new(
                "click.link_code",
                "required",
                "give link_code, or creator_id and campaign_id",
            ));
            None
        }
        (false, false) => {
            c.push(Violation::new(
                "click.link_code",
                "exclusive",
                "give link_code or creator_id and campaign_id, not both",
            ));
            None
        }
    };
    let mut utm = Vec::new();
    for (name, value) in [
        ("utm_source", k.utm_source.as_ref()),
        ("utm_medium", k.utm_medium.as_ref()),
        ("utm_campaign", k.utm_campaign.as_ref()),
        ("utm_content", k.utm_content.as_ref()),
        ("utm_term", k.utm_term.as_ref()),
    ] {
        if let Some(v) = c.text(format_args!("click.{name}"), value) {
            utm.push((name, v));
        }
    }
    let landing_url = c.text("click.landing_url", k.landing_url.as_ref());
    let referrer = c.text("click.referrer", k.referrer.as_ref());
    Some(Click {
        visitor: visitor?,
        target: target?,
        utm,
        landing_url,
        referrer,
    })
}

fn validate_order<S: AsRef<str>>(c: &mut Checks, o: &RawOrder<S>) -> Option<Order> {
    let visitor = c.id("order.visitor_id", o.visitor_id.as_ref(), VisitorId::parse);
    let order = c.id("order.order_id", o.order_id.as_ref(), OrderId::parse);
    let amount = c.money("order.amount", o.amount.as_ref(), true).flatten();
    let tax = c.money("order.tax", o.tax.as_ref(), false);
    let shipping = c.money("order.shipping", o.shipping.as_ref(), false);
    if let Some(amount) = amount {
        let mut extras = Decimal::ZERO;
        for (field, extra) in [
            ("order.tax", tax.flatten()),
            ("order.shipping", shipping.flatten()),
        ] {
            let Some(extra) = extra else { continue };
            if extra.currency != amount.currency {
                c.push(Violation::new(
                    format!("{field}.currency"),
                    "currency_mismatch",
                    format!("must be {} like order.amount", amount.currency),
                ));
            }
            extras += extra.amount;
        }
        if extras > amount.amount {
            c.push(Violation::new(
                "order.amount",
                "less_than_extras",
                "must be at least tax plus shipping",
            ));
        }
    }
    if o.line_items.len() > MAX_LINE_ITEMS {
        c.push(Violation::new(
            "order.line_items",
            "too_many",
            format!("at most {MAX_LINE_ITEMS} line items"),
        ));
    }
    let mut line_items = Vec::with_capacity(o.line_items.len());
    for (i, item) in o.line_items.iter().enumerate().take(MAX_LINE_ITEMS) {
        let field = Element("order.line_items", i);
        let sku = c.id(format_args!("{field}.sku"), item.sku.as_ref(), |f, v| {
            check_id(f, v).map(|()| Text::from(v))
        });
        let category = c.optional_id(
            format_args!("{field}.category"),
            item.category.as_ref(),
            |f, v| check_id(f, v).map(|()| Text::from(v)),
        );
        if item.quantity == 0 {
            c.push(Violation::new(
                format!("{field}.quantity"),
                "not_positive",
                "must be at least 1",
            ));
        }
        let unit_price = match parse_decimal("", item.unit_price.as_ref()) {
            Ok(p) if p.is_sign_negative() && !p.is_zero() => {
                c.push(Violation::new(
                    format!("{field}.unit_price"),
                    "negative",
                    "must not be negative",
                ));
                None
            }
            Ok(p) => match amount {
                Some(a) if p.normalize().scale() > a.currency.minor_units() => {
                    c.push(Violation::new(
                        format!("{field}.unit_price"),
                        "precision",
                        format!("more fraction digits than {} allows", a.currency),
                    ));
                    None
                }
                _ => Some(p),
            },
            Err(e) => {
                c.push(e.at(format_args!("{field}.unit_price")));
                None
            }
        };
        if let (Some(sku), Some(category), Some(unit_price)) = (sku, category, unit_price) {
            line_items.push(LineItem {
                sku,
                category,
                quantity: item.quantity,
                unit_price,
            });
        }
    }
    if o.promo_codes.len() > MAX_PROMO_CODES {
        c.push(Violation::new(
            "order.promo_codes",
            "too_many",
            format!("at most {MAX_PROMO_CODES} promo codes"),
        ));
    }
    let promo_codes: Vec<PromoCode> = o
        .promo_codes
        .iter()
        .enumerate()
        .filter_map(|(i, code)| {
            c.id(
                Element("order.promo_codes", i),
                code.as_ref(),
                PromoCode::parse,
            )
        })
        .collect();
    let renewal_of = c.optional_id("order.renewal_of", o.renewal_of.as_ref(), OrderId::parse);
    let email_hash = c.hash("order.email_hash", o.email_hash.as_ref());
    Some(Order {
        visitor: visitor?,
        order: order?,
        amount: amount?,
        tax: tax?,
        shipping: shipping?,
        line_items,
        promo_codes,
        renewal_of: renewal_of?,
        first_order: o.first_order,
        email_hash,
    })
}
