//! The indexed state of one AWS account's IAM.
//!
//! Raw entities go in (one at a time, as a poll finds them); reverse maps
//! (group -> members, policy -> principals attaching it or using it as a
//! boundary) are kept so a change is judged by recomputing only the principals
//! it touches.

use crate::model::aws::{self, IamBody, IamKey, IamKind, IamParseError, ManagedPolicy};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap};

#[derive(Clone, Debug, PartialEq)]
pub struct IamObject {
    pub raw: Value,
    pub parsed: IamBody,
}

impl IamObject {
    pub fn from_raw(kind: IamKind, raw: Value) -> Result<Self, IamParseError> {
        let parsed = aws::parse_entity(kind, &raw)?;
        Ok(Self { raw, parsed })
    }

    /// An entity as stored in snapshots: documents decoded, unordered lists sorted.
    pub fn canonical(kind: IamKind, mut raw: Value) -> Result<(IamKey, Self), IamParseError> {
        aws::decode_documents(kind, &mut raw)?;
        aws::sort_lists(&mut raw);
        let key = aws::key_of(kind, &raw)?;
        Ok((key, Self::from_raw(kind, raw)?))
    }
}

#[derive(Clone, Debug, Default)]
pub struct IamModel {
    objects: BTreeMap<IamKey, IamObject>,
    group_by_name: HashMap<String, String>,
    members: HashMap<String, BTreeSet<String>>,
    policy_users: HashMap<String, BTreeSet<IamKey>>,
}

impl IamModel {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.objects.len()
    }

    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    pub fn get(&self, key: &IamKey) -> Option<&IamObject> {
        self.objects.get(key)
    }

    pub fn objects(&self) -> impl Iterator<Item = (&IamKey, &IamObject)> {
        self.objects.iter()
    }

    pub fn keys(&self) -> impl Iterator<Item = &IamKey> {
        self.objects.keys()
    }

    pub fn insert(&mut self, key: IamKey, object: IamObject) -> Option<IamObject> {
        let previous = self.remove(&key);
        self.index(&key, &object);
        self.objects.insert(key, object);
        previous
    }

    pub fn remove(&mut self, key: &IamKey) -> Option<IamObject> {
        let object = self.objects.remove(key)?;
        self.unindex(key, &object);
        Some(object)
    }

    fn principal_policies(body: &IamBody) -> impl Iterator<Item = &String> {
        let p = match body {
            IamBody::User(u) => Some(&u.principal),
            IamBody::Group(g) => Some(g),
            IamBody::Role(r) => Some(&r.principal),
            IamBody::Policy(_) => None,
        };
        p.into_iter()
            .flat_map(|p| p.attached.iter().chain(p.boundary.iter()))
    }

    fn index(&mut self, key: &IamKey, object: &IamObject) {
        for policy in Self::principal_policies(&object.parsed) {
            self.policy_users
                .entry(policy.clone())
                .or_default()
                .insert(key.clone());
        }
        match &object.parsed {
            IamBody::Group(g) => {
                self.group_by_name.insert(g.name.clone(), key.arn.clone());
            }
            IamBody::User(u) => {
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

    fn unindex(&mut self, key: &IamKey, object: &IamObject) {
        for policy in Self::principal_policies(&object.parsed) {
            if let Some(set) = self.policy_users.get_mut(policy) {
                set.remove(key);
                if set.is_empty() {
                    self.policy_users.remove(policy);
                }
            }
        }
        match &object.parsed {
            IamBody::Group(g) if self.group_by_name.get(&g.name) == Some(&key.arn) => {
                self.group_by_name.remove(&g.name);
            }
            IamBody::User(u) => {
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
    pub fn members_of(&self, name: &str) -> impl Iterator<Item = IamKey> + '_ {
        self.members
            .get(name)
            .into_iter()
            .flatten()
            .map(|arn| IamKey {
                kind: IamKind::User,
                arn: arn.clone(),
            })
    }

    pub fn group_key(&self, name: &str) -> Option<IamKey> {
        self.group_by_name.get(name).map(|arn| IamKey {
            kind: IamKind::Group,
            arn: arn.clone(),
        })
    }

    /// Principals attaching `policy_arn` or bounded by it.
    pub fn users_of_policy(&self, policy_arn: &str) -> impl Iterator<Item = &IamKey> {
        self.policy_users.get(policy_arn).into_iter().flatten()
    }

    pub fn policy(&self, arn: &str) -> Option<&ManagedPolicy> {
        match self.objects.get(&IamKey {
            kind: IamKind::Policy,
            arn: arn.to_owned(),
        }) {
            Some(IamObject {
                parsed: IamBody::Policy(p),
                ..
            }) => Some(p),
            _ => None,
        }
    }

    /// The account the entities belong to, from their ARNs.
    pub fn account_id(&self) -> Option<&str> {
        self.objects
            .keys()
            .filter(|k| k.kind != IamKind::Policy || !k.arn.contains(":aws:policy/"))
            .find_map(|k| crate::grants::iam_perm::account_of(&k.arn))
    }
}
