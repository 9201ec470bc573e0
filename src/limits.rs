//! Admission limits: connections per source address, new connections per second, and the
//! one token bucket type, which also limits the gateway's messages and the chat's requests per
//! connection.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// A token bucket: `rate` tokens per second, holding at most `burst`. The gateway's
/// per-connection message limit and new-connection limit hold one second's worth
/// ([`TokenBucket::new`]); the chat's per-connection request limit has a burst of its own.
#[derive(Debug, Clone)]
pub(crate) struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket refilling at `rate` per second, holding one second's worth.
    pub(crate) fn new(rate: u32) -> Self {
        Self::with_burst(rate, rate, Instant::now())
    }

    /// A full bucket of `burst` tokens (at least one) refilling at `rate` per second, as of
    /// `now`.
    pub(crate) fn with_burst(rate: u32, burst: u32, now: Instant) -> Self {
        let burst = f64::from(burst.max(1));
        TokenBucket {
            rate: f64::from(rate),
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// Takes one token if there is one.
    pub(crate) fn try_take(&mut self) -> bool {
        self.try_take_at(Instant::now())
    }

    /// [`try_take`](Self::try_take) at a given time.
    pub(crate) fn try_take_at(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Why a new connection was turned away before its request was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// More new connections per second than allowed: 429.
    Rate,
    /// Too many open connections from this address: 429.
    PerAddress,
}

impl Refusal {
    /// The status and message answered to the client.
    pub(crate) fn answer(self) -> (u16, &'static str) {
        match self {
            Refusal::Rate => (429, "Too many new connections; retry in a second"),
            Refusal::PerAddress => (429, "Too many connections from your address"),
        }
    }
}

/// Counts connections per source address and new connections per second.
#[derive(Debug)]
pub(crate) struct Admission {
    per_address: usize,
    open: Mutex<HashMap<IpAddr, usize, foldhash::fast::RandomState>>,
    rate: Option<Mutex<TokenBucket>>,
}

/// Holds a connection's place in the per-address count until dropped.
#[derive(Debug)]
pub(crate) struct Admitted {
    admission: Arc<Admission>,
    ip: IpAddr,
}

impl Admission {
    /// Limits of `per_address` open connections per address and `per_second` new
    /// connections per second; 0 means unlimited.
    pub(crate) fn new(per_address: usize, per_second: u32) -> Arc<Self> {
        Arc::new(Admission {
            per_address,
            open: Mutex::default(),
            rate: (per_second > 0).then(|| Mutex::new(TokenBucket::new(per_second))),
        })
    }

    /// Admits a new connection from `ip`, or says why not.
    pub(crate) fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Admitted, Refusal> {
        if let Some(rate) = &self.rate
            && !rate.lock().expect("rate lock").try_take()
        {
            return Err(Refusal::Rate);
        }
        let ip = ip.to_canonical();
        if self.per_address > 0 {
            let mut open = self.open.lock().expect("admission lock");
            let count = open.entry(ip).or_default();
            if *count >= self.per_address {
                return Err(Refusal::PerAddress);
            }
            *count += 1;
        }
        Ok(Admitted {
            admission: self.clone(),
            ip,
        })
    }

    /// Open connections counted for `ip`.
    #[cfg(test)]
    pub(crate) fn open_from(&self, ip: IpAddr) -> usize {
        let open = self.open.lock().expect("admission lock");
        open.get(&ip.to_canonical()).copied().unwrap_or(0)
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        if self.admission.per_address == 0 {
            return;
        }
        let mut open = self.admission.open.lock().expect("admission lock");
        if let Some(count) = open.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// Whether an `Origin` header value is allowed by the allow-list (empty: everything).
///
/// Entries are exact origins (`https://chat.example.com`, compared case-insensitively),
/// `https://*.example.com` for any subdomain, or `*`. Requests without an `Origin` header
/// (command-line clients, servers) are allowed: browsers always send one.
pub(crate) fn origin_allowed(allowed: &[String], origin: Option<&str>) -> bool {
    let Some(origin) = origin else {
        return true;
    };
    if allowed.is_empty() {
        return true;
    }
    let origin = origin.trim().to_ascii_lowercase();
    allowed.iter().any(|entry| {
        let entry = entry.to_ascii_lowercase();
        if entry == "*" || entry == origin {
            return true;
        }
        match entry.split_once("://*.") {
            Some((scheme, domain)) => origin
                .strip_prefix(scheme)
                .and_then(|rest| rest.strip_prefix("://"))
                .is_some_and(|host| host.ends_with(&format!(".{domain}"))),
            None => false,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bucket_refills_at_its_rate() {
        let mut b = TokenBucket::new(2);
        let t0 = b.last;
        assert!(b.try_take_at(t0));
        assert!(b.try_take_at(t0));
        assert!(!b.try_take_at(t0));
        assert!(b.try_take_at(t0 + Duration::from_millis(500)));
        assert!(!b.try_take_at(t0 + Duration::from_millis(600)));
        // Never more than one second's worth.
        assert!(b.try_take_at(t0 + Duration::from_secs(60)));
        assert!(b.try_take_at(t0 + Duration::from_secs(60)));
        assert!(!b.try_take_at(t0 + Duration::from_secs(60)));
    }

    #[test]
    fn a_burst_of_its_own_then_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::with_burst(2, 3, t0);
        assert!((0..3).all(|_| b.try_take_at(t0)));
        assert!(!b.try_take_at(t0));
        // Half a second at 2 per second gives one token back.
        let t1 = t0 + Duration::from_millis(500);
        assert!(b.try_take_at(t1));
        assert!(!b.try_take_at(t1));
        // A long pause refills to the burst, no more.
        let t2 = t1 + Duration::from_secs(60);
        assert_eq!((0..10).filter(|_| b.try_take_at(t2)).count(), 3);
    }

    #[test]
    fn per_address_counts_are_released_on_drop() {
        let a = Admission::new(2, 0);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let one = a.admit(ip).unwrap();
        let _two = a.admit(ip).unwrap();
        assert_eq!(a.admit(ip).unwrap_err(), Refusal::PerAddress);
        assert!(a.admit("192.0.2.2".parse().unwrap()).is_ok());
        drop(one);
        assert_eq!(a.open_from(ip), 1);
        assert!(a.admit(ip).is_ok());
    }

    #[test]
    fn ipv4_mapped_addresses_count_as_ipv4() {
        let a = Admission::new(1, 0);
        let _v4 = a.admit("192.0.2.1".parse().unwrap()).unwrap();
        assert!(a.admit("::ffff:192.0.2.1".parse().unwrap()).is_err());
    }

    #[test]
    fn origins() {
        let list = vec![
            "https://chat.example.com".to_owned(),
            "https://*.example.org".to_owned(),
        ];
        assert!(origin_allowed(&list, None));
        assert!(origin_allowed(&list, Some("https://chat.example.com")));
        assert!(origin_allowed(&list, Some("HTTPS://Chat.Example.com")));
        assert!(origin_allowed(&list, Some("https://a.b.example.org")));
        assert!(!origin_allowed(&list, Some("https://example.org")));
        assert!(!origin_allowed(&list, Some("http://chat.example.com")));
        assert!(!origin_allowed(&list, Some("https://evil.com")));
        assert!(!origin_allowed(
            &list,
            Some("https://chat.example.com.evil.com")
        ));
        assert!(origin_allowed(&[], Some("https://anything")));
        assert!(origin_allowed(&["*".to_owned()], Some("null")));
    }
}
