//! Why the core refuses an input: a rejected input, never an infrastructure failure (the
//! core has no infrastructure).

use serde::Serialize;

/// One broken rule: the field path (`order.amount`, `line_items[2].unit_price`) and the rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{field}: {rule}")]
pub struct Violation {
    /// Path of the offending field, in the proto's snake_case naming.
    pub field: String,
    /// Short machine-readable rule name (`required`, `too_long`, `precision`, ...).
    pub rule: &'static str,
    /// Human explanation.
    pub detail: String,
}

impl Violation {
    /// A violation of `rule` on `field`, with a human explanation.
    pub fn new(field: impl Into<String>, rule: &'static str, detail: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            rule,
            detail: detail.into(),
        }
    }

    /// The same violation on `field` (a rule checked with an empty path, named by the
    /// caller only when broken).
    #[must_use]
    pub fn at(mut self, field: impl std::fmt::Display) -> Self {
        self.field = field.to_string();
        self
    }

    /// The same violation nested under a parent field (`amount` → `order.amount`).
    #[must_use]
    pub fn under(mut self, parent: &str) -> Self {
        self.field = if self.field.is_empty() {
            parent.to_owned()
        } else if self.field.starts_with('[') {
            format!("{parent}{}", self.field)
        } else {
            format!("{parent}.{}", self.field)
        };
        self
    }
}

/// An input the rules refuse. Carries every violation found, not only the first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
pub enum Rejection {
    /// The input breaks one or more validation rules (§4).
    #[error("invalid input: {}", display_violations(.0))]
    Invalid(Vec<Violation>),
    /// The program configuration is inconsistent.
    #[error("invalid program: {}", display_violations(.0))]
    InvalidProgram(Vec<Violation>),
}

impl Rejection {
    /// The violations behind this rejection.
    pub fn violations(&self) -> &[Violation] {
        match self {
            Self::Invalid(v) | Self::InvalidProgram(v) => v,
        }
    }
}

impl From<Violation> for Rejection {
    fn from(v: Violation) -> Self {
        Self::Invalid(vec![v])
    }
}

fn display_violations(v: &[Violation]) -> String {
    v.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}
