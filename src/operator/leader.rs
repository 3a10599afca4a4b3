//! Leader election on a `coordination.k8s.io/v1` Lease.
//!
//! The Lease's holder and renew time come in each retry period; whether this
//! replica leads goes out on a watch channel. Only get, create and update are
//! used (what the chart's RBAC grants); every write carries the Lease's
//! resourceVersion, so two replicas never both win. A leader that cannot
//! renew within the renew deadline steps down before its Lease expires, so
//! at most one replica ever believes it leads. On shutdown the Lease is
//! released, so a follower takes over at once.

// Why this module and not the `kube-lease-manager` crate (0.13.1, which
// matches kube 5 / k8s-openapi 0.29): read from its source, when the holder
// cannot reach the API server its watch loop logs the error and retries
// without ever publishing `false`, so a partitioned leader keeps believing it
// leads past its Lease's expiry while another replica takes over; the
// guarantee above (step down within `renewDeadline`) would be lost, and its
// renewals are not observable from outside to rebuild that deadline around
// it. It also counts durations in whole seconds with no retry period, where
// `leaderElection.retryPeriod` and `renewDeadline` (docs/operator.md) are
// sub-second-capable settings the tests use (tests/operator.rs). So the chart's
// Role keeps exactly get, create and update on leases.
use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use std::time::Duration;
use tokio::sync::watch;

#[derive(Clone, Debug)]
pub struct LeaderConfig {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

/// What to do with the Lease as found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseAction {
    /// No Lease yet: create it, held by us.
    Create,
    /// We hold it: renew.
    Renew,
    /// Nobody holds it, or the holder let it expire: take it.
    Takeover,
    /// Someone else holds a live Lease.
    Follow,
}

/// The holder and renew time of a Lease, as the decision needs them.
#[derive(Clone, Debug, PartialEq)]
pub struct LeaseState {
    pub holder: Option<String>,
    pub renewed_at: Option<Timestamp>,
    pub duration: Option<Duration>,
}

/// Pure: what this replica should do with the Lease at `now`.
pub fn decide(
    lease: Option<&LeaseState>,
    me: &str,
    default_duration: Duration,
    now: Timestamp,
) -> LeaseAction {
    let Some(lease) = lease else {
        return LeaseAction::Create;
    };
    match lease.holder.as_deref() {
        Some(h) if h == me => LeaseAction::Renew,
        None | Some("") => LeaseAction::Takeover,
        Some(_) => {
            let duration = lease.duration.unwrap_or(default_duration);
            match lease.renewed_at.and_then(|t| t.checked_add(duration).ok()) {
                Some(expires) if expires > now => LeaseAction::Follow,
                _ => LeaseAction::Takeover,
            }
        }
    }
}

fn state_of(lease: &Lease) -> LeaseState {
    let spec = lease.spec.as_ref();
    LeaseState {
        holder: spec.and_then(|s| s.holder_identity.clone()),
        renewed_at: spec.and_then(|s| s.renew_time.as_ref()).map(|t| t.0),
        duration: spec
            .and_then(|s| s.lease_duration_seconds)
            .and_then(|s| u64::try_from(s).ok())
            .map(Duration::from_secs),
    }
}

fn now_micro() -> MicroTime {
    MicroTime(jiff::Timestamp::now())
}

/// One round: returns whether we hold the Lease afterwards.
async fn round(api: &Api<Lease>, cfg: &LeaderConfig) -> Result<bool, kube::Error> {
    let current = match api.get(&cfg.name).await {
        Ok(l) => Some(l),
        Err(kube::Error::Api(e)) if e.code == 404 => None,
        Err(e) => return Err(e),
    };
    let action = decide(
        current.as_ref().map(state_of).as_ref(),
        &cfg.identity,
        cfg.lease_duration,
        super::now(),
    );
    let seconds = i32::try_from(cfg.lease_duration.as_secs()).unwrap_or(i32::MAX);
    match (action, current) {
        (LeaseAction::Follow, _) => Ok(false),
        (LeaseAction::Create, _) => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(cfg.name.clone()),
                    namespace: Some(cfg.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(cfg.identity.clone()),
                    lease_duration_seconds: Some(seconds),
                    acquire_time: Some(now_micro()),
                    renew_time: Some(now_micro()),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            match api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                // Someone created it first.
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e),
            }
        }
        (LeaseAction::Renew | LeaseAction::Takeover, Some(mut lease)) => {
            let mut spec = lease.spec.take().unwrap_or_default();
            if action == LeaseAction::Takeover {
                spec.holder_identity = Some(cfg.identity.clone());
                spec.acquire_time = Some(now_micro());
                spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            }
            spec.renew_time = Some(now_micro());
            spec.lease_duration_seconds = Some(seconds);
            lease.spec = Some(spec);
            // The resourceVersion in the metadata makes this a compare-and-swap.
            match api.replace(&cfg.name, &PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e),
            }
        }
        (LeaseAction::Renew | LeaseAction::Takeover, None) => Ok(false),
    }
}

/// Releases the Lease if we hold it, so a follower need not wait for it to expire.
async fn release(api: &Api<Lease>, cfg: &LeaderConfig) -> Result<(), kube::Error> {
    let mut lease = api.get(&cfg.name).await?;
    let mine = lease
        .spec
        .as_ref()
        .and_then(|s| s.holder_identity.as_deref())
        .is_some_and(|h| h == cfg.identity);
    if mine {
        if let Some(spec) = lease.spec.as_mut() {
            spec.holder_identity = None;
        }
        api.replace(&cfg.name, &PostParams::default(), &lease)
            .await?;
    }
    Ok(())
}

/// Runs the election until `shutdown` resolves, publishing leadership on `leading`.
pub async fn run(
    api: Api<Lease>,
    cfg: LeaderConfig,
    leading: watch::Sender<bool>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut last_renewed: Option<tokio::time::Instant> = None;
    loop {
        match round(&api, &cfg).await {
            Ok(true) => {
                last_renewed = Some(tokio::time::Instant::now());
                if !*leading.borrow() {
                    tracing::info!(identity = %cfg.identity, lease = %cfg.name, "became leader");
                }
                leading.send_replace(true);
            }
            Ok(false) => {
                if *leading.borrow() {
                    tracing::warn!(identity = %cfg.identity, "lost the lease to another replica");
                }
                last_renewed = None;
                leading.send_replace(false);
            }
            Err(e) => {
                tracing::warn!(error = %e, lease = %cfg.name, "lease round failed");
                // Step down before the Lease can expire under us.
                let stale = last_renewed.is_none_or(|t| t.elapsed() >= cfg.renew_deadline);
                if stale && *leading.borrow() {
                    tracing::warn!(identity = %cfg.identity, "could not renew within the deadline; stepping down");
                    leading.send_replace(false);
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(cfg.retry_period) => {}
            _ = shutdown.changed() => break,
        }
    }
    if *leading.borrow() {
        leading.send_replace(false);
        if let Err(e) = release(&api, &cfg).await {
            tracing::warn!(error = %e, "could not release the lease");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).unwrap()
    }

    fn held(by: &str, at: i64) -> LeaseState {
        LeaseState {
            holder: Some(by.into()),
            renewed_at: Some(ts(at)),
            duration: Some(Duration::from_secs(15)),
        }
    }

    #[test]
    fn decisions() {
        let d = Duration::from_secs(15);
        assert_eq!(decide(None, "a", d, ts(100)), LeaseAction::Create);
        assert_eq!(
            decide(Some(&held("a", 90)), "a", d, ts(100)),
            LeaseAction::Renew
        );
        assert_eq!(
            decide(Some(&held("b", 90)), "a", d, ts(100)),
            LeaseAction::Follow
        );
        assert_eq!(
            decide(Some(&held("b", 80)), "a", d, ts(100)),
            LeaseAction::Takeover
        );
        let released = LeaseState {
            holder: None,
            renewed_at: Some(ts(99)),
            duration: None,
        };
        assert_eq!(
            decide(Some(&released), "a", d, ts(100)),
            LeaseAction::Takeover
        );
    }
}
