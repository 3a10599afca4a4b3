//! Safety rails around reverting: a rate limit per source and flapping
//! detection per object.
//!
//! Times of past reverts come in (the caller records them and passes `now`);
//! a [`Gate`] answer comes out: go, wait (rate limit), or stop reverting this
//! object (reverted `flappingCount` times within `flappingWindow`: something,
//! typically a GitOps controller, keeps putting it back). Pure.

use crate::config::RevertConfig;
use jiff::{SignedDuration, Timestamp};
use std::collections::{BTreeMap, VecDeque};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Gate {
    Go,
    /// The source reverted `rateLimit` times in the window; try again at this time.
    RateLimited(Timestamp),
    /// The object is flapping: no more reverts until an operator looks.
    Flapping {
        reverts: usize,
    },
}

impl Gate {
    pub fn label(&self) -> &'static str {
        match self {
            Gate::Go => "go",
            Gate::RateLimited(_) => "rate-limited",
            Gate::Flapping { .. } => "flapping",
        }
    }
}

/// Revert history of one source.
#[derive(Clone, Debug)]
pub struct Rails {
    rate_limit: usize,
    rate_window: SignedDuration,
    flapping_count: usize,
    flapping_window: SignedDuration,
    recent: VecDeque<Timestamp>,
    per_object: BTreeMap<String, VecDeque<Timestamp>>,
}

fn signed(d: std::time::Duration) -> SignedDuration {
    SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX)
}

impl Rails {
    pub fn new(config: &RevertConfig) -> Self {
        Rails {
            rate_limit: config.rate_limit.max(1),
            rate_window: signed(config.rate_window.0),
            flapping_count: config.flapping_count.max(1),
            flapping_window: signed(config.flapping_window.0),
            recent: VecDeque::new(),
            per_object: BTreeMap::new(),
        }
    }

    /// May `object` be reverted at `now`? Does not record anything.
    pub fn check(&mut self, object: &str, now: Timestamp) -> Gate {
        let (rate_window, flapping_window) = (self.rate_window, self.flapping_window);
        self.recent.retain(|t| now.duration_since(*t) < rate_window);
        if let Some(times) = self.per_object.get_mut(object) {
            times.retain(|t| now.duration_since(*t) < flapping_window);
            if times.len() >= self.flapping_count {
                return Gate::Flapping {
                    reverts: times.len(),
                };
            }
        }
        if self.recent.len() >= self.rate_limit
            && let Some(oldest) = self.recent.front()
        {
            return Gate::RateLimited(*oldest + rate_window);
        }
        Gate::Go
    }

    /// How many objects are flapping at `now` (what `permdrift_revert_flapping`
    /// shows); objects whose reverts all left the window are forgotten.
    pub fn flapping(&mut self, now: Timestamp) -> usize {
        let window = self.flapping_window;
        self.per_object.retain(|_, times| {
            times.retain(|t| now.duration_since(*t) < window);
            !times.is_empty()
        });
        let count = self.flapping_count;
        self.per_object
            .values()
            .filter(|times| times.len() >= count)
            .count()
    }

    /// Records a revert of `object` at `now`.
    pub fn record(&mut self, object: &str, now: Timestamp) {
        self.recent.push_back(now);
        self.per_object
            .entry(object.to_owned())
            .or_default()
            .push_back(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Dur;
    use std::time::Duration;

    fn config() -> RevertConfig {
        RevertConfig {
            rate_limit: 3,
            rate_window: Dur(Duration::from_secs(60)),
            flapping_count: 3,
            flapping_window: Dur(Duration::from_secs(600)),
            ..RevertConfig::default()
        }
    }

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    #[test]
    fn a_source_reverts_at_most_rate_limit_times_per_window() {
        let mut rails = Rails::new(&config());
        for (i, object) in ["a", "b", "c"].into_iter().enumerate() {
            assert_eq!(rails.check(object, at(i as i64)), Gate::Go);
            rails.record(object, at(i as i64));
        }
        assert_eq!(rails.check("d", at(10)), Gate::RateLimited(at(60)));
        assert_eq!(rails.check("d", at(60)), Gate::Go);
    }

    #[test]
    fn an_object_reverted_k_times_in_t_is_flapping_until_the_window_passes() {
        let mut rails = Rails::new(&config());
        for i in 0..3 {
            assert_eq!(rails.check("crb", at(i * 100)), Gate::Go);
            rails.record("crb", at(i * 100));
        }
        let gate = rails.check("crb", at(300));
        assert_eq!(gate, Gate::Flapping { reverts: 3 });
        assert_eq!(gate.label(), "flapping");
        // Other objects are not held back by it.
        assert_eq!(rails.check("other", at(300)), Gate::Go);
        assert_eq!(rails.flapping(at(300)), 1);
        // Once the first revert leaves the window, it may go again.
        assert_eq!(rails.check("crb", at(600)), Gate::Go);
        assert_eq!(rails.flapping(at(600)), 0);
    }
}
