//! Agents: who counts as an agent, and whether an actor is one.
//!
//! The `agents:` list (the `--agents FILE` of `permdrift diff`, in the shape
//! the operator config will take) goes in; for an [`Actor`] out comes the
//! name of the agent it is, if any. Patterns are globs (`*`, `?`).

use super::Actor;
use crate::grants::glob;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AgentsConfig {
    #[serde(default)]
    pub agents: Vec<Agent>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Agent {
    /// The name suggestions carry in their `agent` field.
    pub name: String,
    #[serde(default)]
    pub kubernetes: KubeIdentities,
    #[serde(default)]
    pub aws: AwsIdentities,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KubeIdentities {
    /// `user.username` globs.
    #[serde(default)]
    pub users: Vec<String>,
    /// Group names (exact or glob).
    #[serde(default)]
    pub groups: Vec<String>,
    /// `NAMESPACE/NAME` globs; the actor's username
    /// `system:serviceaccount:NAMESPACE:NAME` matches.
    #[serde(default)]
    pub service_accounts: Vec<String>,
    /// `userAgent` globs.
    #[serde(default)]
    pub user_agents: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AwsIdentities {
    /// `userIdentity.arn` (or the session issuer's ARN) globs.
    #[serde(default)]
    pub principal_arns: Vec<String>,
    /// Role session name globs (the last segment of an assumed-role ARN).
    #[serde(default)]
    pub role_session_names: Vec<String>,
    #[serde(default)]
    pub source_identities: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum AgentsError {
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

impl AgentsConfig {
    /// Parses the YAML text of an agents file; `name` is used in errors.
    pub fn parse(name: &str, text: &str) -> Result<Self, AgentsError> {
        let de = serde_yaml::Deserializer::from_str(text);
        let config: AgentsConfig =
            serde_path_to_error::deserialize(de).map_err(|e| AgentsError::Invalid {
                path: name.to_owned(),
                message: format!("field `{}`: {}", e.path(), e.inner()),
            })?;
        for (i, a) in config.agents.iter().enumerate() {
            if a.name.trim().is_empty() {
                return Err(AgentsError::Invalid {
                    path: name.to_owned(),
                    message: format!("field `agents[{i}].name`: empty"),
                });
            }
        }
        Ok(config)
    }

    /// The agent this actor is, if any (the first listed that matches).
    pub fn agent_of(&self, actor: &Actor) -> Option<&str> {
        self.agents
            .iter()
            .find(|a| a.matches(actor))
            .map(|a| a.name.as_str())
    }
}

fn any(patterns: &[String], value: Option<&str>) -> bool {
    value.is_some_and(|v| patterns.iter().any(|p| glob::matches(p, v)))
}

impl Agent {
    pub fn matches(&self, actor: &Actor) -> bool {
        let k = &self.kubernetes;
        let sa = actor
            .username
            .as_deref()
            .and_then(|u| u.strip_prefix("system:serviceaccount:"))
            .map(|rest| rest.replacen(':', "/", 1));
        let kube = any(&k.users, actor.username.as_deref())
            || actor.groups.iter().any(|g| any(&k.groups, Some(g)))
            || any(&k.service_accounts, sa.as_deref())
            || any(&k.user_agents, actor.user_agent.as_deref());
        let a = &self.aws;
        let session = actor
            .arn
            .as_deref()
            .filter(|arn| arn.contains(":assumed-role/"))
            .and_then(|arn| arn.rsplit('/').next());
        let aws = any(&a.principal_arns, actor.arn.as_deref())
            || any(&a.principal_arns, actor.issuer.as_deref())
            || any(&a.role_session_names, session)
            || any(&a.source_identities, actor.source_identity.as_deref());
        // A weak hint (a field manager's name) never makes an actor an agent.
        !actor.weak && (kube || aws)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_are_refused_with_their_path() {
        let err = AgentsConfig::parse(
            "agents.yaml",
            "agents:\n- name: bot\n  kubernetes:\n    user: [x]\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("agents.yaml"), "{err}");
        assert!(err.contains("agents[0].kubernetes"), "{err}");
    }

    #[test]
    fn service_accounts_sessions_and_user_agents_match() {
        let c = AgentsConfig::parse(
            "a",
            "agents:\n- name: bot\n  kubernetes:\n    serviceAccounts: [agents/*]\n    userAgents: ['devhelper/*']\n  aws:\n    roleSessionNames: [devhelper-*]\n",
        )
        .unwrap();
        let sa = Actor {
            username: Some("system:serviceaccount:agents:runner".into()),
            ..Actor::default()
        };
        assert_eq!(c.agent_of(&sa), Some("bot"));
        let session = Actor {
            arn: Some("arn:aws:sts::1:assumed-role/ops/devhelper-42".into()),
            ..Actor::default()
        };
        assert_eq!(c.agent_of(&session), Some("bot"));
        let person = Actor {
            username: Some("priya".into()),
            user_agent: Some("kubectl/v1.33".into()),
            ..Actor::default()
        };
        assert_eq!(c.agent_of(&person), None);
    }
}
