//! `payoff loadgen`: a simulated storefront as a load generator against any ingest
//! endpoint.
//!
//! The [`Generator`] is a seeded funnel over a program's links, promo codes, campaigns and
//! creators: visitors arrive at creators by Zipf popularity, click one or more tracking
//! links, and some of them sign up or order; some orders are refunded, cancelled or
//! charged back; leads are qualified or rejected; posts report cumulative engagement; a
//! few events are resent (duplicates) and a few clicks arrive after the conversion they
//! precede (late clicks, within and after the program's grace period). The rates are
//! those of the domain articles the product started from: click-through 0.5–3% of views,
//! conversion 2–10% of clicks (signups 8–25% on lead campaigns), about 5% of orders
//! reversed.
//!
//! Event time is a clock of its own: event *i* happens at `--start-time + i / clock rate`,
//! where the clock rate is `--rate` (so at a fixed rate event times are the wall clock of
//! the schedule), or `--clock-rate` with `--rate 0`. Follow-ups (a second click, the
//! order, the refund) are scheduled in that event time, seconds to two minutes after their
//! cause. So the events, their ids, their order and their times depend only on the seed,
//! the program, the start time and the clock rate, never on how fast the endpoint
//! answers: the same flags give the same `--record` file byte for byte (same build and
//! platform: the distributions use floating point).
//!
//! [`run`] sends them with `Ingest.Send` (`--batch 1`) or `Ingest.SendBatch`, with up to
//! `--concurrency` requests in flight, paced to `--rate` or as fast as possible, until
//! `--duration` or `--events`, and returns a [`Summary`]: achieved rate, events by type,
//! results, errors by gRPC status code and request latency percentiles.
//!
//! What it must not do: retry (a failed request is counted, not resent), or send anything
//! it has not recorded first.

use std::{
    cmp::Reverse,
    collections::{BTreeMap, BinaryHeap, HashMap},
    fmt,
    io::{BufWriter, Write},
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use payoff_core::{money::Currency, time::Timestamp};
use payoff_proto::{
    convert,
    v1::{self, event_result::Status as ItemStatus, ingest_client::IngestClient},
};
use rand::{Rng, SeedableRng, seq::SliceRandom};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, LogNormal, Zipf};
use tokio::{sync::Semaphore, time::Instant};
use tokio_util::sync::CancellationToken;
use tonic::{metadata::MetadataValue, transport::Channel};

/// Options of `payoff loadgen`.
#[derive(Debug, Clone, clap::Args)]
pub struct LoadgenArgs {
    /// Ingest's gRPC endpoint (plaintext HTTP/2; TLS endpoints are not supported yet).
    #[arg(
        long,
        env = "PAYOFF_INGEST_ENDPOINT",
        default_value = "http://127.0.0.1:50051"
    )]
    pub endpoint: String,
    /// Secret of an `ingest` API key, sent as `authorization: Bearer <secret>`. The key
    /// file deploy/examples/api-keys.json has "dev-ingest-key"; `payoff dev` accepts
    /// "dev-ingest-secret".
    #[arg(long, env = "PAYOFF_API_KEY", hide_env_values = true)]
    pub api_key: String,
    /// Events per second (sent on a fixed schedule); 0 sends as fast as --concurrency
    /// allows.
    #[arg(long, default_value_t = 1000)]
    pub rate: u32,
    /// Stop after this long (e.g. 30s, 5m). Default when --events is not given: 30s.
    #[arg(long, value_parser = humantime::parse_duration, conflicts_with = "events")]
    pub duration: Option<Duration>,
    /// Stop after sending this many events.
    #[arg(long)]
    pub events: Option<u64>,
    /// Seed of the generator: the same seed, program, --start-time and clock rate give
    /// the same events. Default: a random seed, printed at the start and in the summary.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Event time of the first event (RFC 3339). Default: now.
    #[arg(long, value_name = "RFC3339")]
    pub start_time: Option<String>,
    /// Events per second of event time: event i happens at --start-time + i / this.
    /// Default: --rate, or 10000 with --rate 0. Sending faster than this moves event
    /// times ahead of the wall clock, and ingest rejects events more than 5 minutes in
    /// its future (counted as rejected: future_timestamp).
    #[arg(long)]
    pub clock_rate: Option<u32>,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Events per request: 1 uses Ingest.Send, more uses Ingest.SendBatch (ingest's
    /// --max-batch is 500 by default). With --rate, a batch goes at its first event's
    /// time.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Deadline of each request.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    pub timeout: Duration,
    /// Write every event sent to this file, one payoff.v1.Event per line (canonical
    /// proto3 JSON), in the order they were handed to the connection, so that `payoff
    /// replay --events FILE` computes the ledger they should produce. Events whose
    /// request failed are in it too (the summary counts them).
    #[arg(long, value_name = "FILE")]
    pub record: Option<PathBuf>,
    /// The program whose links, promo codes, campaigns and creators the simulated
    /// storefront uses (canonical proto3 JSON; of an array of versions, the last).
    #[arg(long, default_value = "deploy/examples/program.json")]
    pub program: PathBuf,
}

/// The default run length when neither --duration nor --events is given.
const DEFAULT_DURATION: Duration = Duration::from_secs(30);
/// The event clock with --rate 0 and no --clock-rate.
const DEFAULT_CLOCK_RATE: u32 = 10_000;

// The funnel. Rates are probabilities; delays are event time, drawn log-uniformly.

/// Zipf exponent of creator popularity (rank 1 is the most popular creator).
const ZIPF_EXPONENT: f64 = 1.1;
/// Click-through rate (clicks per post view) of a creator, drawn once per creator.
const CTR: (f64, f64) = (0.005, 0.03);
/// Likes per view of a creator's posts.
const LIKES_PER_VIEW: (f64, f64) = (0.01, 0.04);
/// Orders per visitor of an order campaign, drawn once per creator.
const CONVERSION_RATE: (f64, f64) = (0.02, 0.10);
/// Signups per visitor of a lead campaign (one with a CPL plan), drawn once per creator.
const SIGNUP_RATE: (f64, f64) = (0.08, 0.25);
/// Chance, after each click, that the visitor clicks another link later.
const ANOTHER_CLICK: f64 = 0.25;
/// Most clicks in one visitor's journey.
const MAX_CLICKS: u32 = 4;
/// Visitors who order with a creator's promo code and no click.
const CODE_ONLY_VISITORS: f64 = 0.03;
/// Orders of clicking visitors that also carry a promo code.
const PROMO_ON_ORDER: f64 = 0.08;
/// Orders that are later refunded, cancelled or charged back.
const REVERSAL_RATE: f64 = 0.05;
/// Orders followed by a click that happened before them but arrives after them, within
/// the grace period (it counts).
const LATE_IN_GRACE: f64 = 0.03;
/// Orders followed by a click that arrives after the grace period (it is too late).
const LATE_AFTER_GRACE: f64 = 0.015;
/// Events resent later with the same id (a storefront retrying).
const RESEND_RATE: f64 = 0.01;
/// Chance, after a click on a post of a campaign that pays engagement, of an engagement
/// report for the post soon after.
const ENGAGEMENT_REPORT: f64 = 0.1;
/// Signups whose lead is later qualified or rejected.
const LEAD_STATUS: f64 = 0.7;
/// Share of judged leads that are qualified.
const QUALIFIED: f64 = 0.75;
/// Orders with a known customer id.
const KNOWN_CUSTOMER: f64 = 0.7;
/// Share of known customers who ordered before.
const RETURNING_CUSTOMER: f64 = 0.2;
/// Orders with tax given separately.
const TAXED: f64 = 0.4;

/// Milliseconds of event time.
const SECOND: i64 = 1_000;
// Follow-ups come seconds to two minutes after their cause (a real refund comes days
// later): so a run of a few minutes of event time shows the whole funnel at its rates,
// while a shorter one has fewer refunds and lead verdicts than the rates say.
const NEXT_CLICK_DELAY: (i64, i64) = (5 * SECOND, 120 * SECOND);
const CONVERSION_DELAY: (i64, i64) = (4 * SECOND, 120 * SECOND);
const REVERSAL_DELAY: (i64, i64) = (5 * SECOND, 120 * SECOND);
const LEAD_STATUS_DELAY: (i64, i64) = (10 * SECOND, 120 * SECOND);
const RESEND_DELAY: (i64, i64) = (SECOND, 10 * SECOND);
const ENGAGEMENT_DELAY: (i64, i64) = (SECOND / 2, 3 * SECOND);

const CATEGORIES: [(&str, u32); 4] = [
    ("skincare", 45),
    ("makeup", 35),
    ("haircare", 12),
    ("gift-cards", 8),
];
const PLATFORMS: [&str; 3] = ["instagram", "tiktok", "youtube"];
const USER_AGENTS: [&str; 4] = [
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148 Instagram",
    "Mozilla/5.0 (Linux; Android 15; Pixel 9) AppleWebKit/537.36 Chrome/131.0 Mobile Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) AppleWebKit/605.1.15 Version/18.1 Safari/605.1.15",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/131.0 Safari/537.36",
];

/// SplitMix64 finaliser: derives per-visitor attributes (IP, user agent) without state.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// `units` minor units of a currency with `digits` decimals, as a decimal string.
fn format_minor(units: u64, digits: u32) -> String {
    if digits == 0 {
        return units.to_string();
    }
    let scale = 10u64.pow(digits);
    format!(
        "{}.{:0width$}",
        units / scale,
        units % scale,
        width = digits as usize
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Converts {
    Orders,
    Leads,
}

#[derive(Debug)]
struct CampaignInfo {
    id: String,
    currency: String,
    minor_units: u32,
    converts: Converts,
    pays_engagement: bool,
}

#[derive(Debug)]
struct CreatorInfo {
    id: String,
    links: Vec<usize>,
    ctr: f64,
    likes_per_view: f64,
    conversion_rate: f64,
    signup_rate: f64,
}

#[derive(Debug)]
struct LinkInfo {
    code: String,
    creator: usize,
    campaign: usize,
    landing_url: String,
    platform: &'static str,
    post_id: String,
}

#[derive(Debug)]
struct CodeInfo {
    code: String,
    campaign: usize,
}

/// Cumulative counters of the post behind a link.
#[derive(Debug, Default, Clone, Copy)]
struct Post {
    views: f64,
    likes: f64,
}

/// Something that happens later in event time.
#[derive(Debug)]
enum Pending {
    /// The next click of a visitor's journey.
    Click {
        visitor: u64,
        clicks: u32,
    },
    /// An order; `link` is the last click's link (None: a promo code only).
    Order {
        visitor: u64,
        link: Option<usize>,
        code: Option<usize>,
    },
    Signup {
        visitor: u64,
    },
    LeadStatus {
        lead: String,
    },
    Reversal {
        order: String,
        units: u64,
        campaign: usize,
    },
    /// A click that happened at `at`, before an order, sent now.
    LateClick {
        visitor: u64,
        link: usize,
        at: i64,
        within_grace: bool,
    },
    /// A newer click of the visitor, then the late one after it.
    NewerThenLate {
        visitor: u64,
        link: usize,
        late_at: i64,
    },
    Engagement {
        link: usize,
    },
    Resend(Box<v1::Event>),
}

/// What the generator made, by kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Generated {
    /// Events by payload type (`click`, `order`, ...), resends included.
    pub by_type: BTreeMap<&'static str, u64>,
    /// Events resent with an id already sent (duplicates).
    pub resent: u64,
    /// Clicks sent after the conversion they precede, within the grace period.
    pub late_in_grace: u64,
    /// Clicks sent after the conversion they precede, after the grace period.
    pub late_after_grace: u64,
}

/// The seeded storefront: an endless, reproducible stream of events.
pub struct Generator {
    rng: ChaCha8Rng,
    tag: String,
    /// Derives per-visitor attributes.
    salt: u64,
    start_ms: i64,
    clock_rate: u64,
    slot: u64,
    campaigns: Vec<CampaignInfo>,
    creators: Vec<CreatorInfo>,
    /// Creator index by popularity rank (0 = most popular).
    ranked: Vec<usize>,
    zipf: Zipf<f64>,
    amounts: LogNormal<f64>,
    links: Vec<LinkInfo>,
    codes: Vec<CodeInfo>,
    posts: Vec<Post>,
    grace_ms: i64,
    min_gap_ms: i64,
    heap: BinaryHeap<Reverse<(i64, u64)>>,
    pending: HashMap<u64, Pending>,
    next_pending: u64,
    next_event: u64,
    next_visitor: u64,
    next_order: u64,
    next_lead: u64,
    next_customer: u64,
    /// Customers who ordered (the first 10,000), for returning customers.
    customers: Vec<u64>,
    generated: Generated,
}

/// Reads a program file (one `Program` or an array of versions, of which the last).
pub fn load_program(path: &Path) -> anyhow::Result<v1::Program> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read program file {}", path.display()))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))?;
    let value = match value {
        serde_json::Value::Array(mut items) => items
            .pop()
            .with_context(|| format!("{}: an empty array of programs", path.display()))?,
        other => other,
    };
    serde_json::from_value(value)
        .with_context(|| format!("{}: not a payoff.v1.Program", path.display()))
}

impl Generator {
    /// A generator over `program`'s links and codes: event `i` happens at `start +
    /// i / clock_rate` seconds.
    pub fn new(
        program: &v1::Program,
        seed: u64,
        start: Timestamp,
        clock_rate: u32,
    ) -> anyhow::Result<Self> {
        if clock_rate == 0 {
            bail!("the event clock rate must be positive");
        }
        let core = convert::program(program).map_err(|e| anyhow::anyhow!("program: {e}"))?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let salt = mix(seed);
        let tag = format!("lg{:08x}", salt as u32);
        let campaigns: Vec<CampaignInfo> = program
            .campaigns
            .iter()
            .map(|c| {
                use v1::commission_plan::Kind;
                let kinds = || c.plans.iter().filter_map(|p| p.kind.as_ref());
                let leads = kinds().any(|k| matches!(k, Kind::Cpl(_)));
                let orders = kinds()
                    .any(|k| matches!(k, Kind::CpsFlat(_) | Kind::CpsPercent(_) | Kind::Tiered(_)));
                let minor_units = Currency::parse("currency", &c.currency)
                    .map_err(|v| anyhow::anyhow!("campaign {}: {v}", c.id))?
                    .minor_units();
                Ok(CampaignInfo {
                    id: c.id.clone(),
                    currency: c.currency.clone(),
                    minor_units,
                    converts: if leads && !orders {
                        Converts::Leads
                    } else {
                        Converts::Orders
                    },
                    pays_engagement: kinds().any(|k| matches!(k, Kind::Engagement(_))),
                })
            })
            .collect::<anyhow::Result<_>>()?;
        let campaign_index = |id: &str| campaigns.iter().position(|c| c.id == id);
        let creator_ids: Vec<&str> = program.creators.iter().map(|c| c.id.as_str()).collect();
        let mut links = Vec::new();
        let mut creator_links: Vec<Vec<usize>> = vec![Vec::new(); creator_ids.len()];
        for l in &program.links {
            let (Some(creator), Some(campaign)) = (
                creator_ids.iter().position(|c| *c == l.creator_id),
                campaign_index(&l.campaign_id),
            ) else {
                continue;
            };
            creator_links[creator].push(links.len());
            links.push(LinkInfo {
                code: l.code.clone(),
                creator,
                campaign,
                landing_url: if l.landing_url.is_empty() {
                    "https://shop.example/".to_owned()
                } else {
                    l.landing_url.clone()
                },
                platform: PLATFORMS[rng.random_range(0..PLATFORMS.len())],
                post_id: format!("{tag}-post-{}", l.code),
            });
        }
        if links.is_empty() {
            bail!("the program has no tracking link of a known creator and campaign");
        }
        let codes = program
            .promo_codes
            .iter()
            .filter_map(|c| {
                Some(CodeInfo {
                    code: c.code.clone(),
                    campaign: campaign_index(&c.campaign_id)?,
                })
            })
            .collect();
        let creators: Vec<CreatorInfo> = creator_links
            .into_iter()
            .zip(&creator_ids)
            .map(|(links, id)| CreatorInfo {
                id: (*id).to_owned(),
                links,
                ctr: rng.random_range(CTR.0..CTR.1),
                likes_per_view: rng.random_range(LIKES_PER_VIEW.0..LIKES_PER_VIEW.1),
                conversion_rate: rng.random_range(CONVERSION_RATE.0..CONVERSION_RATE.1),
                signup_rate: rng.random_range(SIGNUP_RATE.0..SIGNUP_RATE.1),
            })
            .collect();
        let mut ranked: Vec<usize> = (0..creators.len())
            .filter(|c| !creators[*c].links.is_empty())
            .collect();
        ranked.shuffle(&mut rng);
        let zipf = Zipf::new(ranked.len() as f64, ZIPF_EXPONENT)
            .map_err(|e| anyhow::anyhow!("zipf: {e}"))?;
        let amounts =
            LogNormal::new(55f64.ln(), 0.6).map_err(|e| anyhow::anyhow!("amounts: {e}"))?;
        let posts = vec![Post::default(); links.len()];
        Ok(Self {
            rng,
            tag,
            salt,
            start_ms: start.millis(),
            clock_rate: u64::from(clock_rate),
            slot: 0,
            campaigns,
            creators,
            ranked,
            zipf,
            amounts,
            links,
            codes,
            posts,
            grace_ms: core.settings.grace.millis(),
            min_gap_ms: core.settings.min_click_to_conversion.millis(),
            heap: BinaryHeap::new(),
            pending: HashMap::new(),
            next_pending: 0,
            next_event: 0,
            next_visitor: 0,
            next_order: 0,
            next_lead: 0,
            next_customer: 0,
            customers: Vec::new(),
            generated: Generated::default(),
        })
    }

    /// What has been generated so far.
    pub fn generated(&self) -> &Generated {
        &self.generated
    }

    /// The event time of slot `i`.
    fn slot_ms(&self, i: u64) -> i64 {
        let offset = u128::from(i) * 1_000 / u128::from(self.clock_rate);
        self.start_ms
            .saturating_add(i64::try_from(offset).unwrap_or(i64::MAX))
    }

    fn schedule(&mut self, at: i64, pending: Pending) {
        let id = self.next_pending;
        self.next_pending += 1;
        self.heap.push(Reverse((at, id)));
        self.pending.insert(id, pending);
    }

    /// A delay drawn log-uniformly in `[lo, hi]` milliseconds.
    fn delay(&mut self, (lo, hi): (i64, i64)) -> i64 {
        let (lo, hi) = (lo.max(1) as f64, hi.max(lo.max(1)) as f64);
        let x: f64 = self.rng.random_range(lo.ln()..=hi.ln());
        x.exp().round() as i64
    }

    fn event_id(&mut self) -> String {
        self.next_event += 1;
        format!("{}-e{}", self.tag, self.next_event)
    }

    fn visitor_id(&self, visitor: u64) -> String {
        format!("{}-v{visitor}", self.tag)
    }

    /// The visitor's request context: an address in 100.64.0.0/10 and a browser, fixed per
    /// visitor (spread wide enough that no address reaches the click-flood limit).
    fn context(&self, visitor: u64) -> v1::Context {
        let h = mix(self.salt ^ visitor);
        v1::Context {
            ip: format!(
                "100.{}.{}.{}",
                64 + (h >> 16 & 63),
                h >> 8 & 255,
                (h & 255).max(1)
            ),
            user_agent: USER_AGENTS[(h >> 32) as usize % USER_AGENTS.len()].to_owned(),
            ..Default::default()
        }
    }

    fn envelope(&mut self, at: i64, payload: v1::event::Payload) -> v1::Event {
        v1::Event {
            event_id: self.event_id(),
            occurred_at: Some(convert::to_timestamp(Timestamp::from_millis(at))),
            payload: Some(payload),
            ..Default::default()
        }
    }

    /// A creator's link, by Zipf popularity.
    fn popular_link(&mut self) -> usize {
        let rank = (self.zipf.sample(&mut self.rng) as usize).clamp(1, self.ranked.len());
        let creator = &self.creators[self.ranked[rank - 1]];
        creator.links[self.rng.random_range(0..creator.links.len())]
    }

    fn click(&mut self, at: i64, visitor: u64, link: usize) -> v1::Event {
        let l = &self.links[link];
        let click = v1::Click {
            visitor_id: self.visitor_id(visitor),
            link_code: l.code.clone(),
            utm: Some(v1::Utm {
                source: l.platform.to_owned(),
                medium: "social".to_owned(),
                campaign: self.campaigns[l.campaign].id.clone(),
                content: l.post_id.clone(),
                term: String::new(),
            }),
            landing_url: l.landing_url.clone(),
            referrer: format!("https://www.{}.com/", l.platform),
            ..Default::default()
        };
        let context = self.context(visitor);
        let mut event = self.envelope(at, v1::event::Payload::Click(click));
        event.context = Some(context);
        event
    }

    /// A new visitor arrives: a click on a popular creator's link (or, rarely, an order
    /// with a promo code seen in a video).
    fn new_visitor(&mut self, now: i64) -> v1::Event {
        self.next_visitor += 1;
        let visitor = self.next_visitor;
        if !self.codes.is_empty() && self.rng.random_bool(CODE_ONLY_VISITORS) {
            let code = self.rng.random_range(0..self.codes.len());
            return self.order(now, visitor, None, Some(code));
        }
        self.journey_click(now, visitor, 1)
    }

    /// Click number `clicks` of a visitor's journey; schedules the next click or the
    /// conversion.
    fn journey_click(&mut self, now: i64, visitor: u64, clicks: u32) -> v1::Event {
        let link = self.popular_link();
        let event = self.click(now, visitor, link);
        self.view_post(now, link);
        if clicks < MAX_CLICKS && self.rng.random_bool(ANOTHER_CLICK) {
            let at = now + self.delay(NEXT_CLICK_DELAY);
            self.schedule(
                at,
                Pending::Click {
                    visitor,
                    clicks: clicks + 1,
                },
            );
            return event;
        }
        let creator = &self.creators[self.links[link].creator];
        let (converts, rate) = match self.campaigns[self.links[link].campaign].converts {
            Converts::Orders => (Converts::Orders, creator.conversion_rate),
            Converts::Leads => (Converts::Leads, creator.signup_rate),
        };
        if self.rng.random_bool(rate) {
            let (lo, hi) = CONVERSION_DELAY;
            let at = now + self.delay((lo.max(self.min_gap_ms + SECOND), hi));
            let pending = match converts {
                Converts::Orders => Pending::Order {
                    visitor,
                    link: Some(link),
                    code: (!self.codes.is_empty() && self.rng.random_bool(PROMO_ON_ORDER))
                        .then(|| self.rng.random_range(0..self.codes.len())),
                },
                Converts::Leads => Pending::Signup { visitor },
            };
            self.schedule(at, pending);
        }
        event
    }

    /// A click on a link is a view of its post by someone who clicked: the post's counters
    /// grow by 1 / CTR views, and sometimes the platform reports them.
    fn view_post(&mut self, now: i64, link: usize) {
        let l = &self.links[link];
        if !self.campaigns[l.campaign].pays_engagement {
            return;
        }
        let creator = &self.creators[l.creator];
        let (ctr, likes) = (creator.ctr, creator.likes_per_view);
        let views = self.rng.random_range(0.5..1.5) / ctr;
        let post = &mut self.posts[link];
        post.views += views;
        post.likes += views * likes;
        if self.rng.random_bool(ENGAGEMENT_REPORT) {
            let at = now + self.delay(ENGAGEMENT_DELAY);
            self.schedule(at, Pending::Engagement { link });
        }
    }

    fn order(
        &mut self,
        now: i64,
        visitor: u64,
        link: Option<usize>,
        code: Option<usize>,
    ) -> v1::Event {
        self.next_order += 1;
        let order_id = format!("{}-o{}", self.tag, self.next_order);
        let campaign = match (link, code) {
            (Some(l), _) => self.links[l].campaign,
            (None, Some(c)) => self.codes[c].campaign,
            (None, None) => 0,
        };
        let (currency, digits) = {
            let c = &self.campaigns[campaign];
            (c.currency.clone(), c.minor_units)
        };
        let scale = 10u64.pow(digits);
        let major = self.amounts.sample(&mut self.rng).clamp(5.0, 2_000.0);
        let units = ((major * scale as f64).round() as u64).max(3);
        let items = match self.rng.random_range(0..10) {
            0..6 => 1,
            6..9 => 2,
            _ => 3,
        };
        let mut line_items = Vec::with_capacity(items);
        let mut left = units;
        for i in 0..items {
            let part = if i + 1 == items {
                left
            } else {
                let share = self.rng.random_range(0.2..0.6);
                ((left as f64 * share) as u64).clamp(1, left - (items - i - 1) as u64)
            };
            left -= part;
            let roll = self.rng.random_range(0..100);
            let mut acc = 0;
            let category = CATEGORIES
                .iter()
                .find(|(_, w)| {
                    acc += w;
                    roll < acc
                })
                .map_or("skincare", |(c, _)| c);
            let (quantity, unit) = if part % 2 == 0 && self.rng.random_bool(0.2) {
                (2, part / 2)
            } else {
                (1, part)
            };
            line_items.push(v1::LineItem {
                sku: format!("sku-{category}-{}", self.rng.random_range(1..=40)),
                category: category.to_owned(),
                quantity,
                unit_price: format_minor(unit, digits),
            });
        }
        let money = |units: u64| v1::Money {
            amount: format_minor(units, digits),
            currency: currency.clone(),
        };
        let customer = if self.rng.random_bool(KNOWN_CUSTOMER) {
            if !self.customers.is_empty() && self.rng.random_bool(RETURNING_CUSTOMER) {
                Some(self.customers[self.rng.random_range(0..self.customers.len())])
            } else {
                self.next_customer += 1;
                if self.customers.len() < 10_000 {
                    self.customers.push(self.next_customer);
                }
                Some(self.next_customer)
            }
        } else {
            None
        };
        let mut promo_codes = Vec::new();
        if let Some(c) = code {
            let code = &self.codes[c].code;
            promo_codes.push(if self.rng.random_bool(0.5) {
                code.to_lowercase()
            } else {
                code.clone()
            });
        }
        let tax = self
            .rng
            .random_bool(TAXED)
            .then(|| money((units as f64 * 0.0825).round() as u64))
            .filter(|m| m.amount != format_minor(0, digits));
        let order = v1::Order {
            visitor_id: self.visitor_id(visitor),
            order_id: order_id.clone(),
            amount: Some(money(units)),
            tax,
            line_items,
            promo_codes,
            email: format!(
                "{}-buyer{}@mail.example",
                self.tag,
                customer.unwrap_or(visitor)
            ),
            ..Default::default()
        };
        let context = self.context(visitor);
        let mut event = self.envelope(now, v1::event::Payload::Order(order));
        event.context = Some(context);
        if let Some(c) = customer {
            event.customer_id = format!("{}-c{c}", self.tag);
        }
        if self.rng.random_bool(REVERSAL_RATE) {
            let at = now + self.delay(REVERSAL_DELAY);
            self.schedule(
                at,
                Pending::Reversal {
                    order: order_id,
                    units,
                    campaign,
                },
            );
        }
        if let Some(link) = link {
            self.late_clicks(now, visitor, link);
        }
        event
    }

    /// Sometimes a click from before the order arrives after it: within the grace period
    /// (sent right after the order, so it still counts), or after it (sent after a newer
    /// click of the same visitor has moved that visitor's partition past the grace, so it
    /// is late everywhere, in replay as in the streaming attributor).
    fn late_clicks(&mut self, order_at: i64, visitor: u64, link: usize) {
        let before = self.min_gap_ms + SECOND + self.rng.random_range(0..2 * SECOND);
        let late_at = order_at - before;
        if self.grace_ms >= 2 * SECOND && self.rng.random_bool(LATE_IN_GRACE) {
            let sent = order_at + self.rng.random_range(1..self.grace_ms / 2);
            self.schedule(
                sent,
                Pending::LateClick {
                    visitor,
                    link,
                    at: late_at,
                    within_grace: true,
                },
            );
        } else if self.rng.random_bool(LATE_AFTER_GRACE) {
            let newer = order_at + self.grace_ms + 5 * SECOND;
            self.schedule(
                newer,
                Pending::NewerThenLate {
                    visitor,
                    link,
                    late_at,
                },
            );
        }
    }

    fn signup(&mut self, now: i64, visitor: u64) -> v1::Event {
        self.next_lead += 1;
        let lead = format!("{}-l{}", self.tag, self.next_lead);
        let signup = v1::Signup {
            visitor_id: self.visitor_id(visitor),
            lead_id: lead.clone(),
            email: format!("{}-lead{}@mail.example", self.tag, self.next_lead),
            ..Default::default()
        };
        let context = self.context(visitor);
        let mut event = self.envelope(now, v1::event::Payload::Signup(signup));
        event.context = Some(context);
        if self.rng.random_bool(LEAD_STATUS) {
            let at = now + self.delay(LEAD_STATUS_DELAY);
            self.schedule(at, Pending::LeadStatus { lead });
        }
        event
    }

    fn reversal(&mut self, now: i64, order: String, units: u64, campaign: usize) -> v1::Event {
        let (currency, digits) = {
            let c = &self.campaigns[campaign];
            (c.currency.clone(), c.minor_units)
        };
        let roll = self.rng.random_range(0..100);
        let (kind, amount, reason) = if roll < 85 {
            let partial = self.rng.random_bool(0.4) && units >= 5;
            let amount = partial.then(|| v1::Money {
                amount: format_minor(
                    (units as f64 * self.rng.random_range(0.2..0.5)).round() as u64,
                    digits,
                ),
                currency,
            });
            (
                v1::AdjustmentKind::Refund,
                amount,
                if partial {
                    "item returned"
                } else {
                    "order returned"
                },
            )
        } else if roll < 95 {
            (v1::AdjustmentKind::Cancel, None, "cancelled by customer")
        } else {
            (v1::AdjustmentKind::Chargeback, None, "payment disputed")
        };
        let adjustment = v1::Adjustment {
            order_id: order,
            kind: kind as i32,
            amount,
            reason: reason.to_owned(),
        };
        self.envelope(now, v1::event::Payload::Adjustment(adjustment))
    }

    fn engagement(&mut self, now: i64, link: usize) -> v1::Event {
        let l = &self.links[link];
        let post = self.posts[link];
        let likes = post.likes.floor() as u64;
        let engagement = v1::Engagement {
            creator_id: self.creators[l.creator].id.clone(),
            campaign_id: self.campaigns[l.campaign].id.clone(),
            post_id: l.post_id.clone(),
            platform: l.platform.to_owned(),
            views: post.views.floor() as u64,
            likes,
            comments: likes / 20,
            shares: likes / 35,
        };
        self.envelope(now, v1::event::Payload::Engagement(engagement))
    }

    fn materialize(&mut self, now: i64, pending: Pending) -> v1::Event {
        match pending {
            Pending::Click { visitor, clicks } => self.journey_click(now, visitor, clicks),
            Pending::Order {
                visitor,
                link,
                code,
            } => self.order(now, visitor, link, code),
            Pending::Signup { visitor } => self.signup(now, visitor),
            Pending::LeadStatus { lead } => {
                let status = if self.rng.random_bool(QUALIFIED) {
                    v1::LeadQualification::Qualified
                } else {
                    v1::LeadQualification::Rejected
                };
                self.envelope(
                    now,
                    v1::event::Payload::LeadStatus(v1::LeadStatus {
                        lead_id: lead,
                        status: status as i32,
                    }),
                )
            }
            Pending::Reversal {
                order,
                units,
                campaign,
            } => self.reversal(now, order, units, campaign),
            Pending::LateClick {
                visitor,
                link,
                at,
                within_grace,
            } => {
                if within_grace {
                    self.generated.late_in_grace += 1;
                } else {
                    self.generated.late_after_grace += 1;
                }
                self.click(at, visitor, link)
            }
            Pending::NewerThenLate {
                visitor,
                link,
                late_at,
            } => {
                let sent = now + self.rng.random_range(SECOND / 10..SECOND);
                self.schedule(
                    sent,
                    Pending::LateClick {
                        visitor,
                        link,
                        at: late_at,
                        within_grace: false,
                    },
                );
                let newer = self.popular_link();
                self.click(now, visitor, newer)
            }
            Pending::Engagement { link } => self.engagement(now, link),
            Pending::Resend(event) => {
                self.generated.resent += 1;
                *event
            }
        }
    }
}

impl Iterator for Generator {
    type Item = v1::Event;

    /// The next event in send order: the earliest follow-up that is due, else a new
    /// visitor.
    fn next(&mut self) -> Option<v1::Event> {
        let now = self.slot_ms(self.slot);
        self.slot += 1;
        let due = match self.heap.peek() {
            Some(Reverse((at, id))) if *at <= now => Some(*id),
            _ => None,
        };
        let event = match due.and_then(|id| {
            self.heap.pop();
            self.pending.remove(&id)
        }) {
            Some(pending) => self.materialize(now, pending),
            None => self.new_visitor(now),
        };
        let resent = self.generated.resent;
        *self
            .generated
            .by_type
            .entry(payload_type(&event))
            .or_default() += 1;
        if resent == self.generated.resent && self.rng.random_bool(RESEND_RATE) {
            let at = now + self.delay(RESEND_DELAY);
            self.schedule(at, Pending::Resend(Box::new(event.clone())));
        }
        Some(event)
    }
}

/// The payload's type name (`click`, `signup`, `order`, `adjustment`, `lead_status`,
/// `engagement`).
pub fn payload_type(event: &v1::Event) -> &'static str {
    use v1::event::Payload;
    match event.payload {
        Some(Payload::Click(_)) => "click",
        Some(Payload::Signup(_)) => "signup",
        Some(Payload::Order(_)) => "order",
        Some(Payload::Adjustment(_)) => "adjustment",
        Some(Payload::LeadStatus(_)) => "lead_status",
        Some(Payload::Engagement(_)) => "engagement",
        None => "none",
    }
}

/// A progress report, once a second while the run goes on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    /// Since the run started.
    pub elapsed: Duration,
    /// Events handed to the connection.
    pub sent: u64,
    /// Events answered accepted or duplicate.
    pub ok: u64,
    /// Events rejected or in a failed request.
    pub errors: u64,
    /// Events sent per second since the previous report.
    pub rate: f64,
    /// How far sending trails the --rate schedule (zero when on time or with --rate 0).
    pub behind: Duration,
}

impl fmt::Display for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "loadgen {:>5.1}s  sent {}  ok {}  errors {}  {:.0} events/s",
            self.elapsed.as_secs_f64(),
            self.sent,
            self.ok,
            self.errors,
            self.rate
        )?;
        if self.behind >= Duration::from_millis(100) {
            write!(f, "  behind schedule {:.1}s", self.behind.as_secs_f64())?;
        }
        Ok(())
    }
}

/// Request latency percentiles, in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Latency {
    /// Requests answered (successfully or not).
    pub requests: u64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// Slowest.
    pub max: u64,
}

/// Events of failed requests with one gRPC status code.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Failed {
    /// Requests that failed with the code.
    pub requests: u64,
    /// Events in them.
    pub events: u64,
}

/// The outcome of a run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    /// The generator's seed.
    pub seed: u64,
    /// Event time of the first event.
    pub start_time: Timestamp,
    /// From the first request to the last answer.
    pub elapsed: Duration,
    /// Events sent.
    pub sent: u64,
    /// Events answered `ACCEPTED`.
    pub accepted: u64,
    /// Events answered `DUPLICATE`.
    pub duplicates: u64,
    /// Events answered `REJECTED`, by the first violated rule.
    pub rejected: BTreeMap<String, u64>,
    /// Failed requests by gRPC status code (`UNAVAILABLE`, ...).
    pub failed: BTreeMap<String, Failed>,
    /// What was generated (events by type, resends, late clicks).
    pub generated: Generated,
    /// Request latency.
    pub latency: Latency,
    /// Whether the run was interrupted before its end.
    pub interrupted: bool,
}

impl Summary {
    /// Events answered accepted or duplicate.
    pub fn ok(&self) -> u64 {
        self.accepted + self.duplicates
    }

    /// Events rejected or in failed requests.
    pub fn errors(&self) -> u64 {
        self.rejected.values().sum::<u64>() + self.failed.values().map(|f| f.events).sum::<u64>()
    }

    /// Events sent per second.
    pub fn achieved_rate(&self) -> f64 {
        per_second(self.sent, self.elapsed)
    }
}

fn per_second(n: u64, elapsed: Duration) -> f64 {
    if elapsed.is_zero() {
        return 0.0;
    }
    n as f64 / elapsed.as_secs_f64()
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |us: u64| us as f64 / 1_000.0;
        writeln!(
            f,
            "payoff loadgen: {} events in {:.2}s{}: {:.0} events/s sent, {:.0} events/s acknowledged (seed {}, event times from {})",
            self.sent,
            self.elapsed.as_secs_f64(),
            if self.interrupted {
                " (interrupted)"
            } else {
                ""
            },
            self.achieved_rate(),
            per_second(self.ok(), self.elapsed),
            self.seed,
            self.start_time
        )?;
        let types: Vec<String> = self
            .generated
            .by_type
            .iter()
            .map(|(t, n)| format!("{t} {n}"))
            .collect();
        writeln!(f, "  events by type: {}", types.join(", "))?;
        writeln!(
            f,
            "  of which resent (same id) {}, late clicks {} within grace and {} after",
            self.generated.resent, self.generated.late_in_grace, self.generated.late_after_grace
        )?;
        writeln!(
            f,
            "  results: accepted {}, duplicate {}, rejected {}",
            self.accepted,
            self.duplicates,
            self.rejected.values().sum::<u64>()
        )?;
        for (rule, n) in &self.rejected {
            writeln!(f, "    rejected {rule}: {n}")?;
        }
        if self.failed.is_empty() {
            writeln!(f, "  errors by status: none")?;
        } else {
            writeln!(f, "  errors by status:")?;
            for (code, failed) in &self.failed {
                writeln!(
                    f,
                    "    {code}: {} events in {} requests",
                    failed.events, failed.requests
                )?;
            }
        }
        write!(
            f,
            "  latency per request ({} requests): p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            self.latency.requests,
            ms(self.latency.p50),
            ms(self.latency.p90),
            ms(self.latency.p99),
            ms(self.latency.max)
        )
    }
}

/// When to stop.
#[derive(Debug, Clone, Copy)]
enum Stop {
    After(Duration),
    Events(u64),
}

/// The arguments, checked, with every problem named.
struct Plan {
    seed: u64,
    start: Timestamp,
    clock_rate: u32,
    stop: Stop,
    auth: MetadataValue<tonic::metadata::Ascii>,
}

impl Plan {
    fn new(args: &LoadgenArgs) -> anyhow::Result<Self> {
        let mut problems = Vec::new();
        if !args.endpoint.starts_with("http://") {
            problems.push(format!(
                "--endpoint {:?}: only plaintext http:// endpoints are supported",
                args.endpoint
            ));
        }
        let auth = format!("Bearer {}", args.api_key).parse().ok();
        if args.api_key.is_empty() || auth.is_none() {
            problems.push("--api-key must be a non-empty printable secret".to_owned());
        }
        if args.concurrency == 0 || args.batch == 0 {
            problems.push("--concurrency and --batch must be positive".to_owned());
        }
        let clock_rate = args.clock_rate.unwrap_or(if args.rate > 0 {
            args.rate
        } else {
            DEFAULT_CLOCK_RATE
        });
        if clock_rate == 0 {
            problems.push("--clock-rate must be positive".to_owned());
        }
        let start = match &args.start_time {
            None => Some(Timestamp::from_millis(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
            )),
            Some(text) => {
                let parsed = Timestamp::parse_rfc3339(text);
                if parsed.is_none() {
                    problems.push(format!("--start-time {text:?} is not an RFC 3339 instant"));
                }
                parsed
            }
        };
        let stop = match (args.events, args.duration) {
            (Some(n), _) => Stop::Events(n),
            (None, Some(d)) => Stop::After(d),
            (None, None) => Stop::After(DEFAULT_DURATION),
        };
        if matches!(stop, Stop::Events(0)) || matches!(stop, Stop::After(d) if d.is_zero()) {
            problems.push("--events and --duration must be positive".to_owned());
        }
        match (problems.is_empty(), start, auth) {
            (true, Some(start), Some(auth)) => Ok(Self {
                seed: args.seed.unwrap_or_else(rand::random),
                start,
                clock_rate,
                stop,
                auth,
            }),
            _ => bail!("invalid arguments:\n  {}", problems.join("\n  ")),
        }
    }
}

/// Counters shared by the requests in flight.
struct Tally {
    accepted: u64,
    duplicates: u64,
    rejected: BTreeMap<String, u64>,
    failed: BTreeMap<String, Failed>,
    latency: Histogram<u64>,
}

impl Tally {
    fn new() -> anyhow::Result<Self> {
        Ok(Self {
            accepted: 0,
            duplicates: 0,
            rejected: BTreeMap::new(),
            failed: BTreeMap::new(),
            // 1 µs to 10 minutes, 3 significant digits.
            latency: Histogram::new_with_bounds(1, 600_000_000, 3)?,
        })
    }

    fn ok(&self) -> u64 {
        self.accepted + self.duplicates
    }

    fn errors(&self) -> u64 {
        self.rejected.values().sum::<u64>() + self.failed.values().map(|f| f.events).sum::<u64>()
    }

    fn item(&mut self, result: &v1::EventResult) {
        match ItemStatus::try_from(result.status) {
            Ok(ItemStatus::Accepted) => self.accepted += 1,
            Ok(ItemStatus::Duplicate) => self.duplicates += 1,
            Ok(ItemStatus::Rejected) => {
                let rule = result
                    .violations
                    .first()
                    .map_or("unknown", |v| v.rule.as_str());
                *self.rejected.entry(rule.to_owned()).or_default() += 1;
            }
            _ => *self.rejected.entry("no_status".to_owned()).or_default() += 1,
        }
    }

    fn failure(&mut self, code: &str, events: u64) {
        let failed = self.failed.entry(code.to_owned()).or_default();
        failed.requests += 1;
        failed.events += events;
    }
}

/// A gRPC status code as its canonical name (`RESOURCE_EXHAUSTED`).
fn code_name(code: tonic::Code) -> String {
    let mut name = String::new();
    for (i, c) in format!("{code:?}").chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            name.push('_');
        }
        name.push(c.to_ascii_uppercase());
    }
    name
}

struct Shared {
    tally: Mutex<Tally>,
    sent: AtomicU64,
    behind_us: AtomicU64,
}

impl Shared {
    fn tally(&self) -> std::sync::MutexGuard<'_, Tally> {
        self.tally
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Sends one request of `events` and tallies the answer.
async fn send(
    mut client: IngestClient<Channel>,
    auth: MetadataValue<tonic::metadata::Ascii>,
    events: Vec<v1::Event>,
    shared: Arc<Shared>,
) {
    let n = events.len() as u64;
    let started = Instant::now();
    let answer = if events.len() == 1 {
        let mut request = tonic::Request::new(v1::SendRequest {
            event: events.into_iter().next(),
        });
        request.metadata_mut().insert("authorization", auth);
        client
            .send(request)
            .await
            .map(|r| r.into_inner().result.into_iter().collect::<Vec<_>>())
    } else {
        let mut request = tonic::Request::new(v1::SendBatchRequest { events });
        request.metadata_mut().insert("authorization", auth);
        client
            .send_batch(request)
            .await
            .map(|r| r.into_inner().results)
    };
    let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    let mut tally = shared.tally();
    tally.latency.saturating_record(micros.max(1));
    match answer {
        Ok(results) if results.len() as u64 == n => {
            for r in &results {
                tally.item(r);
            }
        }
        Ok(_) => tally.failure("RESULT_COUNT_MISMATCH", n),
        Err(status) => tally.failure(&code_name(status.code()), n),
    }
}

/// Writes each event as one line of canonical proto3 JSON.
struct Recorder(Option<BufWriter<std::fs::File>>);

impl Recorder {
    fn open(path: Option<&Path>) -> anyhow::Result<Self> {
        let Some(path) = path else {
            return Ok(Self(None));
        };
        let file = std::fs::File::create(path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        Ok(Self(Some(BufWriter::new(file))))
    }

    fn write(&mut self, events: &[v1::Event]) -> anyhow::Result<()> {
        let Some(out) = &mut self.0 else {
            return Ok(());
        };
        for e in events {
            serde_json::to_writer(&mut *out, e)?;
            out.write_all(b"\n")?;
        }
        Ok(())
    }

    fn finish(self) -> anyhow::Result<()> {
        if let Some(mut out) = self.0 {
            out.flush()?;
            out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        }
        Ok(())
    }
}

/// Runs the load until its end (see [`run_until`]).
pub async fn run(args: &LoadgenArgs, progress: impl FnMut(&Progress)) -> anyhow::Result<Summary> {
    run_until(args, CancellationToken::new(), progress).await
}

/// Generates and sends events until --duration or --events, or until `shutdown`, then
/// waits for the requests in flight; calls `progress` once a second meanwhile.
pub async fn run_until(
    args: &LoadgenArgs,
    shutdown: CancellationToken,
    mut progress: impl FnMut(&Progress),
) -> anyhow::Result<Summary> {
    let plan = Plan::new(args)?;
    let program = load_program(&args.program)?;
    let mut generator = Generator::new(&program, plan.seed, plan.start, plan.clock_rate)?;
    let mut recorder = Recorder::open(args.record.as_deref())?;
    let channel = tonic::transport::Endpoint::from_shared(args.endpoint.clone())
        .with_context(|| format!("--endpoint {:?} is not a URI", args.endpoint))?
        .timeout(args.timeout)
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .with_context(|| format!("cannot connect to ingest at {}", args.endpoint))?;
    let client = IngestClient::new(channel);
    let shared = Arc::new(Shared {
        tally: Mutex::new(Tally::new()?),
        sent: AtomicU64::new(0),
        behind_us: AtomicU64::new(0),
    });
    let permits = Arc::new(Semaphore::new(args.concurrency));
    let started = Instant::now();

    let dispatch = async {
        let mut sent = 0u64;
        loop {
            let n = match plan.stop {
                Stop::Events(total) => (total - sent).min(args.batch as u64),
                Stop::After(_) => args.batch as u64,
            };
            if n == 0 {
                break;
            }
            if args.rate > 0 {
                let due = started
                    + Duration::from_nanos(
                        u64::try_from(u128::from(sent) * 1_000_000_000 / u128::from(args.rate))
                            .unwrap_or(u64::MAX),
                    );
                if let Stop::After(d) = plan.stop
                    && due >= started + d
                {
                    break;
                }
                tokio::select! {
                    () = tokio::time::sleep_until(due) => {}
                    () = shutdown.cancelled() => break,
                }
                let behind = Instant::now().saturating_duration_since(due);
                shared.behind_us.store(
                    u64::try_from(behind.as_micros()).unwrap_or(u64::MAX),
                    Ordering::Relaxed,
                );
            } else if let Stop::After(d) = plan.stop
                && started.elapsed() >= d
            {
                break;
            }
            let permit = tokio::select! {
                p = permits.clone().acquire_owned() => p?,
                () = shutdown.cancelled() => break,
            };
            let events: Vec<v1::Event> = generator.by_ref().take(n as usize).collect();
            recorder.write(&events)?;
            sent += n;
            shared.sent.store(sent, Ordering::Relaxed);
            let (client, auth, shared) = (client.clone(), plan.auth.clone(), shared.clone());
            tokio::spawn(async move {
                send(client, auth, events, shared).await;
                drop(permit);
            });
        }
        // Wait for every request in flight.
        let all = u32::try_from(args.concurrency).unwrap_or(u32::MAX);
        let _drained = permits.acquire_many(all).await?;
        anyhow::Ok(())
    };
    let mut tick =
        tokio::time::interval_at(started + Duration::from_secs(1), Duration::from_secs(1));
    let mut last = (started, 0u64);
    let mut dispatch = Box::pin(dispatch);
    loop {
        tokio::select! {
            done = &mut dispatch => {
                done?;
                break;
            }
            now = tick.tick() => {
                let sent = shared.sent.load(Ordering::Relaxed);
                let (ok, errors) = {
                    let t = shared.tally();
                    (t.ok(), t.errors())
                };
                progress(&Progress {
                    elapsed: now - started,
                    sent,
                    ok,
                    errors,
                    rate: per_second(sent - last.1, now - last.0),
                    behind: Duration::from_micros(shared.behind_us.load(Ordering::Relaxed)),
                });
                last = (now, sent);
            }
        }
    }
    drop(dispatch);
    let elapsed = started.elapsed();
    recorder.finish()?;
    let tally = shared.tally();
    let h = &tally.latency;
    Ok(Summary {
        seed: plan.seed,
        start_time: plan.start,
        elapsed,
        sent: shared.sent.load(Ordering::Relaxed),
        accepted: tally.accepted,
        duplicates: tally.duplicates,
        rejected: tally.rejected.clone(),
        failed: tally.failed.clone(),
        generated: generator.generated().clone(),
        latency: Latency {
            requests: h.len(),
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            max: h.max(),
        },
        interrupted: shutdown.is_cancelled(),
    })
}

/// `payoff loadgen`: progress on standard error, the summary on standard output; Ctrl-C
/// stops sending and still prints the summary.
pub async fn command(args: &LoadgenArgs) -> anyhow::Result<()> {
    let mut args = args.clone();
    let seed = *args.seed.get_or_insert_with(rand::random);
    eprintln!(
        "payoff loadgen: seed {seed}, {} to {}",
        match args.rate {
            0 => "as fast as possible".to_owned(),
            r => format!("{r} events/s"),
        },
        args.endpoint
    );
    let shutdown = CancellationToken::new();
    let on_signal = shutdown.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            on_signal.cancel();
        }
    });
    let summary = run_until(&args, shutdown, |p| eprintln!("{p}")).await?;
    println!("{summary}");
    if summary.errors() > 0 && args.record.is_some() {
        eprintln!(
            "payoff loadgen: {} events were not accepted; the record holds every event sent, so a replay of it counts them",
            summary.errors()
        );
    }
    Ok(())
}
