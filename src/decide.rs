//! Recording changes against a source's approved baseline.
//!
//! A source's baseline, its current state and the key of an object that
//! changed come in; an [`Outcome`] comes out: the classified change with its
//! verdict (allow or alert), whether the baseline advances to the current
//! object, and whether an earlier open widening closes. Narrowing and neutral
//! changes advance the baseline; allow-listed widening too; any other
//! widening stays open until accepted (later: approved or reverted). Pure: no
//! I/O, and `now` (a timestamp) is passed in.

use crate::classify::aws::RiskSets;
use crate::config::{AllowRule, Mode};
use crate::diff::{self, DiffOptions};
use crate::grants::catalog::Catalog;
use crate::grants::glob;
use crate::index::aws::AwsModel;
use crate::index::k8s::K8sModel;
use crate::model::aws::AwsKey;
use crate::model::k8s::RbacKey;
use crate::report::{Change, Direction, Severity};
use crate::snapshot::{SourceData, SourceSnapshot};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// An object of either platform.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ObjectKey {
    K8s(RbacKey),
    Aws(AwsKey),
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ObjectKey::K8s(k) => k.fmt(f),
            ObjectKey::Aws(k) => k.fmt(f),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Allow,
    Alert,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::Alert => "alert",
        }
    }
}

/// A widening that is recorded and not yet closed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OpenWidening {
    pub object: String,
    pub fingerprint: String,
    /// What the object grants beyond the baseline ([`grants_digest`]): an
    /// edit that keeps it (a label, a reordered list) is the same widening.
    pub grants: String,
    pub severity: Severity,
    /// When this object's widening was first detected; kept when later
    /// edits supersede it, since the exposure started then.
    pub detected_at: Timestamp,
}

/// A digest of what a change grants beyond the baseline: the gained grants
/// as listed (sorted, at most `max_grants`), their exact count and the
/// severity. Equal digests mean the same widening.
pub fn grants_digest(change: &Change) -> String {
    use sha2::{Digest, Sha256};
    // Serialized straight from the structs (no value tree): this runs per change.
    let body = (&change.gained, change.gained_count, change.severity);
    // Grants are plain strings and numbers, so this cannot fail; if it ever
    // did, the fingerprint keeps distinct changes distinct.
    let bytes =
        serde_json::to_vec(&body).unwrap_or_else(|_| change.fingerprint.clone().into_bytes());
    hex::encode(Sha256::digest(&bytes))
}

#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// The object equals the baseline; an open widening of it, if any, closed (undone by someone).
    Restored {
        closed: Option<OpenWidening>,
    },
    /// This widening is already recorded and open: seen again after a restart
    /// or re-list, or the object was edited without changing what it grants
    /// beyond the baseline.
    AlreadyOpen,
    Judged(Box<Judged>),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Judged {
    pub change: Change,
    pub verdict: Verdict,
    pub reason: String,
    /// [`grants_digest`] of the change, computed once.
    pub grants: String,
    /// The baseline now holds the current object.
    pub advanced: bool,
    /// An earlier open widening of the same object this change replaces or closes.
    pub superseded: Option<OpenWidening>,
}

/// What decides verdicts for one source.
pub struct Policy<'a> {
    pub source: &'a str,
    pub mode: Mode,
    pub allow: &'a [AllowRule],
}

impl Policy<'_> {
    /// The allow-list rule a change matches, if any: the source, the object
    /// and every gained grant's subject match (the subjects who gain; the
    /// role itself for a widening nobody holds yet), and its risks are all listed.
    pub fn allowed_by(&self, change: &Change) -> Option<&AllowRule> {
        self.allow.iter().find(|rule| {
            rule.source.as_deref().is_none_or(|s| s == self.source)
                && rule.object.as_deref().is_none_or(|pattern| {
                    glob::matches(pattern, &change.object.display())
                        || change
                            .object
                            .arn
                            .as_deref()
                            .is_some_and(|arn| glob::matches(pattern, arn))
                        || glob::matches(
                            pattern,
                            &format!("{}/{}", change.object.kind, change.object.name),
                        )
                })
                && rule.subject.as_deref().is_none_or(|pattern| {
                    // A role change's own (latent) lines name the role, not
                    // who gains; they are matched only when nobody gains today.
                    let held = change.gained.iter().any(|g| !g.latent);
                    change
                        .gained
                        .iter()
                        .filter(|g| !held || !g.latent)
                        .all(|g| glob::matches(pattern, &g.subject))
                })
                && rule
                    .risks
                    .as_ref()
                    .is_none_or(|listed| change.risks.iter().all(|r| listed.contains(&r.as_str())))
        })
    }

    /// The verdict on a change, why, and whether the baseline may advance to it.
    pub fn verdict(&self, change: &Change) -> (Verdict, String, bool) {
        match change.direction {
            Direction::Narrowing => (Verdict::Allow, "narrowing".into(), true),
            Direction::Neutral => (
                Verdict::Allow,
                "neutral: no permission changed".into(),
                true,
            ),
            Direction::Widening | Direction::Mixed => match self.allowed_by(change) {
                Some(rule) => (
                    Verdict::Allow,
                    format!(
                        "allow-listed by {:?}{}",
                        rule.name,
                        rule.reason
                            .as_deref()
                            .map(|r| format!(": {r}"))
                            .unwrap_or_default()
                    ),
                    true,
                ),
                None => match self.mode {
                    Mode::Detect => (
                        Verdict::Alert,
                        "unapproved widening (detect mode)".into(),
                        false,
                    ),
                    Mode::DryRun => (
                        Verdict::Alert,
                        "unapproved widening (dry-run mode: revert planned, not run)".into(),
                        false,
                    ),
                    Mode::Enforce => (
                        Verdict::Alert,
                        "unapproved widening (enforce mode: revert planned)".into(),
                        false,
                    ),
                },
            },
        }
    }
}

/// The judged state of one source: its baseline and its open widenings.
pub struct SourceState {
    pub baseline: SourceSnapshot,
    pub open: BTreeMap<ObjectKey, OpenWidening>,
}

impl SourceState {
    pub fn new(baseline: SourceSnapshot) -> Self {
        Self {
            baseline,
            open: BTreeMap::new(),
        }
    }

    /// Open widenings whose object no longer differs from the baseline
    /// (`differing` holds every key that does, or whose state is unknown):
    /// undone while nobody watched. They are taken out of the open set.
    pub fn restored_while_down(
        &mut self,
        differing: &std::collections::BTreeSet<ObjectKey>,
    ) -> Vec<(ObjectKey, OpenWidening)> {
        let restored: Vec<ObjectKey> = self
            .open
            .keys()
            .filter(|k| !differing.contains(*k))
            .cloned()
            .collect();
        restored
            .into_iter()
            .filter_map(|k| self.open.remove(&k).map(|o| (k, o)))
            .collect()
    }

    fn finish(
        &mut self,
        key: ObjectKey,
        change: Change,
        policy: &Policy<'_>,
        now: Timestamp,
    ) -> Outcome {
        let grants = grants_digest(&change);
        let detected_at = self.open.get(&key).map(|o| o.detected_at);
        if let Some(o) = self.open.get_mut(&key)
            && (o.fingerprint == change.fingerprint
                || (change.direction.widens() && o.grants == grants))
        {
            o.fingerprint = change.fingerprint;
            return Outcome::AlreadyOpen;
        }
        let (verdict, reason, advanced) = policy.verdict(&change);
        let superseded = if advanced {
            self.open.remove(&key)
        } else {
            let detected_at = detected_at.unwrap_or(now);
            self.open.insert(
                key,
                OpenWidening {
                    object: change.object.display(),
                    fingerprint: change.fingerprint.clone(),
                    grants: grants.clone(),
                    severity: change.severity,
                    detected_at,
                },
            )
        };
        Outcome::Judged(Box::new(Judged {
            change,
            verdict,
            reason,
            grants,
            advanced,
            superseded,
        }))
    }

    /// Judges the Kubernetes object `key` of `current` against the baseline.
    pub fn judge_k8s(
        &mut self,
        current: &K8sModel,
        key: &RbacKey,
        policy: &Policy<'_>,
        now: Timestamp,
        options: &DiffOptions,
    ) -> Outcome {
        let SourceData::Kubernetes(baseline) = &self.baseline.data else {
            return Outcome::AlreadyOpen;
        };
        let Some(object_change) = diff::k8s_object_change(baseline, current, key) else {
            let closed = self.open.remove(&ObjectKey::K8s(key.clone()));
            return Outcome::Restored { closed };
        };
        let (change, _) = {
            let mut differ = diff::k8s::K8sDiffer::new(baseline, current);
            let mut classifier = crate::classify::k8s::Classifier::new();
            diff::k8s_change(
                &mut differ,
                &mut classifier,
                policy.source,
                object_change,
                options,
            )
        };
        let outcome = self.finish(ObjectKey::K8s(key.clone()), change, policy, now);
        if let Outcome::Judged(j) = &outcome
            && j.advanced
        {
            self.advance_k8s(current, key);
        }
        outcome
    }

    /// Judges the IAM entity `key` of `current` against the baseline, with
    /// the catalog and its risk sets (built once, not per entity).
    pub fn judge_aws(
        &mut self,
        current: &AwsModel,
        (catalog, sets): (&Catalog, &RiskSets),
        key: &AwsKey,
        policy: &Policy<'_>,
        now: Timestamp,
        options: &DiffOptions,
    ) -> Outcome {
        let SourceData::Aws(baseline) = &self.baseline.data else {
            return Outcome::AlreadyOpen;
        };
        let Some(object_change) = diff::aws_object_change(baseline, current, key) else {
            let closed = self.open.remove(&ObjectKey::Aws(key.clone()));
            return Outcome::Restored { closed };
        };
        let account = self
            .baseline
            .meta
            .account_id
            .clone()
            .or_else(|| current.account_id().map(str::to_owned))
            .unwrap_or_else(|| "unknown".into());
        let (change, _, _) = {
            let mut differ = diff::aws::AwsDiffer::new(baseline, current, catalog);
            diff::aws_change(
                &mut differ,
                sets,
                catalog,
                policy.source,
                &format!("account:{account}"),
                object_change,
                options,
            )
        };
        let outcome = self.finish(ObjectKey::Aws(key.clone()), change, policy, now);
        if let Outcome::Judged(j) = &outcome
            && j.advanced
        {
            self.advance_aws(current, key);
        }
        outcome
    }

    /// Makes the baseline hold `current`'s version of `key` (or not hold it).
    pub fn advance_k8s(&mut self, current: &K8sModel, key: &RbacKey) {
        if let SourceData::Kubernetes(baseline) = &mut self.baseline.data {
            match current.get(key) {
                Some(object) => {
                    baseline.insert(object.clone());
                }
                None => {
                    baseline.remove(key);
                }
            }
        }
    }

    pub fn advance_aws(&mut self, current: &AwsModel, key: &AwsKey) {
        if let SourceData::Aws(baseline) = &mut self.baseline.data {
            match current.get(key) {
                Some(object) => {
                    baseline.insert(key.clone(), object.clone());
                }
                None => {
                    baseline.remove(key);
                }
            }
        }
    }

    /// Accepts every open widening: the baseline takes the current objects.
    pub fn accept_all_k8s(&mut self, current: &K8sModel) -> Vec<(ObjectKey, OpenWidening)> {
        let open = std::mem::take(&mut self.open);
        for key in open.keys() {
            if let ObjectKey::K8s(k) = key {
                self.advance_k8s(current, k);
            }
        }
        open.into_iter().collect()
    }

    pub fn accept_all_aws(&mut self, current: &AwsModel) -> Vec<(ObjectKey, OpenWidening)> {
        let open = std::mem::take(&mut self.open);
        for key in open.keys() {
            if let ObjectKey::Aws(k) = key {
                self.advance_aws(current, k);
            }
        }
        open.into_iter().collect()
    }

    /// When the oldest open widening of `severity` was detected, if any is open.
    pub fn oldest_open(&self, severity: Severity) -> Option<Timestamp> {
        self.open
            .values()
            .filter(|o| o.severity == severity)
            .map(|o| o.detected_at)
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    /// `secs` seconds after the Unix epoch.
    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).unwrap()
    }

    fn reader() -> Value {
        json!({"apiVersion":"rbac.authorization.k8s.io/v1","kind":"ClusterRole","metadata":{"name":"reader"},
            "rules":[{"apiGroups":[""],"resources":["secrets"],"verbs":["get"]}]})
    }

    fn binding(group: &str) -> Value {
        json!({"apiVersion":"rbac.authorization.k8s.io/v1","kind":"ClusterRoleBinding","metadata":{"name":"b"},
            "roleRef":{"apiGroup":"rbac.authorization.k8s.io","kind":"ClusterRole","name":"reader"},
            "subjects":[{"kind":"Group","name":group,"apiGroup":"rbac.authorization.k8s.io"}]})
    }

    fn state(objects: &[Value]) -> SourceState {
        SourceState::new(SourceSnapshot::kubernetes("c", K8sModel::of(objects)))
    }

    fn policy(allow: &[AllowRule]) -> Policy<'_> {
        Policy {
            source: "c",
            mode: Mode::Detect,
            allow,
        }
    }

    fn key() -> RbacKey {
        RbacKey::new(crate::model::k8s::RbacKind::ClusterRoleBinding, None, "b")
    }

    #[test]
    fn widening_stays_open_and_is_not_recorded_twice() {
        let mut s = state(&[reader()]);
        let current = K8sModel::of(&[reader(), binding("eng")]);
        let options = DiffOptions::default();
        let Outcome::Judged(j) = s.judge_k8s(&current, &key(), &policy(&[]), t(100), &options)
        else {
            panic!()
        };
        assert_eq!(j.verdict, Verdict::Alert);
        assert!(!j.advanced);
        assert_eq!(s.open.len(), 1);
        assert_eq!(
            s.judge_k8s(&current, &key(), &policy(&[]), t(200), &options),
            Outcome::AlreadyOpen
        );
        // Undoing it closes the open widening.
        let Outcome::Restored { closed: Some(c) } = s.judge_k8s(
            &K8sModel::of(&[reader()]),
            &key(),
            &policy(&[]),
            t(300),
            &options,
        ) else {
            panic!()
        };
        assert_eq!(c.detected_at, t(100));
        assert!(s.open.is_empty());
    }

    #[test]
    fn narrowing_advances_the_baseline() {
        let mut s = state(&[reader(), binding("eng")]);
        let current = K8sModel::of(&[reader()]);
        let options = DiffOptions::default();
        let Outcome::Judged(j) = s.judge_k8s(&current, &key(), &policy(&[]), t(1), &options) else {
            panic!()
        };
        assert_eq!((j.verdict, j.advanced), (Verdict::Allow, true));
        let SourceData::Kubernetes(b) = &s.baseline.data else {
            panic!()
        };
        assert!(b.get(&key()).is_none());
        // Now equal to the baseline: nothing to judge.
        assert!(matches!(
            s.judge_k8s(&current, &key(), &policy(&[]), t(2), &options),
            Outcome::Restored { closed: None }
        ));
    }

    #[test]
    fn allow_list_matches_subject_object_and_risks() {
        let rule = |subject: &str, risks: Option<Vec<String>>| AllowRule {
            name: "eng readers".into(),
            reason: Some("reviewed".into()),
            source: Some("c".into()),
            subject: Some(subject.into()),
            object: Some("ClusterRoleBinding/*".into()),
            risks,
        };
        let current = K8sModel::of(&[reader(), binding("eng")]);
        let options = DiffOptions::default();
        let mut s = state(&[reader()]);
        let allow = [rule("Group:eng", Some(vec!["secrets-read".into()]))];
        let Outcome::Judged(j) = s.judge_k8s(&current, &key(), &policy(&allow), t(1), &options)
        else {
            panic!()
        };
        assert_eq!(j.verdict, Verdict::Allow);
        assert!(j.reason.contains("eng readers"), "{}", j.reason);
        assert!(j.advanced && s.open.is_empty());
        for allow in [
            [rule("Group:ops", None)],
            [rule("Group:*", Some(vec!["pod-exec".into()]))],
        ] {
            let mut s = state(&[reader()]);
            let Outcome::Judged(j) = s.judge_k8s(&current, &key(), &policy(&allow), t(1), &options)
            else {
                panic!()
            };
            assert_eq!(j.verdict, Verdict::Alert);
        }
    }

    #[test]
    fn a_subject_rule_allows_a_role_change_by_who_gains_not_by_the_role() {
        let rule = |subject: &str| AllowRule {
            name: "eng".into(),
            reason: None,
            source: None,
            subject: Some(subject.into()),
            object: None,
            risks: None,
        };
        let wider = json!({"apiVersion":"rbac.authorization.k8s.io/v1","kind":"ClusterRole",
            "metadata":{"name":"reader"},
            "rules":[{"apiGroups":[""],"resources":["secrets"],"verbs":["get"]},
                {"apiGroups":[""],"resources":["pods/exec"],"verbs":["create"]}]});
        let role = RbacKey::cluster_role("reader");
        let options = DiffOptions::default();
        // Bound to eng: the role's own lines do not stop an eng rule.
        let mut s = state(&[reader(), binding("eng")]);
        let current = K8sModel::of(&[wider.clone(), binding("eng")]);
        let Outcome::Judged(j) = s.judge_k8s(
            &current,
            &role,
            &policy(&[rule("Group:eng")]),
            t(1),
            &options,
        ) else {
            panic!()
        };
        assert!(j.change.gained.iter().any(|g| g.latent));
        assert_eq!(j.verdict, Verdict::Allow);
        // Bound to nobody: the widening (pod-exec, high if held) is the
        // role's, judged at its capped severity.
        let mut s = state(&[reader()]);
        let current = K8sModel::of(&[wider]);
        let Outcome::Judged(j) = s.judge_k8s(
            &current,
            &role,
            &policy(&[rule("Group:eng")]),
            t(1),
            &options,
        ) else {
            panic!()
        };
        assert_eq!(
            (j.verdict, j.change.severity, j.advanced),
            (Verdict::Alert, Severity::Medium, false)
        );
        let Outcome::Judged(j) = state(&[reader()]).judge_k8s(
            &current,
            &role,
            &policy(&[rule("ClusterRole:reader")]),
            t(1),
            &options,
        ) else {
            panic!()
        };
        assert_eq!(j.verdict, Verdict::Allow);
    }

    #[test]
    fn a_later_edit_supersedes_but_keeps_the_first_detection_time() {
        let mut s = state(&[reader()]);
        let options = DiffOptions::default();
        s.judge_k8s(
            &K8sModel::of(&[reader(), binding("eng")]),
            &key(),
            &policy(&[]),
            t(10),
            &options,
        );
        let Outcome::Judged(j) = s.judge_k8s(
            &K8sModel::of(&[reader(), binding("all")]),
            &key(),
            &policy(&[]),
            t(20),
            &options,
        ) else {
            panic!()
        };
        assert!(j.superseded.is_some());
        let severity = j.change.severity;
        assert_eq!(s.oldest_open(severity), Some(t(10)));
        // Per severity: nothing of another severity is open.
        let other = if severity == Severity::Low {
            Severity::Critical
        } else {
            Severity::Low
        };
        assert_eq!(s.oldest_open(other), None);
    }

    #[test]
    fn an_edit_that_grants_the_same_is_not_a_new_widening() {
        let mut s = state(&[reader()]);
        let options = DiffOptions::default();
        let Outcome::Judged(_) = s.judge_k8s(
            &K8sModel::of(&[reader(), binding("eng")]),
            &key(),
            &policy(&[]),
            t(10),
            &options,
        ) else {
            panic!()
        };
        // A label on the open binding changes its text, not what it grants.
        let mut labelled = binding("eng");
        labelled["metadata"]["labels"] = json!({"team": "platform"});
        assert_eq!(
            s.judge_k8s(
                &K8sModel::of(&[reader(), labelled]),
                &key(),
                &policy(&[]),
                t(20),
                &options
            ),
            Outcome::AlreadyOpen
        );
        // A second subject is more access: judged, and alerted, again.
        let mut wider = binding("eng");
        wider["subjects"]
            .as_array_mut()
            .unwrap()
            .push(json!({"kind": "Group", "name": "ops", "apiGroup": "rbac.authorization.k8s.io"}));
        let Outcome::Judged(j) = s.judge_k8s(
            &K8sModel::of(&[reader(), wider]),
            &key(),
            &policy(&[]),
            t(40),
            &options,
        ) else {
            panic!()
        };
        assert_eq!(j.verdict, Verdict::Alert);
        assert_eq!(s.oldest_open(j.change.severity), Some(t(10)));
    }
}
