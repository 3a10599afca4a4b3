//! The permission effect of one changed IAM entity.
//!
//! Two indexed account states and a changed key come in; the allows and
//! denies each principal gained and lost through that entity come out. Only
//! the principals it reaches are recomputed: a user itself, a group and its
//! members, a role and the principals its trust policy names, a managed
//! policy and everyone attaching it (directly, through a group, or as a
//! permissions boundary).

use crate::grants::aws::AwsCache;
use crate::grants::aws_perm::{ActionSet, AwsPerms, GrantKey};
use crate::grants::catalog::Catalog;
use crate::index::aws::AwsModel;
use crate::model::aws::{AwsBody, AwsKey, AwsKind};
use crate::model::iam_policy::Effect;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;

/// One principal's allow or deny of some actions on a resource pattern.
#[derive(Clone, Debug, PartialEq)]
pub struct AwsGrant {
    /// An entity ARN, or a trust principal (`*`, `service:...`, an account root ARN).
    pub subject: String,
    pub effect: Effect,
    /// Granted by a role's trust policy (the resource is the role).
    pub trust: bool,
    pub key: GrantKey,
    pub actions: ActionSet,
    /// Actions the old state already allowed here, but under another condition.
    pub loosened: bool,
    /// For a gained allow, everything the subject is allowed after the
    /// change: what a tag about the whole principal (`admin`, a PassRole
    /// that escalates) is decided on.
    pub holder: Option<Rc<AwsPerms>>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct AwsEffect {
    /// Allows the new state adds, and denies it adds.
    pub gained: Vec<AwsGrant>,
    /// Allows the new state drops, and denies it drops (a dropped deny widens).
    pub lost: Vec<AwsGrant>,
    pub boundary_removed: bool,
}

impl AwsEffect {
    /// Gained allows and dropped denies: what makes a change widening.
    pub fn widening(&self) -> impl Iterator<Item = &AwsGrant> {
        self.gained
            .iter()
            .filter(|g| g.effect == Effect::Allow)
            .chain(self.lost.iter().filter(|g| g.effect == Effect::Deny))
    }

    pub fn narrowing(&self) -> impl Iterator<Item = &AwsGrant> {
        self.lost
            .iter()
            .filter(|g| g.effect == Effect::Allow)
            .chain(self.gained.iter().filter(|g| g.effect == Effect::Deny))
    }
}

pub struct AwsDiffer<'m, 'c> {
    old: AwsCache<'m, 'c>,
    new: AwsCache<'m, 'c>,
}

impl<'m, 'c> AwsDiffer<'m, 'c> {
    pub fn new(old: &'m AwsModel, new: &'m AwsModel, catalog: &'c Catalog) -> Self {
        Self {
            old: AwsCache::new(old, catalog),
            new: AwsCache::new(new, catalog),
        }
    }

    pub fn new_cache(&mut self) -> &mut AwsCache<'m, 'c> {
        &mut self.new
    }

    /// Policies attached somewhere but absent from either snapshot.
    pub fn missing_policies(&self) -> BTreeSet<String> {
        self.old
            .missing_policies
            .union(&self.new.missing_policies)
            .cloned()
            .collect()
    }

    fn affected(&self, key: &AwsKey) -> BTreeSet<AwsKey> {
        let mut out = BTreeSet::new();
        let models = [self.old.model(), self.new.model()];
        match key.kind {
            AwsKind::User | AwsKind::Role => {
                out.insert(key.clone());
            }
            AwsKind::Group => {
                out.insert(key.clone());
                for m in models {
                    if let Some(AwsBody::Group(g)) = m.get(key).map(|o| &o.parsed) {
                        for other in models {
                            out.extend(other.members_of(&g.name));
                        }
                    }
                }
            }
            AwsKind::Policy => {
                for m in models {
                    for user in m.users_of_policy(&key.arn) {
                        out.insert(user.clone());
                        if user.kind == AwsKind::Group
                            && let Some(AwsBody::Group(g)) = m.get(user).map(|o| &o.parsed)
                        {
                            for other in models {
                                out.extend(other.members_of(&g.name));
                            }
                        }
                    }
                }
            }
        }
        out
    }

    /// What `changed` contributes to `subject` in one state, or `None` when
    /// everything the subject has is attributable to it.
    fn contribution(
        cache: &mut AwsCache<'m, 'c>,
        changed: &AwsKey,
        subject: &AwsKey,
    ) -> Option<AwsPerms> {
        if changed == subject {
            return None;
        }
        let model = cache.model();
        let principal = match model.get(subject).map(|o| &o.parsed) {
            Some(AwsBody::User(u)) => &u.principal,
            Some(AwsBody::Group(g)) => g,
            Some(AwsBody::Role(r)) => &r.principal,
            _ => return Some(AwsPerms::default()),
        };
        match changed.kind {
            AwsKind::Policy if principal.boundary.as_deref() == Some(changed.arn.as_str()) => None,
            // Absent from this side and attached nowhere in it: it grants
            // nothing here (asking for it would report it missing).
            AwsKind::Policy
                if model.policy(&changed.arn).is_none()
                    && model.users_of_policy(&changed.arn).next().is_none() =>
            {
                Some(AwsPerms::default())
            }
            AwsKind::Policy => Some((*cache.managed(&changed.arn)).clone()),
            AwsKind::Group => match model.get(changed).map(|o| &o.parsed) {
                Some(AwsBody::Group(g)) => Some(cache.own(g)),
                _ => Some(AwsPerms::default()),
            },
            _ => Some(AwsPerms::default()),
        }
    }

    pub fn effect(&mut self, key: &AwsKey) -> AwsEffect {
        let mut effect = AwsEffect::default();
        for subject in self.affected(key) {
            let before = self.old.principal(&subject);
            let after = self.new.principal(&subject);
            let new_part = Self::contribution(&mut self.new, key, &subject);
            let old_part = Self::contribution(&mut self.old, key, &subject);
            let gained_allow = restrict(
                after.allows_beyond(&before),
                new_part.as_ref().map(|p| &p.allow),
            );
            let lost_allow = restrict(
                before.allows_beyond(&after),
                old_part.as_ref().map(|p| &p.allow),
            );
            let gained_deny = restrict(
                after.denies_dropped_in(&before),
                new_part.as_ref().map(|p| &p.deny),
            );
            let lost_deny = restrict(
                before.denies_dropped_in(&after),
                old_part.as_ref().map(|p| &p.deny),
            );
            let start = effect.gained.len();
            push(
                &mut effect.gained,
                &subject.arn,
                Effect::Allow,
                false,
                gained_allow,
                Some(&before),
            );
            for g in &mut effect.gained[start..] {
                g.holder = Some(after.clone());
            }
            push(
                &mut effect.lost,
                &subject.arn,
                Effect::Allow,
                false,
                lost_allow,
                Some(&after),
            );
            push(
                &mut effect.gained,
                &subject.arn,
                Effect::Deny,
                false,
                gained_deny,
                None,
            );
            push(
                &mut effect.lost,
                &subject.arn,
                Effect::Deny,
                false,
                lost_deny,
                None,
            );
        }
        if key.kind == AwsKind::Role {
            let before = self.old.trust(key);
            let after = self.new.trust(key);
            let principals: BTreeSet<&String> = before.keys().chain(after.keys()).collect();
            let empty = AwsPerms::default();
            for p in principals {
                let b = before.get(p).unwrap_or(&empty);
                let a = after.get(p).unwrap_or(&empty);
                push(
                    &mut effect.gained,
                    p,
                    Effect::Allow,
                    true,
                    a.allows_beyond(b),
                    Some(b),
                );
                push(
                    &mut effect.lost,
                    p,
                    Effect::Allow,
                    true,
                    b.allows_beyond(a),
                    Some(a),
                );
                push(
                    &mut effect.gained,
                    p,
                    Effect::Deny,
                    true,
                    a.denies_dropped_in(b),
                    None,
                );
                push(
                    &mut effect.lost,
                    p,
                    Effect::Deny,
                    true,
                    b.denies_dropped_in(a),
                    None,
                );
            }
            let boundary = |m: &AwsModel| match m.get(key).map(|o| &o.parsed) {
                Some(AwsBody::Role(r)) => r.principal.boundary.clone(),
                _ => None,
            };
            effect.boundary_removed =
                boundary(self.old.model()).is_some() && boundary(self.new.model()).is_none();
        }
        if key.kind == AwsKind::User {
            let boundary = |m: &AwsModel| match m.get(key).map(|o| &o.parsed) {
                Some(AwsBody::User(u)) => u.principal.boundary.clone(),
                _ => None,
            };
            effect.boundary_removed =
                boundary(self.old.model()).is_some() && boundary(self.new.model()).is_none();
        }
        effect
    }
}

/// Keeps only the part of `sets` that `part` (one entity's contribution) accounts for.
fn restrict(
    sets: BTreeMap<GrantKey, ActionSet>,
    part: Option<&BTreeMap<GrantKey, ActionSet>>,
) -> BTreeMap<GrantKey, ActionSet> {
    let Some(part) = part else { return sets };
    sets.into_iter()
        .filter_map(|(key, set)| {
            let mut cover = ActionSet::default();
            for (pk, pset) in part {
                if pk.resource.overlaps(&key.resource) {
                    cover.union_with(pset);
                }
            }
            let kept = set.intersect(&cover);
            (!kept.is_empty()).then_some((key, kept))
        })
        .collect()
}

fn push(
    out: &mut Vec<AwsGrant>,
    subject: &str,
    effect: Effect,
    trust: bool,
    sets: BTreeMap<GrantKey, ActionSet>,
    before: Option<&AwsPerms>,
) {
    for (key, actions) in sets {
        // Loosened: the same actions on a covering resource were allowed, only under another condition.
        let loosened = before.is_some_and(|b| {
            b.allow.iter().any(|(bk, bset)| {
                bk.condition != key.condition
                    && bk.resource.covers(&key.resource)
                    && !(&bset.ids & &actions.ids).is_empty()
            })
        });
        out.push(AwsGrant {
            subject: subject.to_owned(),
            effect,
            trust,
            key,
            actions,
            loosened,
            holder: None,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::aws::AwsObject;
    use serde_json::{Value, json};

    fn model(entities: &[(AwsKind, Value)]) -> AwsModel {
        let mut m = AwsModel::new();
        for (kind, raw) in entities {
            let (key, object) = AwsObject::canonical(*kind, raw.clone()).unwrap();
            m.insert(key, object);
        }
        m
    }

    fn policy(name: &str, statements: Value) -> (AwsKind, Value) {
        (
            AwsKind::Policy,
            json!({"PolicyName":name,"Arn":format!("arn:aws:iam::1:policy/{name}"),"DefaultVersionId":"v1",
            "PolicyVersionList":[{"VersionId":"v1","IsDefaultVersion":true,"Document":{"Version":"2012-10-17","Statement":statements}}]}),
        )
    }

    fn key(kind: AwsKind, arn: &str) -> AwsKey {
        AwsKey {
            kind,
            arn: arn.into(),
        }
    }

    #[test]
    fn policy_change_reaches_group_members() {
        let group = (
            AwsKind::Group,
            json!({"GroupName":"eng","Arn":"arn:aws:iam::1:group/eng",
            "AttachedManagedPolicies":[{"PolicyArn":"arn:aws:iam::1:policy/p"}]}),
        );
        let user = (
            AwsKind::User,
            json!({"UserName":"u","Arn":"arn:aws:iam::1:user/u","GroupList":["eng"]}),
        );
        let old = model(&[
            group.clone(),
            user.clone(),
            policy(
                "p",
                json!([{"Effect":"Allow","Action":"s3:ListBucket","Resource":"*"}]),
            ),
        ]);
        let new = model(&[
            group,
            user,
            policy(
                "p",
                json!([{"Effect":"Allow","Action":["s3:ListBucket","s3:GetObject"],"Resource":"*"}]),
            ),
        ]);
        let mut d = AwsDiffer::new(&old, &new, Catalog::embedded());
        let e = d.effect(&key(AwsKind::Policy, "arn:aws:iam::1:policy/p"));
        let subjects: BTreeSet<_> = e.gained.iter().map(|g| g.subject.as_str()).collect();
        assert_eq!(
            subjects,
            ["arn:aws:iam::1:group/eng", "arn:aws:iam::1:user/u"]
                .into_iter()
                .collect()
        );
        assert!(e.gained.iter().all(|g| g.actions.ids.len() == 1));
        assert!(e.lost.is_empty());
    }

    #[test]
    fn trust_opened_to_everyone() {
        let before = (
            AwsKind::Role,
            json!({"RoleName":"r","Arn":"arn:aws:iam::1:role/r",
            "AssumeRolePolicyDocument":{"Statement":[{"Effect":"Allow","Principal":{"Service":"ec2.amazonaws.com"},"Action":"sts:AssumeRole"}]}}),
        );
        let after = (
            AwsKind::Role,
            json!({"RoleName":"r","Arn":"arn:aws:iam::1:role/r",
            "AssumeRolePolicyDocument":{"Statement":[{"Effect":"Allow","Principal":{"AWS":"*"},"Action":"sts:AssumeRole",
                "Condition":{"StringEquals":{"aws:PrincipalOrgID":"o-123"}}}]}}),
        );
        let old = model(&[before]);
        let new = model(&[after]);
        let mut d = AwsDiffer::new(&old, &new, Catalog::embedded());
        let e = d.effect(&key(AwsKind::Role, "arn:aws:iam::1:role/r"));
        assert_eq!(e.gained.len(), 1);
        assert_eq!(e.gained[0].subject, "*");
        assert!(e.gained[0].trust);
        assert_eq!(e.lost[0].subject, "service:ec2.amazonaws.com");
    }

    #[test]
    fn removing_a_deny_widens() {
        let with = (
            AwsKind::User,
            json!({"UserName":"u","Arn":"arn:aws:iam::1:user/u","UserPolicyList":[{"PolicyName":"i","PolicyDocument":
            {"Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"*"},{"Effect":"Deny","Action":"s3:DeleteBucket","Resource":"arn:aws:s3:::prod"}]}}]}),
        );
        let without = (
            AwsKind::User,
            json!({"UserName":"u","Arn":"arn:aws:iam::1:user/u","UserPolicyList":[{"PolicyName":"i","PolicyDocument":
            {"Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"*"}]}}]}),
        );
        let old = model(&[with]);
        let new = model(&[without]);
        let mut d = AwsDiffer::new(&old, &new, Catalog::embedded());
        let e = d.effect(&key(AwsKind::User, "arn:aws:iam::1:user/u"));
        assert_eq!(e.widening().count(), 1);
        assert_eq!(e.narrowing().count(), 0);
        assert_eq!(e.lost[0].effect, Effect::Deny);
    }
}
