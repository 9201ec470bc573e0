//! Per-connection token buckets for the chat's requests.
//!
//! Each connection has a bucket of `burst` tokens, refilled at `rate` per second; a request
//! takes one token or is refused with `rate_limited`. Buckets live in a sharded map so that
//! connections on different threads rarely meet on a lock; a connection's bucket is made on
//! its first chat request and dropped at its `$disconnect`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use crate::ids::Id;

const SHARDS: usize = 16;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

type Shard = Mutex<HashMap<Id, Bucket, foldhash::fast::RandomState>>;

/// Token buckets by connection.
#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    shards: Box<[Shard]>,
}

impl RateLimiter {
    /// Buckets of `burst` tokens refilled at `rate_per_sec`; a rate of 0 allows everything.
    pub fn new(rate_per_sec: u32, burst: u32) -> Self {
        RateLimiter {
            rate: f64::from(rate_per_sec),
            burst: f64::from(burst.max(1)),
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }

    fn shard(&self, id: &Id) -> &Shard {
        let b = id.as_str().as_bytes();
        &self.shards[(b[0] as usize ^ ((b[1] as usize) << 2)) % SHARDS]
    }

    /// Takes a token from the connection's bucket; false when it is empty.
    pub fn allow(&self, id: Id) -> bool {
        self.allow_at(id, Instant::now())
    }

    /// [`allow`](Self::allow) at a given time.
    pub fn allow_at(&self, id: Id, now: Instant) -> bool {
        if self.rate == 0.0 {
            return true;
        }
        let mut shard = self.shard(&id).lock().expect("rate limiter lock");
        let bucket = shard.entry(id).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.rate).min(self.burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Drops the connection's bucket.
    pub fn forget(&self, id: Id) {
        self.shard(&id)
            .lock()
            .expect("rate limiter lock")
            .remove(&id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bursts_then_refills_at_the_rate() {
        let limiter = RateLimiter::new(2, 3);
        let (a, b) = (Id::random(), Id::random());
        let t0 = Instant::now();
        assert!((0..3).all(|_| limiter.allow_at(a, t0)));
        assert!(!limiter.allow_at(a, t0));
        assert!(limiter.allow_at(b, t0), "buckets are per connection");
        // Half a second at 2 per second gives one token back.
        let t1 = t0 + Duration::from_millis(500);
        assert!(limiter.allow_at(a, t1));
        assert!(!limiter.allow_at(a, t1));
        // A long pause refills to the burst, no more.
        let t2 = t1 + Duration::from_secs(60);
        assert_eq!((0..10).filter(|_| limiter.allow_at(a, t2)).count(), 3);
        limiter.forget(a);
        assert!(
            limiter.allow_at(a, t2),
            "a forgotten connection starts full"
        );
    }

    #[test]
    fn a_zero_rate_allows_everything() {
        let limiter = RateLimiter::new(0, 0);
        let a = Id::random();
        assert!((0..1000).all(|_| limiter.allow(a)));
    }
}
