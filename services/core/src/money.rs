//! Money: an exact decimal amount in an ISO 4217 currency (§6).
//!
//! Amounts never pass through floating point. Every ledger amount is rounded to the
//! currency's minor unit, half to even; a split allocates the rounded whole so that the
//! parts add up to it exactly, the remainder going to the last part.

use std::{fmt, str::FromStr};

use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};

use crate::error::Violation;

/// An ISO 4217 currency with a known number of minor units (USD 2, JPY 0, KWD 3).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Currency {
    code: [u8; 3],
    minor_units: u32,
}

impl Currency {
    /// Parses an ISO 4217 alphabetic code. Codes without minor units (XAU, XDR, ...) are
    /// refused: they are not money a creator can be paid in.
    pub fn parse(field: &str, code: &str) -> Result<Self, Violation> {
        let unknown = || {
            Violation::new(
                field,
                "unknown_currency",
                format!("{code:?} is not an ISO 4217 currency code"),
            )
        };
        let iso = iso_currency::Currency::from_code(code).ok_or_else(unknown)?;
        let minor_units = u32::from(iso.exponent().ok_or_else(unknown)?);
        let bytes = code.as_bytes();
        Ok(Self {
            code: [bytes[0], bytes[1], bytes[2]],
            minor_units,
        })
    }

    /// The three-letter code.
    pub fn code(&self) -> &str {
        std::str::from_utf8(&self.code).unwrap_or("???")
    }

    /// The three-letter code's bytes (ASCII upper-case letters).
    pub fn code_bytes(&self) -> &[u8] {
        &self.code
    }

    /// Digits after the decimal point in this currency.
    pub fn minor_units(&self) -> u32 {
        self.minor_units
    }

    /// `amount` rounded to the minor unit, half to even.
    pub fn round(&self, amount: Decimal) -> Decimal {
        amount.round_dp_with_strategy(self.minor_units, RoundingStrategy::MidpointNearestEven)
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl Serialize for Currency {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.code())
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let code = String::deserialize(d)?;
        Self::parse("currency", &code).map_err(serde::de::Error::custom)
    }
}

/// An exact amount of a currency. May be negative (reversals, clawbacks).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Money {
    /// The amount, as a decimal string on the wire.
    #[serde(with = "crate::money::decimal_str")]
    pub amount: Decimal,
    /// Its currency.
    pub currency: Currency,
}

impl Money {
    /// An amount in a currency, as given (not rounded).
    pub fn new(amount: Decimal, currency: Currency) -> Self {
        Self { amount, currency }
    }

    /// Zero of a currency.
    pub fn zero(currency: Currency) -> Self {
        Self {
            amount: Decimal::ZERO,
            currency,
        }
    }

    /// Parses a client amount: a decimal string with no more fraction digits than the
    /// currency allows (trailing zeros do not count), which must be positive unless
    /// `allow_zero` (§4).
    pub fn parse_positive(
        field: &str,
        amount: &str,
        currency: Currency,
        allow_zero: bool,
    ) -> Result<Self, Violation> {
        let value = parse_decimal(field, amount)?;
        if value.is_sign_negative() && !value.is_zero() || (value.is_zero() && !allow_zero) {
            return Err(Violation::new(
                field,
                "not_positive",
                format!("{amount:?} must be greater than zero"),
            ));
        }
        if value.normalize().scale() > currency.minor_units() {
            return Err(Violation::new(
                field,
                "precision",
                format!(
                    "{amount:?} has more than {} fraction digits allowed for {currency}",
                    currency.minor_units()
                ),
            ));
        }
        Ok(Self {
            amount: value,
            currency,
        })
    }

    /// This amount rounded to the currency's minor unit, half to even.
    #[must_use]
    pub fn rounded(self) -> Self {
        Self {
            amount: self.currency.round(self.amount),
            ..self
        }
    }

    /// The negated amount.
    #[must_use]
    pub fn negated(self) -> Self {
        Self {
            amount: -self.amount,
            ..self
        }
    }

    /// True when the amount is zero.
    pub fn is_zero(&self) -> bool {
        self.amount.is_zero()
    }
}

impl fmt::Debug for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.amount, self.currency)
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.amount, self.currency)
    }
}

/// Parses a decimal string exactly (no float, no exponent), naming the field on failure.
pub fn parse_decimal(field: &str, text: &str) -> Result<Decimal, Violation> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(Violation::new(field, "required", "must not be empty"));
    }
    if trimmed != text || trimmed.contains(['e', 'E', '_']) {
        return Err(Violation::new(
            field,
            "malformed_decimal",
            format!("{text:?} is not a plain decimal number"),
        ));
    }
    Decimal::from_str_exact(text)
        .or_else(|_| Decimal::from_str(text))
        .map_err(|_| {
            Violation::new(
                field,
                "malformed_decimal",
                format!("{text:?} is not a decimal number"),
            )
        })
}

/// A decimal as text: exactly what `Decimal`'s `Display` writes (every digit of the
/// scale kept, `-` on a negative sign, negative zero too), from the 128-bit mantissa in
/// one pass instead of one 96-bit division per digit. Amounts, shares and rates go on the
/// wire as this text.
pub fn decimal_text(value: Decimal) -> String {
    DecimalText::new(value).as_str().to_owned()
}

/// [`decimal_text`] on the stack.
#[derive(Clone, Copy)]
pub struct DecimalText {
    /// A sign, 29 digits, a point and a leading zero at most.
    buf: [u8; 32],
    len: usize,
}

impl DecimalText {
    /// The text of `value`.
    pub fn new(value: Decimal) -> Self {
        let scale = value.scale() as usize;
        // Least significant digit first.
        let mut digits = [0u8; 29];
        let mut n = 0;
        let mut rest = value.mantissa().unsigned_abs();
        while rest > u128::from(u64::MAX) {
            digits[n] = b'0' + (rest % 10) as u8;
            rest /= 10;
            n += 1;
        }
        let mut rest = rest as u64;
        while rest > 0 {
            digits[n] = b'0' + (rest % 10) as u8;
            rest /= 10;
            n += 1;
        }
        // Zeros up to the scale (a scale is at most 28, a mantissa at most 29 digits).
        while n < scale {
            digits[n] = b'0';
            n += 1;
        }
        let whole = n - scale;
        let mut text = Self {
            buf: [0; 32],
            len: 0,
        };
        let mut push = |b: u8| {
            text.buf[text.len] = b;
            text.len += 1;
        };
        if value.is_sign_negative() {
            push(b'-');
        }
        if whole == 0 {
            push(b'0');
        }
        for (i, d) in digits[..n].iter().rev().enumerate() {
            if i == whole && scale > 0 {
                push(b'.');
            }
            push(*d);
        }
        text
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        // Only ASCII digits, `-` and `.` were written.
        std::str::from_utf8(self.as_bytes()).unwrap_or_default()
    }

    /// The text's bytes (ASCII), for writers of bytes that need no UTF-8 check.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// Serde of a decimal as its text (`#[serde(with = "crate::money::decimal_str")]`): the
/// text of `rust_decimal::serde::str`, written by [`DecimalText`]; read by
/// `rust_decimal::serde::str`.
pub mod decimal_str {
    use rust_decimal::Decimal;
    use serde::{Deserializer, Serializer};

    use super::DecimalText;

    /// Writes the decimal's text.
    pub fn serialize<S: Serializer>(value: &Decimal, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(DecimalText::new(*value).as_str())
    }

    /// Reads a decimal's text.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Decimal, D::Error> {
        rust_decimal::serde::str::deserialize(deserializer)
    }
}

/// Splits `total` (already rounded to `currency`) by `shares` (summing to one): each part
/// but the last is rounded half to even, the last takes the remainder, so the parts add up
/// to `total` exactly.
///
/// # Panics
/// When `shares` is empty.
pub fn allocate(total: Decimal, shares: &[Decimal], currency: Currency) -> Vec<Decimal> {
    assert!(!shares.is_empty(), "allocate needs at least one share");
    let mut parts = Vec::with_capacity(shares.len());
    let mut allocated = Decimal::ZERO;
    for share in &shares[..shares.len() - 1] {
        let part = currency.round(total * share);
        allocated += part;
        parts.push(part);
    }
    parts.push(total - allocated);
    debug_assert_eq!(parts.iter().sum::<Decimal>(), total);
    parts
}

#[cfg(test)]
mod tests {
    use rust_decimal::dec;

    use super::*;

    fn usd() -> Currency {
        Currency::parse("currency", "USD").unwrap()
    }

    #[test]
    fn currencies_know_their_minor_units() {
        assert_eq!(usd().minor_units(), 2);
        assert_eq!(Currency::parse("c", "JPY").unwrap().minor_units(), 0);
        assert_eq!(Currency::parse("c", "KWD").unwrap().minor_units(), 3);
        assert_eq!(
            Currency::parse("c", "XYZ").unwrap_err().rule,
            "unknown_currency"
        );
        assert_eq!(
            Currency::parse("c", "usd").unwrap_err().rule,
            "unknown_currency"
        );
    }

    #[test]
    fn amounts_follow_the_currency_precision() {
        assert!(Money::parse_positive("a", "10.50", usd(), false).is_ok());
        assert!(Money::parse_positive("a", "10.500", usd(), false).is_ok());
        assert_eq!(
            Money::parse_positive("a", "10.001", usd(), false)
                .unwrap_err()
                .rule,
            "precision"
        );
        assert_eq!(
            Money::parse_positive("a", "0", usd(), false)
                .unwrap_err()
                .rule,
            "not_positive"
        );
        assert_eq!(
            Money::parse_positive("a", "-1", usd(), false)
                .unwrap_err()
                .rule,
            "not_positive"
        );
        assert_eq!(
            Money::parse_positive("a", "1e3", usd(), false)
                .unwrap_err()
                .rule,
            "malformed_decimal"
        );
        assert_eq!(
            Money::parse_positive("a", "ten", usd(), false)
                .unwrap_err()
                .rule,
            "malformed_decimal"
        );
        let jpy = Currency::parse("c", "JPY").unwrap();
        assert_eq!(
            Money::parse_positive("a", "100.5", jpy, false)
                .unwrap_err()
                .rule,
            "precision"
        );
    }

    #[test]
    fn rounding_is_half_to_even() {
        assert_eq!(usd().round(dec!(0.125)), dec!(0.12));
        assert_eq!(usd().round(dec!(0.135)), dec!(0.14));
    }

    #[test]
    fn thirds_allocate_exactly() {
        let third = dec!(1) / dec!(3);
        let shares = [third, third, dec!(1) - third - third];
        let parts = allocate(dec!(10.00), &shares, usd());
        assert_eq!(parts, vec![dec!(3.33), dec!(3.33), dec!(3.34)]);
    }

    #[test]
    fn decimal_text_is_display_at_the_edges() {
        for d in [
            dec!(0),
            dec!(0.00),
            dec!(-0.00),
            dec!(1),
            dec!(-1),
            dec!(0.5),
            dec!(10.10),
            dec!(0.000000000001),
            dec!(0.333333333333),
            dec!(123456789.123456789),
            Decimal::MAX,
            Decimal::MIN,
            Decimal::new(1, 28),
            Decimal::from_parts(u32::MAX, u32::MAX, u32::MAX, false, 28),
            Decimal::from_parts(0, 0, 0, true, 5),
        ] {
            assert_eq!(decimal_text(d), d.to_string(), "{d:?}");
        }
    }

    proptest::proptest! {
        /// Any decimal's text is what `Display` writes.
        #[test]
        fn decimal_text_is_display(
            lo: u32,
            mid in proptest::prop_oneof![proptest::strategy::Just(0u32), proptest::num::u32::ANY],
            hi in proptest::prop_oneof![proptest::strategy::Just(0u32), proptest::num::u32::ANY],
            negative: bool,
            scale in 0u32..=28,
        ) {
            let d = Decimal::from_parts(lo, mid, hi, negative, scale);
            proptest::prop_assert_eq!(decimal_text(d), d.to_string());
            // The serde text is rust_decimal's, and reads back to the same decimal.
            #[derive(Serialize, Deserialize)]
            struct Ours(#[serde(with = "decimal_str")] Decimal);
            #[derive(Serialize)]
            struct Theirs(#[serde(with = "rust_decimal::serde::str")] Decimal);
            let json = serde_json::to_string(&Ours(d)).unwrap();
            proptest::prop_assert_eq!(&json, &serde_json::to_string(&Theirs(d)).unwrap());
            let back: Ours = serde_json::from_str(&json).unwrap();
            proptest::prop_assert_eq!(back.0.unpack(), d.unpack());
        }
    }
}
