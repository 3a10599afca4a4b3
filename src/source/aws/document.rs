//! Turns the SDK's typed `GetAccountAuthorizationDetails` output back into the
//! JSON shape of `aws iam get-account-authorization-details` (PascalCase keys,
//! RFC 3339 dates), page by page, so live and file snapshots share one reader.
//!
//! Fields are copied only when the API sent them, and policy documents are kept
//! byte for byte (URL-encoded or not): the core decodes both. `RoleLastUsed` is
//! dropped because it changes on every use and would read as drift.

use aws_sdk_iam::operation::get_account_authorization_details::GetAccountAuthorizationDetailsOutput;
use aws_sdk_iam::types::{
    AttachedPermissionsBoundary, AttachedPolicy, GroupDetail, InstanceProfile, ManagedPolicyDetail,
    PolicyDetail, PolicyVersion, Role, RoleDetail, Tag, UserDetail,
};
use aws_smithy_types::DateTime;
use aws_smithy_types::date_time::Format;
use serde_json::{Map, Value};

use super::AwsSourceError;

/// The four GAAD lists, accumulated across pages in API order.
#[derive(Debug, Default)]
pub(crate) struct GaadLists {
    pub users: Vec<Value>,
    pub groups: Vec<Value>,
    pub roles: Vec<Value>,
    pub policies: Vec<Value>,
}

/// How many entities of each kind one page carried.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct PageCounts {
    pub users: usize,
    pub groups: usize,
    pub roles: usize,
    pub policies: usize,
}

impl GaadLists {
    /// Appends one page; fails only on a date the SDK parsed but cannot print.
    pub fn push_page(
        &mut self,
        page: &GetAccountAuthorizationDetailsOutput,
    ) -> Result<PageCounts, AwsSourceError> {
        let users = page.user_detail_list();
        let groups = page.group_detail_list();
        let roles = page.role_detail_list();
        let policies = page.policies();
        for u in users {
            self.users.push(user(u)?);
        }
        for g in groups {
            self.groups.push(group(g)?);
        }
        for r in roles {
            self.roles.push(role_detail(r)?);
        }
        for p in policies {
            self.policies.push(managed_policy(p)?);
        }
        Ok(PageCounts {
            users: users.len(),
            groups: groups.len(),
            roles: roles.len(),
            policies: policies.len(),
        })
    }

    /// First account id named by an entity ARN (users, groups, roles, then
    /// customer managed policies); AWS managed policies name `aws`, not an account.
    pub fn first_account_id(&self) -> Option<String> {
        self.users
            .iter()
            .chain(&self.groups)
            .chain(&self.roles)
            .chain(&self.policies)
            .filter_map(|entity| entity.get("Arn").and_then(Value::as_str))
            .find_map(account_of_arn)
    }

    pub fn into_document(self) -> Value {
        let mut doc = Map::new();
        doc.insert("UserDetailList".into(), Value::Array(self.users));
        doc.insert("GroupDetailList".into(), Value::Array(self.groups));
        doc.insert("RoleDetailList".into(), Value::Array(self.roles));
        doc.insert("Policies".into(), Value::Array(self.policies));
        Value::Object(doc)
    }
}

/// `arn:aws:iam::123456789012:role/x` -> `123456789012`; `None` for `aws` or an empty field.
pub(crate) fn account_of_arn(arn: &str) -> Option<String> {
    let account = arn.split(':').nth(4)?;
    (account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit())).then(|| account.into())
}

/// Insert-if-present object builder: absent API fields stay absent.
struct Obj(Map<String, Value>);

impl Obj {
    fn new() -> Self {
        Obj(Map::new())
    }

    fn str(mut self, key: &str, value: Option<&str>) -> Self {
        if let Some(v) = value {
            self.0.insert(key.into(), Value::String(v.into()));
        }
        self
    }

    fn val(mut self, key: &str, value: Option<Value>) -> Self {
        if let Some(v) = value {
            self.0.insert(key.into(), v);
        }
        self
    }

    fn date(self, key: &str, value: Option<&DateTime>) -> Result<Self, AwsSourceError> {
        let text = value.map(rfc3339).transpose()?;
        Ok(self.str(key, text.as_deref()))
    }

    fn done(self) -> Value {
        Value::Object(self.0)
    }
}

fn rfc3339(date: &DateTime) -> Result<String, AwsSourceError> {
    date.fmt(Format::DateTime)
        .map_err(|e| AwsSourceError::InvalidResponse {
            operation: super::GAAD,
            detail: format!("date {date:?} cannot be written as RFC 3339: {e}"),
        })
}

/// Maps an optional list, keeping "absent" distinct from "empty".
fn list<T>(items: Option<&[T]>, f: impl Fn(&T) -> Value) -> Option<Value> {
    items.map(|items| Value::Array(items.iter().map(f).collect()))
}

fn try_list<T>(
    items: Option<&[T]>,
    f: impl Fn(&T) -> Result<Value, AwsSourceError>,
) -> Result<Option<Value>, AwsSourceError> {
    items
        .map(|items| {
            items
                .iter()
                .map(f)
                .collect::<Result<Vec<_>, _>>()
                .map(Value::Array)
        })
        .transpose()
}

fn tags(tags: Option<&[Tag]>) -> Option<Value> {
    list(tags, |t| {
        Obj::new()
            .str("Key", Some(&t.key))
            .str("Value", Some(&t.value))
            .done()
    })
}

fn inline_policies(policies: Option<&[PolicyDetail]>) -> Option<Value> {
    list(policies, |p| {
        Obj::new()
            .str("PolicyName", p.policy_name.as_deref())
            .str("PolicyDocument", p.policy_document.as_deref())
            .done()
    })
}

fn attached(policies: Option<&[AttachedPolicy]>) -> Option<Value> {
    list(policies, |p| {
        Obj::new()
            .str("PolicyName", p.policy_name.as_deref())
            .str("PolicyArn", p.policy_arn.as_deref())
            .done()
    })
}

fn boundary(b: Option<&AttachedPermissionsBoundary>) -> Option<Value> {
    b.map(|b| {
        Obj::new()
            .str(
                "PermissionsBoundaryType",
                b.permissions_boundary_type.as_ref().map(|t| t.as_str()),
            )
            .str(
                "PermissionsBoundaryArn",
                b.permissions_boundary_arn.as_deref(),
            )
            .done()
    })
}

fn user(u: &UserDetail) -> Result<Value, AwsSourceError> {
    Ok(Obj::new()
        .str("Path", u.path.as_deref())
        .str("UserName", u.user_name.as_deref())
        .str("UserId", u.user_id.as_deref())
        .str("Arn", u.arn.as_deref())
        .date("CreateDate", u.create_date.as_ref())?
        .val(
            "UserPolicyList",
            inline_policies(u.user_policy_list.as_deref()),
        )
        .val(
            "GroupList",
            list(u.group_list.as_deref(), |g| Value::String(g.clone())),
        )
        .val(
            "AttachedManagedPolicies",
            attached(u.attached_managed_policies.as_deref()),
        )
        .val(
            "PermissionsBoundary",
            boundary(u.permissions_boundary.as_ref()),
        )
        .val("Tags", tags(u.tags.as_deref()))
        .done())
}

fn group(g: &GroupDetail) -> Result<Value, AwsSourceError> {
    Ok(Obj::new()
        .str("Path", g.path.as_deref())
        .str("GroupName", g.group_name.as_deref())
        .str("GroupId", g.group_id.as_deref())
        .str("Arn", g.arn.as_deref())
        .date("CreateDate", g.create_date.as_ref())?
        .val(
            "GroupPolicyList",
            inline_policies(g.group_policy_list.as_deref()),
        )
        .val(
            "AttachedManagedPolicies",
            attached(g.attached_managed_policies.as_deref()),
        )
        .done())
}

fn role_detail(r: &RoleDetail) -> Result<Value, AwsSourceError> {
    Ok(Obj::new()
        .str("Path", r.path.as_deref())
        .str("RoleName", r.role_name.as_deref())
        .str("RoleId", r.role_id.as_deref())
        .str("Arn", r.arn.as_deref())
        .date("CreateDate", r.create_date.as_ref())?
        .str(
            "AssumeRolePolicyDocument",
            r.assume_role_policy_document.as_deref(),
        )
        .val(
            "InstanceProfileList",
            try_list(r.instance_profile_list.as_deref(), instance_profile)?,
        )
        .val(
            "RolePolicyList",
            inline_policies(r.role_policy_list.as_deref()),
        )
        .val(
            "AttachedManagedPolicies",
            attached(r.attached_managed_policies.as_deref()),
        )
        .val(
            "PermissionsBoundary",
            boundary(r.permissions_boundary.as_ref()),
        )
        .val("Tags", tags(r.tags.as_deref()))
        .done())
}

fn instance_profile(p: &InstanceProfile) -> Result<Value, AwsSourceError> {
    Ok(Obj::new()
        .str("Path", Some(&p.path))
        .str("InstanceProfileName", Some(&p.instance_profile_name))
        .str("InstanceProfileId", Some(&p.instance_profile_id))
        .str("Arn", Some(&p.arn))
        .date("CreateDate", Some(&p.create_date))?
        .val("Roles", try_list(Some(&p.roles), profile_role)?)
        .val("Tags", tags(p.tags.as_deref()))
        .done())
}

/// A role as nested in an instance profile (again without `RoleLastUsed`).
fn profile_role(r: &Role) -> Result<Value, AwsSourceError> {
    Ok(Obj::new()
        .str("Path", Some(&r.path))
        .str("RoleName", Some(&r.role_name))
        .str("RoleId", Some(&r.role_id))
        .str("Arn", Some(&r.arn))
        .date("CreateDate", Some(&r.create_date))?
        .str(
            "AssumeRolePolicyDocument",
            r.assume_role_policy_document.as_deref(),
        )
        .str("Description", r.description.as_deref())
        .val(
            "MaxSessionDuration",
            r.max_session_duration.map(Value::from),
        )
        .val(
            "PermissionsBoundary",
            boundary(r.permissions_boundary.as_ref()),
        )
        .val("Tags", tags(r.tags.as_deref()))
        .done())
}

fn managed_policy(p: &ManagedPolicyDetail) -> Result<Value, AwsSourceError> {
    // Some moto versions leave PolicyName out; the ARN's last segment is the name.
    let name = p
        .policy_name
        .as_deref()
        .or_else(|| p.arn.as_deref().and_then(|arn| arn.rsplit('/').next()));
    Ok(Obj::new()
        .str("PolicyName", name)
        .str("PolicyId", p.policy_id.as_deref())
        .str("Arn", p.arn.as_deref())
        .str("Path", p.path.as_deref())
        .str("DefaultVersionId", p.default_version_id.as_deref())
        .val("AttachmentCount", p.attachment_count.map(Value::from))
        .val(
            "PermissionsBoundaryUsageCount",
            p.permissions_boundary_usage_count.map(Value::from),
        )
        .val("IsAttachable", Some(Value::Bool(p.is_attachable)))
        .str("Description", p.description.as_deref())
        .date("CreateDate", p.create_date.as_ref())?
        .date("UpdateDate", p.update_date.as_ref())?
        .val(
            "PolicyVersionList",
            try_list(p.policy_version_list.as_deref(), policy_version)?,
        )
        .done())
}

fn policy_version(v: &PolicyVersion) -> Result<Value, AwsSourceError> {
    Ok(Obj::new()
        .str("Document", v.document.as_deref())
        .str("VersionId", v.version_id.as_deref())
        .val("IsDefaultVersion", Some(Value::Bool(v.is_default_version)))
        .date("CreateDate", v.create_date.as_ref())?
        .done())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_comes_from_the_fifth_arn_field() {
        assert_eq!(
            account_of_arn("arn:aws:iam::123456789012:role/a/b").as_deref(),
            Some("123456789012")
        );
        assert_eq!(
            account_of_arn("arn:aws:iam::aws:policy/ReadOnlyAccess"),
            None
        );
        assert_eq!(account_of_arn("not-an-arn"), None);
    }

    #[test]
    fn policy_name_falls_back_to_the_arn_and_role_last_used_is_dropped() {
        let policy = ManagedPolicyDetail::builder()
            .arn("arn:aws:iam::123456789012:policy/team/ops-read")
            .is_attachable(true)
            .build();
        let v = managed_policy(&policy).unwrap();
        assert_eq!(v["PolicyName"], "ops-read");
        assert_eq!(v["IsAttachable"], true);
        assert!(v.get("PolicyVersionList").is_none());

        let role = RoleDetail::builder()
            .role_name("r")
            .create_date(DateTime::from_secs(1_700_000_000))
            .role_last_used(
                aws_sdk_iam::types::RoleLastUsed::builder()
                    .region("x")
                    .build(),
            )
            .build();
        let v = role_detail(&role).unwrap();
        assert_eq!(v["CreateDate"], "2023-11-14T22:13:20Z");
        assert!(v.get("RoleLastUsed").is_none());
        assert!(v.get("Tags").is_none(), "absent lists stay absent");
    }
}
