//! Guessing the admin token, slowed down: the refusals of each client address are counted, and
//! an address refused `server.admin_failures_per_minute` times within a minute gets 429 on
//! every admin request until that minute is over, its token right or not (a guess that happens
//! to be right must not tell itself apart). Per instance, in memory.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use dashmap::DashMap;

const WINDOW: Duration = Duration::from_secs(60);

/// Addresses remembered at most; past it, those whose minute is over are dropped first.
const MAX_ADDRESSES: usize = 10_000;

pub struct Guard {
    /// 0: off.
    limit: u32,
    /// Per address: when its first refusal of the current minute was, and how many since.
    refused: DashMap<IpAddr, (Instant, u32), foldhash::fast::RandomState>,
}

impl Guard {
    pub fn new(limit: u32) -> Guard {
        Guard {
            limit,
            refused: DashMap::default(),
        }
    }

    /// `Err(seconds)` while `ip` must wait before it may try again.
    pub fn check(&self, ip: IpAddr, now: Instant) -> Result<(), u64> {
        if self.limit == 0 {
            return Ok(());
        }
        let Some(entry) = self.refused.get(&ip) else {
            return Ok(());
        };
        let (since, count) = *entry;
        let ends = since + WINDOW;
        if count >= self.limit && now < ends {
            return Err(ends.duration_since(now).as_secs().max(1));
        }
        Ok(())
    }

    /// Counts a refusal of `ip`'s token.
    pub fn refused(&self, ip: IpAddr, now: Instant) {
        if self.limit == 0 {
            return;
        }
        if self.refused.len() >= MAX_ADDRESSES && !self.refused.contains_key(&ip) {
            self.refused.retain(|_, (since, _)| now < *since + WINDOW);
            if self.refused.len() >= MAX_ADDRESSES {
                // Still full of addresses refused this minute: counting one more is not worth
                // the memory; it is not locked out (its refusals are still logged).
                return;
            }
        }
        let mut entry = self.refused.entry(ip).or_insert((now, 0));
        let (since, count) = &mut *entry;
        if now >= *since + WINDOW {
            *since = now;
            *count = 0;
        }
        *count = count.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_refused_too_often_waits_out_its_minute() {
        let guard = Guard::new(3);
        let (a, b): (IpAddr, IpAddr) = ([10, 0, 0, 1].into(), [10, 0, 0, 2].into());
        let t0 = Instant::now();
        for i in 0..3 {
            assert_eq!(guard.check(a, t0), Ok(()), "refusal {i}");
            guard.refused(a, t0 + Duration::from_secs(i));
        }
        assert_eq!(guard.check(a, t0 + Duration::from_secs(10)), Err(50));
        // Another address is not held back.
        assert_eq!(guard.check(b, t0 + Duration::from_secs(10)), Ok(()));
        // The minute over, it may try again, and its count starts over.
        let later = t0 + WINDOW;
        assert_eq!(guard.check(a, later), Ok(()));
        guard.refused(a, later);
        assert_eq!(guard.check(a, later), Ok(()));
    }

    #[test]
    fn off_at_zero_and_bounded_in_memory() {
        let off = Guard::new(0);
        let ip: IpAddr = [10, 0, 0, 1].into();
        let now = Instant::now();
        for _ in 0..10 {
            off.refused(ip, now);
        }
        assert_eq!(off.check(ip, now), Ok(()));
        assert!(off.refused.is_empty());

        let guard = Guard::new(1);
        for i in 0..MAX_ADDRESSES as u32 + 10 {
            guard.refused(IpAddr::from((i + 1).to_be_bytes()), now);
        }
        assert_eq!(guard.refused.len(), MAX_ADDRESSES);
        // Once their minute is over, room is made for new ones.
        let later = now + WINDOW;
        let fresh: IpAddr = [192, 168, 1, 1].into();
        guard.refused(fresh, later);
        assert_eq!(guard.refused.len(), 1);
        assert!(guard.check(fresh, later).is_err());
    }
}
