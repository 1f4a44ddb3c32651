//! Service errors and their gRPC status: the one place where that mapping lives.
//!
//! A rejected request (the caller's fault: invalid, unauthenticated, out of scope, over
//! its rate) and an infrastructure failure (Kafka or the store down or slow) are different
//! variants; infrastructure failures say whether a retry may help.

use payoff_core::Violation;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// No key, or a key nobody issued.
    #[error("missing or unknown API key")]
    Unauthenticated,
    /// The key's role may not call this.
    #[error("this API key's role may not {0}")]
    PermissionDenied(&'static str),
    /// Outside the caller's scope, or absent: both answer the same (§8, §11).
    #[error("not found")]
    NotFound,
    /// The request breaks validation rules; each names its field and rule.
    #[error("invalid request: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<Violation>),
    /// The request conflicts with the current state (e.g. an outdated expected version).
    #[error("failed precondition: {0}")]
    FailedPrecondition(String),
    /// The method exists in the contract but this deployment does not provide it.
    #[error("unimplemented: {0}")]
    Unimplemented(String),
    /// The key is over its rate limit, or the service over its in-flight bound.
    #[error("resource exhausted: {0}")]
    ResourceExhausted(String),
    /// A dependency (Kafka, the store) is down or too slow; retrying later may help.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// A bug or an unexpected failure; retrying will not help.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ServiceError {
    /// The gRPC code of this error.
    pub fn code(&self) -> Code {
        match self {
            Self::Unauthenticated => Code::Unauthenticated,
            Self::PermissionDenied(_) => Code::PermissionDenied,
            Self::NotFound => Code::NotFound,
            Self::Invalid(_) => Code::InvalidArgument,
            Self::FailedPrecondition(_) => Code::FailedPrecondition,
            Self::Unimplemented(_) => Code::Unimplemented,
            Self::ResourceExhausted(_) => Code::ResourceExhausted,
            Self::Unavailable(_) => Code::Unavailable,
            Self::Internal(_) => Code::Internal,
        }
    }

    /// A bounded label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Unauthenticated => "unauthenticated",
            Self::PermissionDenied(_) => "permission_denied",
            Self::NotFound => "not_found",
            Self::Invalid(_) => "invalid",
            Self::FailedPrecondition(_) => "failed_precondition",
            Self::Unimplemented(_) => "unimplemented",
            Self::ResourceExhausted(_) => "resource_exhausted",
            Self::Unavailable(_) => "unavailable",
            Self::Internal(_) => "internal",
        }
    }
}

impl From<ServiceError> for Status {
    fn from(e: ServiceError) -> Self {
        let message = e.to_string();
        match e {
            ServiceError::Invalid(violations) => {
                let mut details = ErrorDetails::new();
                for v in &violations {
                    details.add_bad_request_violation(
                        v.field.clone(),
                        format!("{}: {}", v.rule, v.detail),
                    );
                }
                Status::with_error_details(Code::InvalidArgument, message, details)
            }
            other => Status::new(other.code(), message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_requests_carry_field_violations() {
        let status: Status = ServiceError::Invalid(vec![Violation::new(
            "order.amount",
            "precision",
            "too many digits",
        )])
        .into();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().contains("order.amount: precision"));
        let details = status.get_error_details();
        let bad = details.bad_request().expect("bad request details");
        assert_eq!(bad.field_violations[0].field, "order.amount");
    }

    #[test]
    fn scopes_answer_not_found() {
        assert_eq!(Status::from(ServiceError::NotFound).code(), Code::NotFound);
        assert_eq!(
            Status::from(ServiceError::Unavailable("kafka".into())).code(),
            Code::Unavailable
        );
    }
}
