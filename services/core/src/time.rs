//! Event time. The core never reads a clock: every instant is data (§2).

use std::fmt;

use chrono::{DateTime, Datelike, Utc};
use serde::{Deserialize, Serialize};

/// An instant in UTC, in milliseconds since the Unix epoch.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Timestamp(pub i64);

/// A span of time in milliseconds.
#[derive(
    Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Duration(pub i64);

impl Duration {
    /// `n` seconds.
    pub const fn seconds(n: i64) -> Self {
        Self(n * 1000)
    }
    /// `n` minutes.
    pub const fn minutes(n: i64) -> Self {
        Self(n * 60_000)
    }
    /// `n` hours.
    pub const fn hours(n: i64) -> Self {
        Self(n * 3_600_000)
    }
    /// `n` days.
    pub const fn days(n: i64) -> Self {
        Self(n * 86_400_000)
    }
    /// Milliseconds.
    pub const fn millis(self) -> i64 {
        self.0
    }
}

impl Timestamp {
    /// The instant `millis` after the epoch.
    pub const fn from_millis(millis: i64) -> Self {
        Self(millis)
    }

    /// Milliseconds since the epoch.
    pub const fn millis(self) -> i64 {
        self.0
    }

    /// Parses RFC 3339 (`2026-11-22T10:00:00Z`).
    pub fn parse_rfc3339(text: &str) -> Option<Self> {
        DateTime::parse_from_rfc3339(text)
            .ok()
            .map(|t| Self(t.timestamp_millis()))
    }

    /// This instant shifted by `d` (saturating).
    #[must_use]
    pub const fn plus(self, d: Duration) -> Self {
        Self(self.0.saturating_add(d.0))
    }

    /// This instant shifted back by `d` (saturating).
    #[must_use]
    pub const fn minus(self, d: Duration) -> Self {
        Self(self.0.saturating_sub(d.0))
    }

    /// `self - earlier`.
    pub const fn since(self, earlier: Self) -> Duration {
        Duration(self.0.saturating_sub(earlier.0))
    }

    fn datetime(self) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(self.0).unwrap_or_default()
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}",
            self.datetime()
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        )
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// RFC 3339 text in human-readable formats (JSON); milliseconds since the epoch in binary
/// ones (the attributor's changelog), which are smaller and faster to restore.
impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.collect_str(self)
        } else {
            s.serialize_i64(self.0)
        }
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if !d.is_human_readable() {
            return i64::deserialize(d).map(Self);
        }
        let text = String::deserialize(d)?;
        Self::parse_rfc3339(&text)
            .ok_or_else(|| serde::de::Error::custom(format!("{text:?} is not an RFC 3339 instant")))
    }
}

/// How a campaign cuts time into commission periods (caps, tiers, milestones, base fees).
#[derive(
    Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum PeriodKind {
    /// Calendar months in UTC (the default, §6).
    #[default]
    Month,
    /// ISO weeks (Monday to Sunday) in UTC.
    Week,
    /// One period for the whole life of the campaign.
    Lifetime,
}

/// One commission period: its kind and ordinal (months since year 0, ISO weeks since the
/// epoch's Monday), so that "N periods later" is a subtraction.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct Period {
    /// The kind of period.
    pub kind: PeriodKind,
    /// Its ordinal within that kind.
    pub index: i64,
}

impl Period {
    /// The period of `kind` that contains `at`.
    pub fn containing(kind: PeriodKind, at: Timestamp) -> Self {
        let index = match kind {
            PeriodKind::Month => match civil_month(at) {
                Some((year, month0)) => year * 12 + month0,
                None => {
                    let t = at.datetime();
                    i64::from(t.year()) * 12 + i64::from(t.month0())
                }
            },
            // 1970-01-01 was a Thursday: shift so that weeks start on Monday.
            PeriodKind::Week => (at.millis().div_euclid(86_400_000) + 3).div_euclid(7),
            PeriodKind::Lifetime => 0,
        };
        Self { kind, index }
    }

    /// A stable label: `2026-11`, `2026-W47`, `lifetime`.
    pub fn label(&self) -> String {
        match self.kind {
            PeriodKind::Month => format!(
                "{:04}-{:02}",
                self.index.div_euclid(12),
                self.index.rem_euclid(12) + 1
            ),
            PeriodKind::Week => {
                let monday = Timestamp((self.index * 7 - 3) * 86_400_000).datetime();
                let iso = monday.iso_week();
                format!("{:04}-W{:02}", iso.year(), iso.week())
            }
            PeriodKind::Lifetime => "lifetime".to_owned(),
        }
    }
}

/// Instants from year 1 to year 9999, where [`civil_month`] answers.
const CIVIL_RANGE: std::ops::Range<i64> = -62_135_596_800_000..253_402_300_800_000;

/// The UTC year and zero-based month of `at` in years 1 to 9999, by integer arithmetic
/// (H. Hinnant's `civil_from_days`): what chrono says, without building a date (every
/// ledger input needs its period).
fn civil_month(at: Timestamp) -> Option<(i64, i64)> {
    // Unsigned from here: days counted from 0000-03-01 (the algorithm's origin), which
    // every instant of the range is after, so no division needs a sign correction.
    let since_year_one = u64::try_from(at.millis().checked_sub(CIVIL_RANGE.start)?).ok()?;
    if at.millis() >= CIVIL_RANGE.end {
        return None;
    }
    // 0001-01-01 is 306 days after 0000-03-01.
    let z = since_year_one / 86_400_000 + 306;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let month0 = if mp < 10 { mp + 2 } else { mp - 10 };
    let year = yoe + era * 400 + u64::from(month0 < 2);
    Some((i64::try_from(year).ok()?, i64::try_from(month0).ok()?))
}

impl Serialize for Period {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.label())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        Timestamp::parse_rfc3339(text).unwrap()
    }

    #[test]
    fn months_and_weeks_are_calendar_periods_in_utc() {
        let nov = Period::containing(PeriodKind::Month, at("2026-11-30T23:59:59.999Z"));
        let dec = Period::containing(PeriodKind::Month, at("2026-12-01T00:00:00Z"));
        assert_eq!(nov.label(), "2026-11");
        assert_eq!(dec.index - nov.index, 1);
        // 2026-11-22 is a Sunday, 2026-11-23 a Monday.
        let sun = Period::containing(PeriodKind::Week, at("2026-11-22T12:00:00Z"));
        let mon = Period::containing(PeriodKind::Week, at("2026-11-23T00:00:00Z"));
        assert_eq!(mon.index - sun.index, 1);
        assert_eq!(mon.label(), "2026-W48");
    }

    #[test]
    fn months_by_arithmetic_agree_with_chrono() {
        let check = |at: Timestamp| {
            let d = at.datetime();
            assert_eq!(
                civil_month(at),
                Some((i64::from(d.year()), i64::from(d.month0()))),
                "{at}"
            );
        };
        const DAY: i64 = 86_400_000;
        // every day's first and last millisecond from 1900 to 2200 ...
        let mut t = -2_208_988_800_000;
        while t < 7_258_118_400_000 {
            check(Timestamp(t));
            check(Timestamp(t + DAY - 1));
            t += DAY;
        }
        // ... and about every 7.7 days over the whole range
        let mut t = CIVIL_RANGE.start;
        while t < CIVIL_RANGE.end {
            check(Timestamp(t));
            t += 666_666_667;
        }
        check(Timestamp(CIVIL_RANGE.end - 1));
        assert_eq!(civil_month(Timestamp(i64::MAX)), None);
        let far = Period::containing(PeriodKind::Month, Timestamp(i64::MIN));
        assert_eq!(far.index, 1970 * 12);
    }

    #[test]
    fn timestamps_print_as_rfc3339() {
        assert_eq!(
            at("2026-11-22T10:00:00Z").to_string(),
            "2026-11-22T10:00:00.000Z"
        );
    }
}
