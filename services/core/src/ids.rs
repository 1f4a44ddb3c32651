//! Identifier newtypes and deterministic derived ids.
//!
//! Client-chosen ids (event, visitor, order, ...) are validated once at the edge (§4:
//! non-empty, at most 128 bytes, no control characters) and then carried as an
//! [`EcoString`]: up to 15 bytes inline, so that cloning or dropping one is a copy, and
//! longer ones shared behind a reference count. (With `Arc<str>` every clone and drop was
//! an atomic operation, about 10 ns each on our machines, and a click made about twenty.)
//! Derived ids (credits, ledger entries) are a 128-bit xxh3 of their cause, so
//! reprocessing the same cause always yields the same id.

use std::fmt;

use ecow::EcoString;
use serde::{Deserialize, Serialize};

use crate::error::Violation;

/// Longest id accepted, in bytes (§4).
pub const MAX_ID_BYTES: usize = 128;

/// Checks the §4 id rules for a client-chosen id.
pub fn check_id(field: &str, value: &str) -> Result<(), Violation> {
    if value.is_empty() {
        return Err(Violation::new(field, "required", "must not be empty"));
    }
    if value.len() > MAX_ID_BYTES {
        return Err(Violation::new(
            field,
            "too_long",
            format!("is {} bytes, at most {MAX_ID_BYTES} allowed", value.len()),
        ));
    }
    if has_control(value) {
        return Err(Violation::new(
            field,
            "control_character",
            "must not contain control characters",
        ));
    }
    Ok(())
}

/// Whether `value` holds a control character (Unicode general category Cc: U+0000 to
/// U+001F and U+007F to U+009F). Printable ASCII, nearly every id, is judged a byte at a
/// time without decoding UTF-8, sixteen bytes at once.
pub fn has_control(value: &str) -> bool {
    if printable_ascii(value.as_bytes()) {
        return false;
    }
    value.chars().any(char::is_control)
}

/// Whether every byte is printable ASCII (0x20 to 0x7e).
fn printable_ascii(bytes: &[u8]) -> bool {
    let printable = |b: u8| b.wrapping_sub(0x20) < 0x5f;
    let mut chunks = bytes.chunks_exact(16);
    for chunk in &mut chunks {
        // No early exit within a chunk, so the compiler checks its bytes side by side.
        if !chunk.iter().fold(true, |all, &b| all & printable(b)) {
            return false;
        }
    }
    chunks.remainder().iter().all(|&b| printable(b))
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(EcoString);

        /// By text; one shared text is equal without comparing it (the program's own ids
        /// are looked up with themselves).
        impl Ord for $name {
            fn cmp(&self, other: &Self) -> std::cmp::Ordering {
                let (a, b) = (self.0.as_str(), other.0.as_str());
                if std::ptr::eq(a, b) {
                    std::cmp::Ordering::Equal
                } else {
                    a.cmp(b)
                }
            }
        }

        impl PartialOrd for $name {
            fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
                Some(self.cmp(other))
            }
        }

        impl $name {
            /// Validates `value` with the §4 id rules, naming `field` on failure.
            pub fn parse(field: &str, value: &str) -> Result<Self, Violation> {
                check_id(field, value)?;
                Ok(Self(EcoString::from(value)))
            }

            /// Wraps a value that is already known to be valid (tests, derived values).
            ///
            /// # Panics
            /// In debug builds, when the value breaks the id rules.
            pub fn new(value: &str) -> Self {
                debug_assert!(check_id("id", value).is_ok(), "invalid id {value:?}");
                Self(EcoString::from(value))
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), &*self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        /// A clone: what a map keyed by the id stores when it is looked up by reference
        /// (`hashbrown`'s `entry_ref`), only if the key is new.
        impl From<&$name> for $name {
            fn from(id: &$name) -> Self {
                id.clone()
            }
        }
    };
}

id_type!(
    /// A brand: the isolation boundary (§3). Always taken from credentials.
    TenantId
);
id_type!(
    /// Client-chosen idempotency key of an event.
    EventId
);
id_type!(
    /// First-party visitor id (cookie or device) from the storefront.
    VisitorId
);
id_type!(
    /// The brand's customer account id.
    CustomerId
);
id_type!(
    /// A creator (influencer, affiliate).
    CreatorId
);
id_type!(
    /// A campaign of a tenant's program.
    CampaignId
);
id_type!(
    /// The code of a tracking link.
    LinkCode
);
id_type!(
    /// An order id from the storefront.
    OrderId
);
id_type!(
    /// A lead id from the storefront.
    LeadId
);
id_type!(
    /// A commission plan within a campaign.
    PlanId
);
id_type!(
    /// A social post, for engagement events.
    PostId
);
id_type!(
    /// A payout or manual adjustment recorded through Admin.
    RecordId
);

/// A promo code. Codes are case-insensitive (§3): the stored form is upper-cased.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PromoCode(EcoString);

impl PromoCode {
    /// Validates and normalises a promo code.
    pub fn parse(field: &str, value: &str) -> Result<Self, Violation> {
        check_id(field, value)?;
        Ok(Self(EcoString::from(value.to_uppercase())))
    }

    /// The normalised (upper-case) code.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for PromoCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PromoCode({:?})", &*self.0)
    }
}

impl fmt::Display for PromoCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Causes up to this many bytes (with length prefixes) are hashed from a stack buffer.
const DERIVE_BUFFER: usize = 512;
/// The buffer for the usual short causes.
const SMALL_DERIVE_BUFFER: usize = 128;

/// The one-shot xxh3 of `kind` and the length-prefixed `parts` (`len` bytes in all, at
/// most `N`), from a stack buffer.
fn hash_parts<const N: usize>(kind: &str, parts: &[&str], len: usize) -> u128 {
    let mut buf = [0u8; N];
    let mut at = 0;
    let mut put = |bytes: &[u8]| {
        buf[at..at + bytes.len()].copy_from_slice(bytes);
        at += bytes.len();
    };
    put(kind.as_bytes());
    for part in parts {
        put(&(part.len() as u64).to_le_bytes());
        put(part.as_bytes());
    }
    xxhash_rust::xxh3::xxh3_128(&buf[..len])
}

/// Longest kind prefix of a derived id.
pub const MAX_KIND_BYTES: usize = 7;
/// Longest derived id text: kind, `_`, 32 hex digits.
const DERIVED_TEXT_BYTES: usize = MAX_KIND_BYTES + 1 + 32;

/// A derived id's text in a stack buffer (see [`DerivedId::text`]).
#[derive(Clone, Copy)]
pub struct DerivedText {
    buf: [u8; DERIVED_TEXT_BYTES],
    len: usize,
}

impl DerivedText {
    /// The text.
    pub fn as_str(&self) -> &str {
        // Built from an ASCII kind, `_` and hex digits.
        std::str::from_utf8(self.as_bytes()).unwrap_or_default()
    }

    /// The text's bytes (ASCII), for writers of bytes that need no UTF-8 check.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// A derived id: 128 bits of xxh3 over the length-prefixed parts of its cause, shown as
/// a kind prefix and 32 hex digits (`acc_1f...`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DerivedId {
    kind: &'static str,
    hash: u128,
}

impl DerivedId {
    /// Hashes `parts` (each length-prefixed, so `("ab","c")` differs from `("a","bc")`).
    ///
    /// # Panics
    /// When `kind` is longer than [`MAX_KIND_BYTES`] (kinds are short constants).
    pub fn derive(kind: &'static str, parts: &[&str]) -> Self {
        assert!(
            kind.len() <= MAX_KIND_BYTES,
            "derived id kind {kind:?} too long"
        );
        // The hash of the concatenation, one-shot from a stack buffer when it fits (the
        // streaming hasher is large to set up); both give the same digest.
        let len = kind.len() + parts.iter().map(|p| 8 + p.len()).sum::<usize>();
        let hash = if len <= SMALL_DERIVE_BUFFER {
            // Most causes are two or three short ids: a small buffer is cheaper to clear.
            hash_parts::<SMALL_DERIVE_BUFFER>(kind, parts, len)
        } else if len <= DERIVE_BUFFER {
            hash_parts::<DERIVE_BUFFER>(kind, parts, len)
        } else {
            let mut hasher = xxhash_rust::xxh3::Xxh3::new();
            hasher.update(kind.as_bytes());
            for part in parts {
                hasher.update(&(part.len() as u64).to_le_bytes());
                hasher.update(part.as_bytes());
            }
            hasher.digest128()
        };
        Self { kind, hash }
    }

    /// The id as text: kind, `_`, 32 lower-case hex digits.
    pub fn to_text(self) -> String {
        self.text().as_str().to_owned()
    }

    /// The id as text, on the stack: what derived ids hash when one cause is another id.
    pub fn text(self) -> DerivedText {
        let mut buf = [0u8; DERIVED_TEXT_BYTES];
        let kind = self.kind.as_bytes();
        let len = kind.len() + 1 + 32;
        buf[..kind.len()].copy_from_slice(kind);
        buf[kind.len()] = b'_';
        buf[kind.len() + 1..len].copy_from_slice(&self.hex());
        DerivedText { buf, len }
    }

    /// Parses the text form ([`DerivedId::to_text`]): a known kind prefix, `_` and
    /// exactly 32 lower-case hex digits, naming `field` on failure.
    pub fn parse(field: &str, text: &str) -> Result<Self, Violation> {
        let malformed = |detail: String| Violation::new(field, "malformed_id", detail);
        let (kind, hex) = text
            .split_once('_')
            .ok_or_else(|| malformed(format!("{text:?} has no kind prefix")))?;
        let kind = DERIVED_KINDS
            .iter()
            .find(|k| **k == kind)
            .ok_or_else(|| malformed(format!("{kind:?} is not a derived id kind")))?;
        if hex.len() != 32 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(malformed(format!(
                "{text:?} must end in 32 lower-case hex digits"
            )));
        }
        let hash =
            u128::from_str_radix(hex, 16).map_err(|e| malformed(format!("{text:?}: {e}")))?;
        Ok(Self { kind, hash })
    }

    /// The 128-bit hash (an xxh3 of the kind and cause).
    pub(crate) fn digest(self) -> u128 {
        self.hash
    }

    /// The hash as 32 lower-case hex digits (what `{:032x}` prints, without its
    /// formatting machinery: ids are printed on the hot path).
    fn hex(self) -> [u8; 32] {
        // Each byte's two digits, looked up at once.
        const PAIRS: [[u8; 2]; 256] = {
            const DIGITS: &[u8; 16] = b"0123456789abcdef";
            let mut pairs = [[0u8; 2]; 256];
            let mut i = 0;
            while i < 256 {
                pairs[i] = [DIGITS[i >> 4], DIGITS[i & 0xf]];
                i += 1;
            }
            pairs
        };
        let mut out = [0u8; 32];
        for (pair, byte) in out.chunks_exact_mut(2).zip(self.hash.to_be_bytes()) {
            pair.copy_from_slice(&PAIRS[usize::from(byte)]);
        }
        out
    }
}

impl fmt::Display for DerivedId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.text().as_str())
    }
}

impl fmt::Debug for DerivedId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for DerivedId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.text().as_str())
    }
}

impl<'de> Deserialize<'de> for DerivedId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        /// Reads the text without copying it where the format lends it.
        struct Text;
        impl serde::de::Visitor<'_> for Text {
            type Value = DerivedId;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a derived id (kind, `_`, 32 hex digits)")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<DerivedId, E> {
                DerivedId::parse("id", text).map_err(|e| E::custom(e.detail))
            }
        }
        d.deserialize_str(Text)
    }
}

/// Every kind prefix the core derives ids with.
pub const DERIVED_KINDS: &[&str] = &[
    "crd", "rev", "lst", "acc", "rvs", "bon", "bnr", "fee", "eng", "pay", "adj",
];

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// The byte-wise fast path judges every string as the `char` test does.
        #[test]
        fn has_control_agrees_with_char_is_control(value in "\\PC*|[\\x00-\\x{a0}]{0,8}|.{0,8}") {
            proptest::prop_assert_eq!(has_control(&value), value.chars().any(char::is_control));
        }

        /// Ids short enough to be kept inline and long ones alike compare, equal and hash
        /// as their text, whether or not they share it, and serialize as it.
        #[test]
        fn ids_compare_and_serialize_as_their_text(
            a in "[a-z0-9-]{1,40}",
            b in "[a-z0-9-]{1,40}",
        ) {
            use std::hash::BuildHasher;
            let (x, y) = (CreatorId::new(&a), CreatorId::new(&b));
            proptest::prop_assert_eq!(x.cmp(&y), a.cmp(&b));
            proptest::prop_assert_eq!(x == y, a == b);
            let shared = x.clone();
            proptest::prop_assert_eq!(x.cmp(&shared), std::cmp::Ordering::Equal);
            let apart = CreatorId::new(&a);
            proptest::prop_assert_eq!(x.cmp(&apart), std::cmp::Ordering::Equal);
            let hasher = std::hash::RandomState::new();
            proptest::prop_assert_eq!(hasher.hash_one(&x), hasher.hash_one(&apart));
            let json = serde_json::to_string(&x).unwrap_or_default();
            proptest::prop_assert_eq!(json, serde_json::to_string(&a).unwrap_or_default());
            proptest::prop_assert_eq!(x.as_str(), a.as_str());
        }
    }

    #[test]
    fn controls_at_the_edges_of_ascii_and_latin1_are_found() {
        for c in ['\u{0}', '\u{1f}', '\u{7f}', '\u{80}', '\u{9f}'] {
            assert!(has_control(&format!("id{c}x")), "{c:?}");
        }
        for c in [' ', '~', '\u{a0}', 'é', '€'] {
            assert!(!has_control(&format!("id{c}x")), "{c:?}");
        }
    }

    #[test]
    fn id_rules_name_the_field() {
        assert_eq!(check_id("order_id", "").unwrap_err().rule, "required");
        assert_eq!(
            check_id("order_id", &"x".repeat(129)).unwrap_err().rule,
            "too_long"
        );
        assert!(check_id("order_id", &"x".repeat(128)).is_ok());
        let e = check_id("order_id", "a\u{7}b").unwrap_err();
        assert_eq!(
            (e.field.as_str(), e.rule),
            ("order_id", "control_character")
        );
    }

    #[test]
    fn short_and_long_causes_hash_like_the_streaming_hasher() {
        let streamed = |kind: &str, parts: &[&str]| {
            let mut h = xxhash_rust::xxh3::Xxh3::new();
            h.update(kind.as_bytes());
            for p in parts {
                h.update(&(p.len() as u64).to_le_bytes());
                h.update(p.as_bytes());
            }
            h.digest128()
        };
        let long = "y".repeat(600);
        for parts in [
            &["ab", "c"][..],
            &["x"; 3][..],
            &[long.as_str(), "z"][..],
            &[][..],
        ] {
            assert_eq!(DerivedId::derive("acc", parts).hash, streamed("acc", parts));
        }
    }

    #[test]
    fn derived_ids_are_stable_and_prefix_free() {
        let a = DerivedId::derive("acc", &["ab", "c"]);
        assert_eq!(a, DerivedId::derive("acc", &["ab", "c"]));
        assert_ne!(a, DerivedId::derive("acc", &["a", "bc"]));
        let text = a.to_text();
        assert_eq!(text, format!("acc_{:032x}", a.hash));
        assert_eq!(text, a.to_string());
        let back: DerivedId = serde_json::from_str(&format!("\"{text}\"")).unwrap();
        assert_eq!(back, a);
        assert_eq!(DerivedId::parse("id", &text).unwrap(), a);
    }

    #[test]
    fn derived_ids_parse_only_their_text_form() {
        let text = DerivedId::derive("rvs", &["x"]).to_text();
        for bad in [
            "",
            "rvs",
            &text.replace("rvs_", "zzz_"),
            &text.to_uppercase().replace("RVS", "rvs"),
            &text[..text.len() - 1],
            &format!("{text}0"),
            "rvs_+0000000000000000000000000000000",
        ] {
            let e = DerivedId::parse("refers_to", bad).unwrap_err();
            assert_eq!(
                (e.field.as_str(), e.rule),
                ("refers_to", "malformed_id"),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn promo_codes_are_case_insensitive() {
        assert_eq!(
            PromoCode::parse("c", "Anna10").unwrap(),
            PromoCode::parse("c", "ANNA10").unwrap()
        );
    }
}
