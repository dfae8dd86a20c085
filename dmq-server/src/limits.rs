//! The server's limits: body and batch sizes, long-poll waits, and request rates per
//! token and per client address (GCRA, by the governor crate: a steady rate with
//! bursts up to a stated size).

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::str::FromStr;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

use crate::error::ApiError;

/// The default limit on a request body: 2 MiB, room for a job at the broker's 1 MiB
/// limit written as JSON.
pub const DEFAULT_MAX_BODY: usize = 2 * 1024 * 1024;

/// The default limit on the jobs of one batch.
pub const DEFAULT_MAX_BATCH: usize = 1000;

/// The longest a long poll (a claim or a result wait) may wait.
pub const MAX_WAIT: Duration = Duration::from_secs(30);

/// The longest delay an enqueue may ask for: 100 years, so that its eta is written
/// in RFC 3339 (which ends at year 9999) in every answer.
pub(crate) const MAX_DELAY: Duration = Duration::from_secs(100 * 365 * 24 * 60 * 60);

/// The default number of requests that may wait on the broker at once.
pub const DEFAULT_MAX_WAITING: usize = 512;

/// The most jobs one claim may take.
pub const MAX_CLAIM: usize = 100;

/// The shortest and longest lease a consumer may ask for.
pub const LEASE_RANGE: (Duration, Duration) =
    (Duration::from_secs(1), Duration::from_secs(60 * 60));

/// The lease a claim gets unless it asks for another: 30 s.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);

/// Sizes the server accepts.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The largest request body, in bytes.
    pub max_body: usize,
    /// The most jobs in one batch.
    pub max_batch: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_body: DEFAULT_MAX_BODY, max_batch: DEFAULT_MAX_BATCH }
    }
}

/// A request rate: `N/s`, `N/m` or `N/h`, with bursts of up to `burst` requests
/// (the rate's own count by default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    count: NonZeroU32,
    per: Duration,
    burst: NonZeroU32,
}

impl Rate {
    /// The same rate with bursts of up to `burst` requests.
    #[must_use]
    pub fn with_burst(mut self, burst: NonZeroU32) -> Self {
        self.burst = burst;
        self
    }

    fn quota(self) -> Quota {
        let period = self.per / self.count.get();
        Quota::with_period(period.max(Duration::from_nanos(1)))
            .unwrap_or_else(|| Quota::per_second(self.count))
            .allow_burst(self.burst)
    }
}

impl FromStr for Rate {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || format!("{text:?} is not a rate; write it as 100/s, 600/m or 10000/h");
        let (count, unit) = text.trim().split_once('/').ok_or_else(bad)?;
        let count: u32 = count.trim().parse().map_err(|_| bad())?;
        let count = NonZeroU32::new(count).ok_or_else(bad)?;
        let per = match unit.trim() {
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            _ => return Err(bad()),
        };
        Ok(Rate { count, per, burst: count })
    }
}

/// The request rate limiters, per token and per client address; either may be off.
#[derive(Debug, Default)]
pub struct RateLimits {
    per_token: Option<DefaultKeyedRateLimiter<String>>,
    per_ip: Option<DefaultKeyedRateLimiter<IpAddr>>,
}

impl RateLimits {
    /// Limiters for the rates given.
    #[must_use]
    pub fn new(per_token: Option<Rate>, per_ip: Option<Rate>) -> Self {
        RateLimits {
            per_token: per_token.map(|r| DefaultKeyedRateLimiter::keyed(r.quota())),
            per_ip: per_ip.map(|r| DefaultKeyedRateLimiter::keyed(r.quota())),
        }
    }

    pub(crate) fn check_ip(&self, ip: IpAddr) -> Result<(), ApiError> {
        let Some(limiter) = &self.per_ip else { return Ok(()) };
        limiter.check_key(&client_of(ip)).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            ApiError::rate_limited(
                format!("too many requests from {ip}; try again in {} ms", wait.as_millis()),
                wait,
            )
        })
    }

    pub(crate) fn check_token(&self, name: &str) -> Result<(), ApiError> {
        let Some(limiter) = &self.per_token else { return Ok(()) };
        let key = name.to_owned();
        limiter.check_key(&key).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            ApiError::rate_limited(
                format!(
                    "too many requests with the token of {name:?}; try again in {} ms",
                    wait.as_millis()
                ),
                wait,
            )
        })
    }

    /// Forgets keys idle long enough to be back at a full burst, so that many client
    /// addresses cannot grow the limiters without bound.
    pub(crate) fn sweep(&self) {
        if let Some(l) = &self.per_token {
            l.retain_recent();
        }
        if let Some(l) = &self.per_ip {
            l.retain_recent();
        }
    }
}

/// The client an address counts for: an IPv4 address, or an IPv6 address's /64 (one
/// host is given a whole /64, and could otherwise spread its requests over it).
fn client_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let network = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(network.into())
            }
        },
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_per_second_minute_and_hour() {
        let rate: Rate = "100/s".parse().unwrap();
        assert_eq!((rate.count.get(), rate.per), (100, Duration::from_secs(1)));
        assert_eq!("6/m".parse::<Rate>().unwrap().per, Duration::from_secs(60));
        for bad in ["", "0/s", "10", "10/d", "x/s", "-1/s"] {
            assert!(bad.parse::<Rate>().unwrap_err().contains("is not a rate"), "{bad}");
        }
    }

    #[test]
    fn an_ipv6_client_counts_as_its_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(client_of(a), client_of(b));
        assert_ne!(client_of(a), client_of(other));
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(client_of(mapped), "10.0.0.1".parse::<IpAddr>().unwrap());
        let rates = RateLimits::new(None, Some("1/m".parse().unwrap()));
        assert!(rates.check_ip(a).is_ok());
        assert!(rates.check_ip(b).is_err(), "the same /64 shares one budget");
    }

    #[test]
    fn a_limiter_refuses_past_its_burst_and_says_when_to_retry() {
        let rates = RateLimits::new(Some("2/m".parse().unwrap()), None);
        assert!(rates.check_token("a").is_ok());
        assert!(rates.check_token("a").is_ok());
        let refused = rates.check_token("a").unwrap_err();
        assert_eq!(refused.status(), axum::http::StatusCode::TOO_MANY_REQUESTS);
        assert!(rates.check_token("b").is_ok(), "another token has its own budget");
        assert!(rates.check_ip("127.0.0.1".parse().unwrap()).is_ok(), "no per-IP limit set");
    }
}
