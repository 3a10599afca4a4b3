//! Retrying a failed revert operation with exponential backoff.
//!
//! An operation (an async closure) and its error's [`Retry`] class come in;
//! retryable failures (throttling, transport) are tried again after `first`,
//! `2 × first`, … capped at `max`, up to `attempts` tries; a permanent
//! failure (403, invalid) stops at once, and so does a conflict, which the
//! caller answers with a fresh read and a new plan.
//! The last error comes out with the number of tries, for the
//! `PermdriftRevertFailed` alert. The delays are a pure function
//! ([`Backoff::delay`]); only [`run`] sleeps.

use super::Retry;
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    pub first: Duration,
    pub max: Duration,
    /// Tries in all, the first included.
    pub attempts: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            first: Duration::from_millis(200),
            max: Duration::from_secs(10),
            attempts: 5,
        }
    }
}

impl Backoff {
    /// The wait before try `attempt` (0-based; none before the first), or
    /// `None` when no tries are left.
    pub fn delay(&self, attempt: u32) -> Option<Duration> {
        if attempt >= self.attempts {
            return None;
        }
        if attempt == 0 {
            return Some(Duration::ZERO);
        }
        let factor = 1u32.checked_shl(attempt - 1).unwrap_or(u32::MAX);
        Some(self.first.saturating_mul(factor).min(self.max))
    }
}

/// An error that says whether trying again can help.
pub trait Classified {
    fn retry(&self) -> Retry;
}

impl Classified for super::k8s::K8sRevertError {
    fn retry(&self) -> Retry {
        super::k8s::K8sRevertError::retry(self)
    }
}

impl Classified for super::aws::IamRevertError {
    fn retry(&self) -> Retry {
        super::aws::IamRevertError::retry(self)
    }
}

/// The last error and how many tries were made.
#[derive(Debug)]
pub struct Failed<E> {
    pub error: E,
    pub tries: u32,
}

/// Runs `op` until it succeeds, fails permanently, or the tries run out.
pub async fn run<T, E, F, Fut>(backoff: &Backoff, mut op: F) -> Result<T, Failed<E>>
where
    E: Classified,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let mut attempt = 0;
    loop {
        match op().await {
            Ok(value) => return Ok(value),
            Err(error) => {
                attempt += 1;
                let next = backoff.delay(attempt);
                match (error.retry(), next) {
                    (Retry::Retryable, Some(wait)) => tokio::time::sleep(wait).await,
                    _ => {
                        return Err(Failed {
                            error,
                            tries: attempt,
                        });
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn delays_double_up_to_the_cap_and_stop_after_the_last_try() {
        let b = Backoff {
            first: Duration::from_millis(100),
            max: Duration::from_millis(350),
            attempts: 5,
        };
        let delays: Vec<Option<u128>> = (0..6).map(|a| b.delay(a).map(|d| d.as_millis())).collect();
        assert_eq!(
            delays,
            [Some(0), Some(100), Some(200), Some(350), Some(350), None]
        );
    }

    #[derive(Debug)]
    struct E(Retry);
    impl Classified for E {
        fn retry(&self) -> Retry {
            self.0
        }
    }

    fn quick(attempts: u32) -> Backoff {
        Backoff {
            first: Duration::from_millis(1),
            max: Duration::from_millis(2),
            attempts,
        }
    }

    #[tokio::test]
    async fn throttling_is_retried_until_it_passes_and_a_403_is_not() {
        let calls = AtomicU32::new(0);
        let result = run(&quick(5), || {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            async move {
                if n < 2 {
                    Err(E(Retry::Retryable))
                } else {
                    Ok(n)
                }
            }
        })
        .await;
        assert_eq!(result.unwrap(), 2);
        let calls = AtomicU32::new(0);
        let result: Result<(), _> = run(&quick(5), || {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Err(E(Retry::Permanent)) }
        })
        .await;
        assert_eq!(result.unwrap_err().tries, 1);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn retries_end_after_the_configured_tries() {
        let calls = AtomicU32::new(0);
        let result: Result<(), _> = run(&quick(3), || {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Err(E(Retry::Retryable)) }
        })
        .await;
        let failed = result.unwrap_err();
        assert_eq!(failed.tries, 3);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }
}
