//! Effective IAM permissions computed from the index.
//!
//! A principal's effective permission is the union of its inline, attached
//! and group-inherited allows, minus explicit denies, capped by its
//! permissions boundary. A role's trust policy grants `sts:AssumeRole*` on the
//! role to each trusted principal. [`AwsCache`] memoises compiled policies and
//! principals for the length of one computation.

use super::aws_perm::{ActionSet, AwsCompiler, AwsPerms, GrantKey, ResourcePattern};
use super::catalog::Catalog;
use crate::index::aws::AwsModel;
use crate::model::aws::{AwsBody, AwsKey, Principal};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::rc::Rc;

/// Per-computation caches over one model: compiled managed policies,
/// principal permissions and trust grants.
pub struct AwsCache<'m, 'c> {
    model: &'m AwsModel,
    compiler: AwsCompiler<'c>,
    policies: HashMap<String, Rc<AwsPerms>>,
    principals: HashMap<AwsKey, Rc<AwsPerms>>,
    /// Attached or boundary policies that the snapshot does not contain.
    pub missing_policies: BTreeSet<String>,
}

impl<'m, 'c> AwsCache<'m, 'c> {
    pub fn new(model: &'m AwsModel, catalog: &'c Catalog) -> Self {
        Self {
            model,
            compiler: AwsCompiler::new(catalog),
            policies: HashMap::new(),
            principals: HashMap::new(),
            missing_policies: BTreeSet::new(),
        }
    }

    pub fn model(&self) -> &'m AwsModel {
        self.model
    }

    pub fn compiler(&mut self) -> &mut AwsCompiler<'c> {
        &mut self.compiler
    }

    /// A managed policy's grants. A policy missing from the snapshot grants an
    /// opaque literal `attached-policy:ARN` on `*`, so attaching it still
    /// shows up as a widening rather than disappearing.
    pub fn managed(&mut self, arn: &str) -> Rc<AwsPerms> {
        if let Some(p) = self.policies.get(arn) {
            return p.clone();
        }
        let perms = match self.model.policy(arn) {
            Some(policy) => self.compiler.document(&policy.document),
            None => {
                self.missing_policies.insert(arn.to_owned());
                opaque_policy(arn)
            }
        };
        let perms = Rc::new(perms);
        self.policies.insert(arn.to_owned(), perms.clone());
        perms
    }

    /// The policies of a principal itself (inline and attached), without groups,
    /// denies applied or boundary.
    pub fn own(&mut self, p: &Principal) -> AwsPerms {
        let mut perms = AwsPerms::default();
        for doc in p.inline.values() {
            perms.merge(&self.compiler.document(doc));
        }
        for arn in &p.attached {
            let m = self.managed(arn);
            perms.merge(&m);
        }
        perms
    }

    /// The effective identity-based permissions of a user, group or role.
    pub fn principal(&mut self, key: &AwsKey) -> Rc<AwsPerms> {
        if let Some(p) = self.principals.get(key) {
            return p.clone();
        }
        let model = self.model;
        let mut perms = AwsPerms::default();
        let mut boundary = None;
        match model.get(key).map(|o| &o.parsed) {
            Some(AwsBody::User(u)) => {
                perms = self.own(&u.principal);
                for group in &u.groups {
                    if let Some(gk) = model.group_key(group)
                        && let Some(AwsBody::Group(g)) = model.get(&gk).map(|o| &o.parsed)
                    {
                        let gp = self.own(g);
                        perms.merge(&gp);
                    }
                }
                boundary = u.principal.boundary.clone();
            }
            Some(AwsBody::Group(g)) => perms = self.own(g),
            Some(AwsBody::Role(r)) => {
                perms = self.own(&r.principal);
                boundary = r.principal.boundary.clone();
            }
            _ => {}
        }
        perms.apply_denies();
        if let Some(b) = boundary {
            let mut cap = (*self.managed(&b)).clone();
            cap.apply_denies();
            perms.cap_by(&cap, &mut self.compiler);
        }
        let perms = Rc::new(perms);
        self.principals.insert(key.clone(), perms.clone());
        perms
    }

    /// A role's trust grants per trusted principal.
    pub fn trust(&mut self, role: &AwsKey) -> BTreeMap<String, AwsPerms> {
        match self.model.get(role).map(|o| &o.parsed) {
            Some(AwsBody::Role(r)) => self.compiler.trust(&r.trust, &role.arn),
            _ => BTreeMap::new(),
        }
    }
}

fn opaque_policy(arn: &str) -> AwsPerms {
    let marker = format!("attached-policy:{arn}");
    let set = ActionSet {
        unknown: [marker.clone()].into_iter().collect(),
        patterns: [marker].into_iter().collect(),
        ..ActionSet::default()
    };
    AwsPerms {
        allow: [(
            GrantKey {
                resource: ResourcePattern::Any("*".into()),
                condition: None,
            },
            set,
        )]
        .into_iter()
        .collect(),
        deny: BTreeMap::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::aws::AwsObject;
    use crate::model::aws::{self, AwsKind};
    use serde_json::{Value, json};

    fn model(entities: &[(AwsKind, Value)]) -> AwsModel {
        let mut m = AwsModel::new();
        for (kind, raw) in entities {
            let key = aws::key_of(*kind, raw).unwrap();
            m.insert(key, AwsObject::from_raw(*kind, raw.clone()).unwrap());
        }
        m
    }

    #[test]
    fn users_inherit_group_policies_and_boundaries_cap() {
        let m = model(&[
            (
                AwsKind::Group,
                json!({"GroupName":"admins","Arn":"arn:aws:iam::1:group/admins",
                "AttachedManagedPolicies":[{"PolicyArn":"arn:aws:iam::aws:policy/AdministratorAccess"}]}),
            ),
            (
                AwsKind::User,
                json!({"UserName":"u","Arn":"arn:aws:iam::1:user/u","GroupList":["admins"],
                "PermissionsBoundary":{"PermissionsBoundaryType":"Policy","PermissionsBoundaryArn":"arn:aws:iam::1:policy/s3only"}}),
            ),
            (
                AwsKind::Policy,
                json!({"PolicyName":"AdministratorAccess","Arn":"arn:aws:iam::aws:policy/AdministratorAccess","DefaultVersionId":"v1",
                "PolicyVersionList":[{"VersionId":"v1","Document":{"Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}}]}),
            ),
            (
                AwsKind::Policy,
                json!({"PolicyName":"s3only","Arn":"arn:aws:iam::1:policy/s3only","DefaultVersionId":"v1",
                "PolicyVersionList":[{"VersionId":"v1","Document":{"Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"*"}]}}]}),
            ),
        ]);
        let catalog = Catalog::embedded();
        let mut cache = AwsCache::new(&m, catalog);
        let user = AwsKey {
            kind: AwsKind::User,
            arn: "arn:aws:iam::1:user/u".into(),
        };
        let p = cache.principal(&user);
        let ids = &p.allow.values().next().unwrap().ids;
        assert_eq!(ids.len(), catalog.expand("s3:*").len());
        assert_eq!(m.members_of("admins").count(), 1);
        assert_eq!(m.users_of_policy("arn:aws:iam::1:policy/s3only").count(), 1);
        assert_eq!(m.account_id(), Some("1"));
    }

    #[test]
    fn missing_policy_is_opaque_not_dropped() {
        let m = model(&[(
            AwsKind::Role,
            json!({"RoleName":"r","Arn":"arn:aws:iam::1:role/r",
            "AttachedManagedPolicies":[{"PolicyArn":"arn:aws:iam::aws:policy/Gone"}]}),
        )]);
        let mut cache = AwsCache::new(&m, Catalog::embedded());
        let p = cache.principal(&AwsKey {
            kind: AwsKind::Role,
            arn: "arn:aws:iam::1:role/r".into(),
        });
        assert!(!p.is_empty());
        assert!(
            cache
                .missing_policies
                .contains("arn:aws:iam::aws:policy/Gone")
        );
    }
}
