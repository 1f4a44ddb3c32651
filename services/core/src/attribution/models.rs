//! The five attribution models (§5.3) as exact decimal weights.

use rust_decimal::{Decimal, MathematicalOps, RoundingStrategy};

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
            .map(|click| {
                let age = Decimal::from(at.since(*click).millis().max(0));
                let exponent = -(age / Decimal::from(half_life.millis().max(1)));
                Decimal::TWO.checked_powd(exponent).unwrap_or(Decimal::ZERO)
            })
            .collect(),
    };
    normalise(&weights)
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
    use rust_decimal::dec;

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
