//! The async edge of the live index: one kube-runtime `watcher` per kind
//! (list, then watch from the list's resourceVersion, resuming after a
//! dropped stream and re-listing after `410 Gone`), merged into one stream
//! of [`KindEvent`]s with raw objects. Failures become `Failed` /
//! `Forbidden` events and the kind's watcher waits (exponential backoff)
//! before it tries again; nothing here ends the stream.

use std::time::Duration;

use futures_util::stream::{self, BoxStream, Stream, StreamExt};
use kube::api::Api;
use kube::runtime::watcher::{self, Event};

use super::error::{chain_text, forbidden_reason};
use super::raw::{self, RawObject};
use crate::index::k8s_live::KindEvent;
use crate::model::k8s::RbacKind;

/// Delays between a watcher's failure and its next attempt: doubling from
/// `min` to `max`, back to `min` once the watcher makes progress again.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WatchBackoff {
    pub min: Duration,
    pub max: Duration,
    /// Add up to 50% random delay, so many watchers do not retry in step.
    pub jitter: bool,
}

impl Default for WatchBackoff {
    /// client-go's reflector values (what kube-runtime's `default_backoff` uses).
    fn default() -> Self {
        WatchBackoff {
            min: Duration::from_millis(800),
            max: Duration::from_secs(30),
            jitter: true,
        }
    }
}

/// How to watch a cluster.
#[derive(Clone, Debug, PartialEq)]
pub struct WatchOptions {
    /// Kinds to watch (default: all five).
    pub kinds: Vec<RbacKind>,
    /// Objects per list page during (re-)lists.
    pub page_size: u32,
    /// Server-side watch timeout (`timeoutSeconds`); kube-runtime's default
    /// (290 s) when `None`. The watcher resumes from the last version.
    pub timeout_secs: Option<u32>,
    /// Ask for BOOKMARK events, so resuming after a quiet period needs no re-list.
    pub bookmarks: bool,
    /// Initial lists as watch streams (`sendInitialEvents`, Kubernetes ≥ 1.27
    /// with the WatchList feature) instead of paged lists.
    pub streaming_lists: bool,
    pub backoff: WatchBackoff,
}

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions {
            kinds: RbacKind::ALL.to_vec(),
            page_size: super::PAGE_SIZE,
            timeout_secs: None,
            bookmarks: true,
            streaming_lists: false,
            backoff: WatchBackoff::default(),
        }
    }
}

/// Watches the five kinds (or `options.kinds`) cluster-wide. The stream
/// never ends by itself; drop it to stop watching.
pub fn watch_cluster(
    client: kube::Client,
    options: WatchOptions,
) -> impl Stream<Item = KindEvent> + Send {
    let streams: Vec<BoxStream<'static, KindEvent>> = options
        .kinds
        .iter()
        .map(|&kind| watch_kind(client.clone(), kind, &options))
        .collect();
    stream::select_all(streams)
}

fn watch_kind(
    client: kube::Client,
    kind: RbacKind,
    options: &WatchOptions,
) -> BoxStream<'static, KindEvent> {
    let api: Api<RawObject> = Api::all_with(client, &raw::api_resource(kind));
    let mut config = watcher::Config::default().page_size(options.page_size);
    if let Some(t) = options.timeout_secs {
        config = config.timeout(t);
    }
    if !options.bookmarks {
        config = config.disable_bookmarks();
    }
    if options.streaming_lists {
        config = config.streaming_lists();
    }
    let events = watcher::watcher(api, config).boxed();
    let state = (events, Delays::new(options.backoff), None::<Duration>);
    stream::unfold(state, move |(mut events, mut delays, wait)| async move {
        // Wait after a failure, before asking the watcher to try again.
        if let Some(wait) = wait {
            tokio::time::sleep(wait).await;
        }
        let item = events.next().await?;
        let wait = match &item {
            Err(_) => Some(delays.next_delay()),
            // `Init` starts every attempt, failed or not; only objects and a
            // finished list show that the watcher got somewhere.
            Ok(Event::Init) => None,
            Ok(_) => {
                delays.reset();
                None
            }
        };
        Some((translate(kind, item), (events, delays, wait)))
    })
    .boxed()
}

fn translate(kind: RbacKind, item: Result<Event<RawObject>, watcher::Error>) -> KindEvent {
    let object = |o: RawObject| crate::model::k8s::with_type(kind, o.value);
    match item {
        Ok(Event::Init) => KindEvent::Init { kind },
        Ok(Event::InitApply(o)) => KindEvent::InitApply {
            kind,
            object: object(o),
        },
        Ok(Event::InitDone) => KindEvent::InitDone { kind },
        Ok(Event::Apply(o)) => KindEvent::Apply {
            kind,
            object: object(o),
        },
        Ok(Event::Delete(o)) => KindEvent::Delete {
            kind,
            object: object(o),
        },
        Err(e) => failure(kind, &e),
    }
}

/// A watcher error as an event: 403 is `Forbidden` (with the user and
/// what to grant), everything else `Failed`.
fn failure(kind: RbacKind, err: &watcher::Error) -> KindEvent {
    let resource = raw::qualified_resource(kind);
    let (verb, client_error, status) = match err {
        watcher::Error::InitialListFailed(e) => ("list", Some(e), None),
        watcher::Error::WatchStartFailed(e) | watcher::Error::WatchFailed(e) => {
            ("watch", Some(e), None)
        }
        watcher::Error::WatchError(s) => ("watch", None, Some(&**s)),
        watcher::Error::NoResourceVersion => ("watch", None, None),
    };
    let status = status.or(match client_error {
        Some(kube::Error::Api(s)) => Some(&**s),
        _ => None,
    });
    if let Some(s) = status
        && s.code == 403
    {
        return KindEvent::Forbidden {
            kind,
            reason: forbidden_reason(verb, &resource, &s.message),
        };
    }
    let reason = match (status, client_error) {
        (Some(s), _) => format!("{verb} {resource}: {} {}: {}", s.code, s.reason, s.message),
        (None, Some(e)) => format!("{verb} {resource}: {}", chain_text(e)),
        (None, None) => format!("{verb} {resource}: {err}"),
    };
    KindEvent::Failed { kind, reason }
}

/// The backoff state of one watcher.
struct Delays {
    backoff: WatchBackoff,
    last: Option<Duration>,
}

impl Delays {
    fn new(backoff: WatchBackoff) -> Self {
        Delays {
            backoff,
            last: None,
        }
    }

    fn next_delay(&mut self) -> Duration {
        let base = match self.last {
            None => self.backoff.min,
            Some(d) => d.saturating_mul(2).min(self.backoff.max),
        };
        self.last = Some(base);
        if self.backoff.jitter {
            base.mul_f64(1.0 + rand::random::<f64>() * 0.5)
        } else {
            base
        }
    }

    fn reset(&mut self) {
        self.last = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap_and_reset() {
        let mut d = Delays::new(WatchBackoff {
            min: Duration::from_millis(100),
            max: Duration::from_millis(350),
            jitter: false,
        });
        let got: Vec<u128> = (0..4).map(|_| d.next_delay().as_millis()).collect();
        assert_eq!(got, [100, 200, 350, 350]);
        d.reset();
        assert_eq!(d.next_delay(), Duration::from_millis(100));
        let mut j = Delays::new(WatchBackoff::default());
        let first = j.next_delay();
        assert!(first >= Duration::from_millis(800) && first <= Duration::from_millis(1200));
    }

    #[test]
    fn forbidden_errors_name_the_verb_user_and_grant() {
        let status = kube::core::Status::failure(
            "roles.rbac.authorization.k8s.io is forbidden: User \"viewer\" cannot list resource \"roles\"",
            "Forbidden",
        )
        .with_code(403)
        .boxed();
        let e = watcher::Error::InitialListFailed(kube::Error::Api(status));
        match failure(RbacKind::Role, &e) {
            KindEvent::Forbidden { kind, reason } => {
                assert_eq!(kind, RbacKind::Role);
                assert!(
                    reason.starts_with("forbidden to list roles.rbac.authorization.k8s.io at cluster scope (user \"viewer\")"),
                    "{reason}"
                );
            }
            other => panic!("{other:?}"),
        }
        let gone = kube::core::Status::failure("too old resource version", "Expired")
            .with_code(410)
            .boxed();
        match failure(RbacKind::Role, &watcher::Error::WatchError(gone)) {
            KindEvent::Failed { reason, .. } => {
                assert_eq!(
                    reason,
                    "watch roles.rbac.authorization.k8s.io: 410 Expired: too old resource version"
                );
            }
            other => panic!("{other:?}"),
        }
    }
}
