//! Field-level conversions shared by credits and ledger entries: money, decimals,
//! ids, timestamps and periods, each naming its field when the wire value is refused.

use payoff_core::{
    Violation,
    ids::DerivedId,
    money::{Currency, Money, decimal_text, parse_decimal},
    time::{Period, PeriodKind, Timestamp},
};
use rust_decimal::Decimal;

use super::timestamp;
use crate::v1;

/// Money as a decimal string (scale kept: `"8.50"` stays `"8.50"`) and its code.
pub fn money_to_proto(m: Money) -> v1::Money {
    v1::Money {
        amount: decimal_text(m.amount),
        currency: m.currency.code().to_owned(),
    }
}

/// Required money: any sign, any precision (amounts payoff produced, read back).
pub fn money(field: &str, m: Option<&v1::Money>) -> Result<Money, Violation> {
    let m = m.ok_or_else(|| required(field))?;
    let currency = Currency::parse(&format!("{field}.currency"), &m.currency)?;
    let amount = parse_decimal(&format!("{field}.amount"), &m.amount)?;
    Ok(Money::new(amount, currency))
}

/// A required exact decimal.
pub(super) fn decimal(field: &str, text: &str) -> Result<Decimal, Violation> {
    parse_decimal(field, text)
}

/// An optional exact decimal: empty means absent.
pub(super) fn optional_decimal(field: &str, text: &str) -> Result<Option<Decimal>, Violation> {
    if text.is_empty() {
        return Ok(None);
    }
    parse_decimal(field, text).map(Some)
}

/// An optional decimal's wire form: empty when absent.
pub(super) fn optional_decimal_to_proto(d: Option<Decimal>) -> String {
    d.map(decimal_text).unwrap_or_default()
}

/// A required derived id.
pub(super) fn derived(field: &str, text: &str) -> Result<DerivedId, Violation> {
    if text.is_empty() {
        return Err(required(field));
    }
    DerivedId::parse(field, text)
}

/// An optional derived id: empty means absent.
pub(super) fn optional_derived(field: &str, text: &str) -> Result<Option<DerivedId>, Violation> {
    if text.is_empty() {
        return Ok(None);
    }
    DerivedId::parse(field, text).map(Some)
}

/// An optional client id: empty means absent.
pub(super) fn optional_id<T>(
    field: &str,
    text: &str,
    parse: fn(&str, &str) -> Result<T, Violation>,
) -> Result<Option<T>, Violation> {
    if text.is_empty() {
        return Ok(None);
    }
    parse(field, text).map(Some)
}

/// A required timestamp.
pub(super) fn required_timestamp(
    field: &str,
    t: Option<&pbjson_types::Timestamp>,
) -> Result<Timestamp, Violation> {
    t.map(timestamp).ok_or_else(|| required(field))
}

/// A required field that was left empty or unset.
pub(super) fn required(field: &str) -> Violation {
    Violation::new(field, "required", "must be given")
}

/// An enum number the contract does not define (or leaves unspecified).
pub(super) fn unknown_enum(field: &str, value: impl std::fmt::Display, what: &str) -> Violation {
    Violation::new(field, "unknown_enum", format!("{value} is not {what}"))
}

/// One of a fixed set of names, as the `'static` name the core uses.
pub(super) fn known_name(
    field: &str,
    text: &str,
    names: &[&'static str],
    what: &str,
) -> Result<&'static str, Violation> {
    names
        .iter()
        .copied()
        .find(|n| *n == text)
        .ok_or_else(|| unknown_enum(field, format!("{text:?}"), what))
}

/// Parses a period label (`2026-11`, `2026-W47`, `lifetime`) back into the period whose
/// [`Period::label`] it is; any other text is refused.
pub fn period(field: &str, label: &str) -> Result<Period, Violation> {
    let malformed = || {
        Violation::new(
            field,
            "malformed_period",
            format!("{label:?} is not a period label (2026-11, 2026-W47 or lifetime)"),
        )
    };
    let parsed = if label == "lifetime" {
        Some(Period {
            kind: PeriodKind::Lifetime,
            index: 0,
        })
    } else if let Some((year, week)) = label.rsplit_once("-W") {
        week_period(year, week)
    } else {
        label.rsplit_once('-').and_then(|(year, month)| {
            let year: i64 = year.parse().ok()?;
            let month: i64 = month.parse().ok()?;
            Some(Period {
                kind: PeriodKind::Month,
                index: year.checked_mul(12)?.checked_add(month.checked_sub(1)?)?,
            })
        })
    };
    match parsed {
        // The label is the canonical form: only a period that prints as `label` is it.
        Some(p) if p.label() == label => Ok(p),
        _ => Err(malformed()),
    }
}

/// The period of ISO week `week` of ISO year `year` (checked by the caller).
fn week_period(year: &str, week: &str) -> Option<Period> {
    /// Years beyond this cannot be labels of instants a timestamp can hold.
    const MAX_YEAR: i64 = 1_000_000;
    let year: i64 = year.parse().ok()?;
    let week: i64 = week.parse().ok()?;
    if year.abs() > MAX_YEAR || !(1..=53).contains(&week) {
        return None;
    }
    // 4 January is always in week 1; days count from 1970-01-01, a Thursday.
    let jan4 = days_from_civil(year, 1, 4);
    let monday = jan4 - (jan4 + 3).rem_euclid(7) + (week - 1) * 7;
    Some(Period {
        kind: PeriodKind::Week,
        index: (monday + 3).div_euclid(7),
    })
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
/// `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year - era * 400;
    let mp = if month > 2 { month - 3 } else { month + 9 };
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn period_labels_parse_back_to_their_period() {
        const DAY: i64 = 86_400_000;
        // Every day from 1900 to 2200, in each kind.
        let mut t = -2_208_988_800_000;
        while t < 7_258_118_400_000 {
            for kind in [PeriodKind::Month, PeriodKind::Week, PeriodKind::Lifetime] {
                let p = Period::containing(kind, Timestamp(t));
                assert_eq!(period("period", &p.label()), Ok(p), "{}", p.label());
            }
            t += DAY;
        }
    }

    #[test]
    fn other_period_text_is_refused() {
        for bad in [
            "", "2026", "2026-13", "2026-00", "2026-1", "2026-W00", "2026-W54", "2026-W1",
            "2025-W53", "Lifetime", "2026-11 ", "x-11",
        ] {
            let e = period("period", bad).unwrap_err();
            assert_eq!(
                (e.field.as_str(), e.rule),
                ("period", "malformed_period"),
                "{bad:?}"
            );
        }
        // 2026 has 53 ISO weeks.
        assert!(period("period", "2026-W53").is_ok());
    }
}
