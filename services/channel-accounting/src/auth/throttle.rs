//! Failed operator logins, counted per login name and per client address in
//! Redis, so the limit holds across replicas (an in-memory limiter would
//! give a guesser one allowance per replica). Fixed windows: a counter
//! starts its window at its first failure and is gone when it ends.
//!
//! An attempt is counted *before* the password is checked and given back
//! when it succeeds, so a burst of parallel guesses cannot all pass a check
//! made before any of them failed. Over a limit the password is not
//! checked at all: the answer is `429 LOGIN_THROTTLED` with `Retry-After`.
//! Unknown logins are counted exactly like known ones, so the throttle does
//! not tell which logins exist.

use std::net::IpAddr;

use jyt_cache::redis::{self, Script};
use jyt_cache::{Keyspace, RedisConn};
use sha2::{Digest, Sha256};

use crate::error::AccountingError;
use crate::settings::OperatorSettings;

/// KEYS: the per-name and per-address counters. ARGV: their limits, then
/// the window in ms. Refused: `{1 or 2 (the limit reached), ms until its
/// window ends}`; admitted: `{0, 0}`, the attempt counted in both.
const ADMIT: &str = r"
for i = 1, 2 do
  if tonumber(redis.call('GET', KEYS[i]) or '0') >= tonumber(ARGV[i]) then
    local ttl = redis.call('PTTL', KEYS[i])
    if ttl < 0 then
      redis.call('PEXPIRE', KEYS[i], ARGV[3])
      ttl = tonumber(ARGV[3])
    end
    return {i, ttl}
  end
end
for i = 1, 2 do
  redis.call('INCR', KEYS[i])
  if redis.call('PTTL', KEYS[i]) < 0 then redis.call('PEXPIRE', KEYS[i], ARGV[3]) end
end
return {0, 0}
";

/// Give back an attempt that was not a failure (DECR keeps the TTL; a
/// counter whose window already ended is left gone).
const FORGIVE: &str = r"
for i = 1, #KEYS do
  if tonumber(redis.call('GET', KEYS[i]) or '0') > 0 then redis.call('DECR', KEYS[i]) end
end
return 0
";

pub struct LoginThrottle {
    redis: RedisConn,
    keys: Keyspace,
    max_per_name: u32,
    max_per_address: u32,
    window_ms: u64,
    admit: Script,
    forgive: Script,
}

/// An admitted attempt, counted until it is forgiven.
#[derive(Debug)]
pub struct Attempt {
    keys: [String; 2],
}

impl LoginThrottle {
    pub fn new(redis: RedisConn, keys: Keyspace, settings: &OperatorSettings) -> Self {
        Self {
            redis,
            keys,
            max_per_name: settings.max_failed_logins_per_name,
            max_per_address: settings.max_failed_logins_per_address,
            window_ms: settings.failed_login_window_seconds.saturating_mul(1000),
            admit: Script::new(ADMIT),
            forgive: Script::new(FORGIVE),
        }
    }

    /// Count an attempt for `login` from `peer` (the TCP peer: a
    /// forwarded-for header is whatever the guesser wants it to be), or
    /// refuse it when either has used up its failures.
    pub async fn admit(&self, login: &str, peer: Option<IpAddr>) -> Result<Attempt, AccountingError> {
        let keys = [
            // Hashed: a login box sometimes receives a password.
            self.keys.tagged(
                "op-login",
                &format!("name:{}", hex::encode(Sha256::digest(login.as_bytes()))),
            ),
            self.keys
                .tagged("op-login", &format!("addr:{}", address_key(peer))),
        ];
        let mut conn = self.redis.clone();
        let (limit, ttl_ms): (i64, i64) = self
            .admit
            .key(&keys[0])
            .key(&keys[1])
            .arg(self.max_per_name)
            .arg(self.max_per_address)
            .arg(self.window_ms)
            .invoke_async(&mut conn)
            .await?;
        match limit {
            0 => Ok(Attempt { keys }),
            n => Err(AccountingError::LoginThrottled {
                limit: if n == 1 { "login name" } else { "client address" },
                // Whole seconds, rounded up, never 0.
                retry_after_seconds: u64::try_from(ttl_ms).map_or(1, |ms| ms.div_ceil(1000).max(1)),
            }),
        }
    }

    /// The attempt was not a failed guess (it logged in, or we failed).
    pub async fn forgive(&self, attempt: &Attempt) {
        let mut conn = self.redis.clone();
        let result: redis::RedisResult<i64> = self
            .forgive
            .key(&attempt.keys[0])
            .key(&attempt.keys[1])
            .invoke_async(&mut conn)
            .await;
        if let Err(e) = result {
            // The attempt stays counted until its window ends: stricter,
            // never looser.
            tracing::warn!(error = %e, "could not give back a login attempt");
        }
    }
}

/// One bucket per IPv4 address and per IPv6 /64 (one host usually holds a
/// whole /64); an unknown peer (no TCP socket) shares one bucket.
fn address_key(peer: Option<IpAddr>) -> String {
    match peer.map(|ip| ip.to_canonical()) {
        Some(IpAddr::V4(v4)) => v4.to_string(),
        Some(IpAddr::V6(v6)) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
        None => "unknown".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_bucketed_per_ipv4_host_and_ipv6_slash_64() {
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        assert_eq!(address_key(ip("10.1.2.3")), "10.1.2.3");
        assert_eq!(address_key(ip("::ffff:10.1.2.3")), "10.1.2.3");
        assert_eq!(
            address_key(ip("2001:db8:1:2:aaaa::1")),
            address_key(ip("2001:db8:1:2:bbbb::2"))
        );
        assert_ne!(
            address_key(ip("2001:db8:1:2::1")),
            address_key(ip("2001:db8:1:3::1"))
        );
        assert_eq!(address_key(None), "unknown");
    }
}
