//! `permdrift who-can`: the subjects allowed a request in one snapshot.

use super::{Ctx, InputArgs, catalog, load, output};
use crate::whocan::{self, Answer, K8sQuery};
use anyhow::bail;
use std::fmt::Write;
use std::path::PathBuf;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum WhoCanFormat {
    Text,
    Json,
}

#[derive(clap::Args)]
#[command(
    override_usage = "permdrift who-can VERB RESOURCE [-n NAMESPACE] [--api-group G] [--name N] SNAPSHOT\n       permdrift who-can ACTION [--resource ARN] SNAPSHOT",
    after_help = "RESOURCE may be `pods`, `pods/exec`, `deployments.apps`, `*/scale` or a nonResourceURL such as `/metrics`.\n\
                  ACTION is an IAM action or pattern such as `iam:PassRole` or `s3:Get*`."
)]
pub struct WhoCanArgs {
    /// VERB RESOURCE SNAPSHOT (Kubernetes) or ACTION SNAPSHOT (AWS).
    #[arg(required = true, value_name = "ARGS")]
    args: Vec<String>,
    /// Kubernetes: only this namespace (plus cluster-wide grants).
    #[arg(short, long)]
    namespace: Option<String>,
    /// Kubernetes: the API group of RESOURCE (core is empty).
    #[arg(long, value_name = "G")]
    api_group: Option<String>,
    /// Kubernetes: a specific object name (resourceNames rules apply).
    #[arg(long)]
    name: Option<String>,
    /// AWS: the resource ARN the action is performed on.
    #[arg(long, value_name = "ARN")]
    resource: Option<String>,
    #[arg(long, value_enum, default_value = "text")]
    format: WhoCanFormat,
    /// IAM action catalog to use instead of the built-in one.
    #[arg(long, value_name = "FILE")]
    catalog: Option<PathBuf>,
    #[command(flatten)]
    input: InputArgs,
}

/// Splits `deployments.apps/scale` into (`deployments/scale`, `apps`).
fn split_resource(spec: &str) -> (String, Option<String>) {
    if spec.starts_with('/') || spec.starts_with('*') {
        return (spec.to_owned(), None);
    }
    let (base, sub) = match spec.split_once('/') {
        Some((b, s)) => (b, Some(s)),
        None => (spec, None),
    };
    let (resource, group) = match base.split_once('.') {
        Some((r, g)) => (r, Some(g.to_owned())),
        None => (base, None),
    };
    let resource = match sub {
        Some(s) => format!("{resource}/{s}"),
        None => resource.to_owned(),
    };
    (resource, group)
}

pub fn run(ctx: &Ctx, args: WhoCanArgs) -> anyhow::Result<u8> {
    let (question, snapshot_path, kube_query) = match args.args.as_slice() {
        [verb, resource, snapshot] => {
            let (resource, group) = split_resource(resource);
            let q = K8sQuery {
                verb: verb.clone(),
                resource,
                api_group: args.api_group.clone().or(group).unwrap_or_default(),
                namespace: args.namespace.clone(),
                name: args.name.clone(),
            };
            let where_ = match &q.namespace {
                Some(ns) => format!("in namespace {ns}"),
                None => "anywhere".into(),
            };
            (
                format!("{} {} {where_}", q.verb, args.args[1]),
                PathBuf::from(snapshot),
                Some(q),
            )
        }
        [action, snapshot] if action.contains(':') || action == "*" => {
            let on = args
                .resource
                .as_deref()
                .map(|r| format!(" on {r}"))
                .unwrap_or_default();
            (format!("{action}{on}"), PathBuf::from(snapshot), None)
        }
        [_, _] => bail!(
            "for Kubernetes give VERB RESOURCE SNAPSHOT; for AWS give an action like `iam:PassRole` and SNAPSHOT"
        ),
        _ => bail!("expected VERB RESOURCE SNAPSHOT or ACTION SNAPSHOT"),
    };
    let snapshot = load(ctx, std::slice::from_ref(&snapshot_path), &args.input)?;
    let catalog = catalog(args.catalog.as_ref())?;
    let mut answers: Vec<(String, Answer)> = Vec::new();
    let mut searched = 0;
    for source in snapshot.sources.values() {
        match (&kube_query, source.kube(), source.iam()) {
            (Some(q), Some(model), _) => {
                searched += 1;
                answers.extend(
                    whocan::kube(model, q)
                        .into_iter()
                        .map(|a| (source.name.clone(), a)),
                );
            }
            (None, _, Some(model)) => {
                searched += 1;
                let action = &args.args[0];
                answers.extend(
                    whocan::iam(model, &catalog, action, args.resource.as_deref())
                        .into_iter()
                        .map(|a| (source.name.clone(), a)),
                );
            }
            _ => {}
        }
        if !source.is_complete() {
            ctx.warn(&format!(
                "source {:?} is incomplete; the answer may miss subjects",
                source.name
            ));
        }
    }
    if searched == 0 {
        bail!(
            "{} has no {} state to search",
            snapshot_path.display(),
            if kube_query.is_some() {
                "Kubernetes"
            } else {
                "AWS"
            }
        );
    }
    let text = match args.format {
        WhoCanFormat::Json => {
            let list: Vec<serde_json::Value> = answers
                .iter()
                .map(|(source, a)| {
                    let mut v = serde_json::to_value(a).unwrap_or_default();
                    v["source"] = serde_json::Value::String(source.clone());
                    v
                })
                .collect();
            let mut s = serde_json::to_string_pretty(&list)?;
            s.push('\n');
            s
        }
        WhoCanFormat::Text => {
            let mut s = format!(
                "who can {question}: {} subject{}\n",
                answers.len(),
                if answers.len() == 1 { "" } else { "s" }
            );
            let width = answers
                .iter()
                .map(|(_, a)| a.subject.len())
                .max()
                .unwrap_or(0);
            for (source, a) in &answers {
                let condition = a
                    .condition
                    .as_deref()
                    .map(|c| format!("  when {c}"))
                    .unwrap_or_default();
                let _ = writeln!(
                    s,
                    "  {:<width$}  {:<22} {}{condition}  [{source}]",
                    a.subject,
                    a.scope,
                    a.via.join("; ")
                );
            }
            s
        }
    };
    output::print(&text)?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_specs() {
        assert_eq!(split_resource("pods"), ("pods".into(), None));
        assert_eq!(split_resource("pods/exec"), ("pods/exec".into(), None));
        assert_eq!(
            split_resource("deployments.apps/scale"),
            ("deployments/scale".into(), Some("apps".into()))
        );
        assert_eq!(split_resource("/metrics"), ("/metrics".into(), None));
        assert_eq!(split_resource("*/scale"), ("*/scale".into(), None));
    }
}
