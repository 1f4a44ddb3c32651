//! The five attribution models (§5.3) as exact decimal weights.

use rust_decimal::{Decimal, RoundingStrategy};

use crate::{program::Model, time::Timestamp};

/// Decimal places kept in a share before the last one absorbs the remainder.
pub const SHARE_DP: u32 = 12;

/// The share of each click (in the given order: oldest first) under `model`, for a
/// conversion at `at`. Exact decimals summing to one; the last click takes the remainder.
///
/// # Panics
/// When `clicks` is empty.
pub fn split(model: Model, clicks: &[Timestamp], at: Timestamp) -> Vec<Decimal> {
    let n = clicks.len();
    assert!(n > 0, "split needs at least one click");
    let weights: Vec<Decimal> = match model {
        Model::LastClick => (0..n)
            .map(|i| {
                if i == n - 1 {
                    Decimal::ONE
                } else {
                    Decimal::ZERO
                }
            })
            .collect(),
        Model::FirstClick => (0..n)
            .map(|i| if i == 0 { Decimal::ONE } else { Decimal::ZERO })
            .collect(),
        Model::Linear => vec![Decimal::ONE; n],
        Model::PositionBased => match n {
            1 => vec![Decimal::ONE],
            2 => vec![Decimal::ONE, Decimal::ONE],
            _ => {
                let middle = Decimal::new(2, 1) / Decimal::from(n - 2);
                (0..n)
                    .map(|i| {
                        if i == 0 || i == n - 1 {
                            Decimal::new(4, 1)
                        } else {
                            middle
                        }
                    })
                    .collect()
            }
        },
        Model::TimeDecay { half_life } => clicks
            .iter()
            .map(|click| decay_weight(at.since(*click).millis(), half_life.millis()))
            .collect(),
    };
    normalise(&weights)
}

/// 2^(−age / half-life): a time-decay weight.
///
/// Computed in binary floating point by `libm` (a pure-Rust port of musl's libm, so the
/// same bits on every machine and in every service: the attributor and `payoff replay`
/// agree), then taken as an exact decimal. A weight is irrational whatever the arithmetic;
/// it is within 1e-14 (relative) of `rust_decimal`'s `checked_powd`, far finer than the
/// 12 decimal places a share keeps, and the shares are still exact decimals summing to
/// one ([`normalise`]). Whole half-lives give exact powers of two. `checked_powd` cost
/// about a hundred times more: it was the attributor's largest cost per conversion.
pub fn decay_weight(age_millis: i64, half_life_millis: i64) -> Decimal {
    // Both are exact in an f64 (|x| < 2^53 ms is 285,000 years) and IEEE division is
    // correctly rounded, so the exponent is the same everywhere too.
    let exponent = -(age_millis.max(0) as f64) / (half_life_millis.max(1) as f64);
    Decimal::from_f64_retain(libm::exp2(exponent)).unwrap_or(Decimal::ZERO)
}

/// Weights scaled to shares summing to exactly one (remainder to the last positive
/// weight). All-zero weights (extreme decay) fall back to the latest click.
pub fn normalise(weights: &[Decimal]) -> Vec<Decimal> {
    let total: Decimal = weights.iter().sum();
    if total.is_zero() {
        let mut shares = vec![Decimal::ZERO; weights.len()];
        if let Some(last) = shares.last_mut() {
            *last = Decimal::ONE;
        }
        return shares;
    }
    let last_positive = weights
        .iter()
        .rposition(|w| !w.is_zero())
        .unwrap_or(weights.len() - 1);
    let mut shares: Vec<Decimal> = weights
        .iter()
        .map(|w| {
            (w / total).round_dp_with_strategy(SHARE_DP, RoundingStrategy::MidpointNearestEven)
        })
        .collect();
    shares[last_positive] = Decimal::ZERO;
    let rest: Decimal = shares.iter().sum();
    shares[last_positive] = Decimal::ONE - rest;
    debug_assert_eq!(shares.iter().sum::<Decimal>(), Decimal::ONE);
    shares
}

#[cfg(test)]
mod tests {
    use rust_decimal::{MathematicalOps, dec};

    use super::*;
    use crate::time::Duration;

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_millis(1_800_000_000_000 + secs * 1000)
    }

    #[test]
    fn position_based_gives_forty_forty_twenty() {
        let clicks = [t(0), t(1), t(2), t(3)];
        assert_eq!(
            split(Model::PositionBased, &clicks, t(100)),
            vec![dec!(0.4), dec!(0.1), dec!(0.1), dec!(0.4)]
        );
        assert_eq!(
            split(Model::PositionBased, &clicks[..2], t(100)),
            vec![dec!(0.5), dec!(0.5)]
        );
        assert_eq!(
            split(Model::PositionBased, &clicks[..1], t(100)),
            vec![dec!(1)]
        );
    }

    #[test]
    fn linear_thirds_sum_to_one() {
        let shares = split(Model::Linear, &[t(0), t(1), t(2)], t(100));
        assert_eq!(shares.iter().sum::<Decimal>(), Decimal::ONE);
        assert_eq!(shares[0], dec!(0.333333333333));
    }

    #[test]
    fn time_decay_halves_each_half_life() {
        let half_life = Duration::days(7);
        let conversion = t(0).plus(Duration::days(14));
        let shares = split(
            Model::TimeDecay { half_life },
            &[t(0), conversion.minus(Duration::days(7))],
            conversion,
        );
        // weights 1/4 and 1/2: shares 1/3 and 2/3
        assert_eq!(shares[0], dec!(0.333333333333));
        assert_eq!(shares.iter().sum::<Decimal>(), Decimal::ONE);
    }

    #[test]
    fn whole_half_lives_give_exact_powers_of_two() {
        let day = 86_400_000;
        // 2^-k has k decimal places: exact up to the 28 a decimal holds.
        for k in 0..=28u32 {
            let want = Decimal::ONE / Decimal::from(2u64.pow(k));
            assert_eq!(decay_weight(i64::from(k) * day, day), want, "2^-{k}");
        }
        assert_eq!(
            decay_weight(-5, day),
            Decimal::ONE,
            "a click after the conversion"
        );
        assert_eq!(decay_weight(2000 * day, day), Decimal::ZERO, "below 1e-28");
    }

    proptest::proptest! {
        /// A decay weight is within 1e-14 (relative, plus the last of a decimal's 28
        /// places) of the decimal 2^(-age/half-life), in [0, 1], and never grows with age.
        #[test]
        fn decay_weights_are_accurate_and_monotone(
            age in 0i64..60 * 86_400_000,
            later in 0i64..86_400_000,
            half_life in 3_600_000i64..30 * 86_400_000,
        ) {
            let w = decay_weight(age, half_life);
            let exponent = -(Decimal::from(age) / Decimal::from(half_life));
            let exact = Decimal::TWO.checked_powd(exponent).unwrap_or_default();
            proptest::prop_assert!(w >= Decimal::ZERO && w <= Decimal::ONE);
            proptest::prop_assert!(
                (w - exact).abs() <= exact * Decimal::new(1, 14) + Decimal::new(1, 27),
                "{w} vs {exact}"
            );
            proptest::prop_assert!(decay_weight(age + later, half_life) <= w);
        }
    }

    #[test]
    fn first_and_last_click() {
        let clicks = [t(0), t(1), t(2)];
        assert_eq!(
            split(Model::FirstClick, &clicks, t(9)),
            vec![dec!(1), dec!(0), dec!(0)]
        );
        assert_eq!(
            split(Model::LastClick, &clicks, t(9)),
            vec![dec!(0), dec!(0), dec!(1)]
        );
    }
}
