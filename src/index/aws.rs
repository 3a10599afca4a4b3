//! The indexed state of one AWS account's IAM.
//!
//! Raw entities go in (one at a time, as a poll finds them); reverse maps
//! (group -> members, policy -> principals attaching it or using it as a
//! boundary) are kept so a change is judged by recomputing only the principals
//! it touches.

use crate::model::aws::{self, AwsBody, AwsKey, AwsKind, IamParseError, ManagedPolicy};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap};

#[derive(Clone, Debug, PartialEq)]
pub struct AwsObject {
    pub raw: Value,
    pub parsed: AwsBody,
}

impl AwsObject {
    pub fn from_raw(kind: AwsKind, raw: Value) -> Result<Self, IamParseError> {
        let parsed = aws::parse_entity(kind, &raw)?;
        Ok(Self { raw, parsed })
    }

    /// An entity as stored in snapshots: documents decoded, unordered lists sorted.
    pub fn canonical(kind: AwsKind, mut raw: Value) -> Result<(AwsKey, Self), IamParseError> {
        aws::decode_documents(kind, &mut raw)?;
        aws::sort_lists(&mut raw);
        let key = aws::key_of(kind, &raw)?;
        Ok((key, Self::from_raw(kind, raw)?))
    }
}

#[derive(Clone, Debug, Default)]
pub struct AwsModel {
    objects: BTreeMap<AwsKey, AwsObject>,
    group_by_name: HashMap<String, String>,
    members: HashMap<String, BTreeSet<String>>,
    policy_users: HashMap<String, BTreeSet<AwsKey>>,
}

impl AwsModel {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.objects.len()
    }

    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    pub fn get(&self, key: &AwsKey) -> Option<&AwsObject> {
        self.objects.get(key)
    }

    pub fn objects(&self) -> impl Iterator<Item = (&AwsKey, &AwsObject)> {
        self.objects.iter()
    }

    pub fn keys(&self) -> impl Iterator<Item = &AwsKey> {
        self.objects.keys()
    }

    pub fn insert(&mut self, key: AwsKey, object: AwsObject) -> Option<AwsObject> {
        let previous = self.remove(&key);
        self.index(&key, &object);
        self.objects.insert(key, object);
        previous
    }

    pub fn remove(&mut self, key: &AwsKey) -> Option<AwsObject> {
        let object = self.objects.remove(key)?;
        self.unindex(key, &object);
        Some(object)
    }

    fn principal_policies(body: &AwsBody) -> impl Iterator<Item = &String> {
        let p = match body {
            AwsBody::User(u) => Some(&u.principal),
            AwsBody::Group(g) => Some(g),
            AwsBody::Role(r) => Some(&r.principal),
            AwsBody::Policy(_) => None,
        };
        p.into_iter()
            .flat_map(|p| p.attached.iter().chain(p.boundary.iter()))
    }

    fn index(&mut self, key: &AwsKey, object: &AwsObject) {
        for policy in Self::principal_policies(&object.parsed) {
            self.policy_users
                .entry(policy.clone())
                .or_default()
                .insert(key.clone());
        }
        match &object.parsed {
            AwsBody::Group(g) => {
                self.group_by_name.insert(g.name.clone(), key.arn.clone());
            }
            AwsBody::User(u) => {
                for group in &u.groups {
                    self.members
                        .entry(group.clone())
                        .or_default()
                        .insert(key.arn.clone());
                }
            }
            _ => {}
        }
    }

    fn unindex(&mut self, key: &AwsKey, object: &AwsObject) {
        for policy in Self::principal_policies(&object.parsed) {
            if let Some(set) = self.policy_users.get_mut(policy) {
                set.remove(key);
                if set.is_empty() {
                    self.policy_users.remove(policy);
                }
            }
        }
        match &object.parsed {
            AwsBody::Group(g) if self.group_by_name.get(&g.name) == Some(&key.arn) => {
                self.group_by_name.remove(&g.name);
            }
            AwsBody::User(u) => {
                for group in &u.groups {
                    if let Some(set) = self.members.get_mut(group) {
                        set.remove(&key.arn);
                        if set.is_empty() {
                            self.members.remove(group);
                        }
                    }
                }
            }
            _ => {}
        }
    }

    /// Users in the group named `name`.
    pub fn members_of(&self, name: &str) -> impl Iterator<Item = AwsKey> + '_ {
        self.members
            .get(name)
            .into_iter()
            .flatten()
            .map(|arn| AwsKey {
                kind: AwsKind::User,
                arn: arn.clone(),
            })
    }

    pub fn group_key(&self, name: &str) -> Option<AwsKey> {
        self.group_by_name.get(name).map(|arn| AwsKey {
            kind: AwsKind::Group,
            arn: arn.clone(),
        })
    }

    /// Principals attaching `policy_arn` or bounded by it.
    pub fn users_of_policy(&self, policy_arn: &str) -> impl Iterator<Item = &AwsKey> {
        self.policy_users.get(policy_arn).into_iter().flatten()
    }

    pub fn policy(&self, arn: &str) -> Option<&ManagedPolicy> {
        match self.objects.get(&AwsKey {
            kind: AwsKind::Policy,
            arn: arn.to_owned(),
        }) {
            Some(AwsObject {
                parsed: AwsBody::Policy(p),
                ..
            }) => Some(p),
            _ => None,
        }
    }

    /// The account the entities belong to, from their ARNs.
    pub fn account_id(&self) -> Option<&str> {
        self.objects
            .keys()
            .filter(|k| k.kind != AwsKind::Policy || !k.arn.contains(":aws:policy/"))
            .find_map(|k| crate::grants::aws_perm::account_of(&k.arn))
    }
}
