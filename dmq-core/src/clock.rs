//! Deadlines that saturate instead of overflowing, whatever duration a caller gives.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::time::Instant;

/// About a century: "never" for any deadline dmq computes.
const FAR: Duration = Duration::from_secs(100 * 365 * 24 * 60 * 60);

/// `from + d`, or a century after `from` when that would overflow.
pub(crate) fn instant_after(from: Instant, d: Duration) -> Instant {
    from.checked_add(d).unwrap_or_else(|| from + FAR)
}

/// `d` from now on the tokio clock, saturating.
pub(crate) fn deadline(d: Duration) -> Instant {
    instant_after(Instant::now(), d)
}

/// `d` from now on the wall clock, saturating at the latest representable instant.
pub(crate) fn utc_after(d: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(d)
        .ok()
        .and_then(|d| Utc::now().checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_durations_saturate_instead_of_panicking() {
        assert!(deadline(Duration::MAX) > Instant::now() + Duration::from_secs(3600));
        assert_eq!(utc_after(Duration::MAX), DateTime::<Utc>::MAX_UTC);
        let soon = utc_after(Duration::from_secs(1));
        assert!(soon > Utc::now() && soon < Utc::now() + chrono::Duration::seconds(5));
    }
}
