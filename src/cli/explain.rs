//! `permdrift explain`: the chain behind one judged change, from the journal.
//!
//! A journal record number (a `change` record's seq) or a change
//! fingerprint (or its first characters) comes in with the store; out comes
//! the chain: the agent suggestion the change came from, its matching lines
//! quoted from the text the operator journaled, who made the change, the
//! change itself, and the verdict. The latest attribution wins: an
//! `attribution` record written after the change supersedes the change
//! record's own (docs/attribution.md). Reading and rendering are separate so
//! that the rendering is tested on records made in memory.

use super::Ctx;
use crate::attribution::Attribution;
use crate::operator::records::{Body, ChangeBody, SuggestionBody};
use crate::store::Record;
use anyhow::{Context, bail};
use std::fmt::Write as _;
use std::path::PathBuf;

#[derive(clap::Args)]
#[command(after_help = "Examples:\n  \
    permdrift explain 42 --store /var/lib/permdrift          # the change record with seq 42\n  \
    permdrift explain 3f2a9c --store /var/lib/permdrift      # by (the start of) its fingerprint")]
pub struct ExplainArgs {
    /// A `change` record's number (seq), or a change fingerprint or its start.
    #[arg(value_name = "RECORD|FINGERPRINT")]
    what: String,
    /// The operator's store (its `store.path`).
    #[arg(long, value_name = "DIR")]
    store: PathBuf,
}

pub fn run(_ctx: &Ctx, args: ExplainArgs) -> anyhow::Result<u8> {
    let records = crate::store::read_records(&args.store)
        .with_context(|| format!("--store {}", args.store.display()))?;
    print!("{}", explain(&records, &args.what)?);
    Ok(0)
}

/// Most lines quoted from a suggestion per piece of evidence.
const MAX_QUOTED: usize = 20;

/// The chain of the change `what` names, as text.
pub fn explain(records: &[Record], what: &str) -> anyhow::Result<String> {
    let changes: Vec<(&Record, ChangeBody)> = records
        .iter()
        .filter_map(|r| match Body::of_record(r) {
            Ok(Some(Body::Change(c))) => Some((r, *c)),
            _ => None,
        })
        .collect();
    let by_seq = what
        .parse::<u64>()
        .ok()
        .and_then(|seq| changes.iter().find(|(r, _)| r.seq == seq));
    let found: Vec<&(&Record, ChangeBody)> = match by_seq {
        Some(c) => vec![c],
        None => changes
            .iter()
            .filter(|(_, c)| !what.is_empty() && c.fingerprint.starts_with(what))
            .collect(),
    };
    let (record, change) = match found.as_slice() {
        [] => bail!("no change record with seq or fingerprint {what:?} in the journal"),
        [one] => *one,
        // The same fingerprint judged again (reopened): the latest.
        many if many
            .iter()
            .all(|(_, c)| c.fingerprint == many[0].1.fingerprint) =>
        {
            many[many.len() - 1]
        }
        many => bail!(
            "{what:?} starts {} fingerprints; give more of it",
            many.len()
        ),
    };
    let mut attribution = change.attribution.clone();
    let mut late = None;
    for r in records.iter().filter(|r| r.seq > record.seq) {
        if let Ok(Some(Body::Attribution(a))) = Body::of_record(r)
            && a.object == change.object
            && a.fingerprint == change.fingerprint
        {
            late = Some(r.seq);
            attribution = Some(a.attribution);
        }
    }
    let mut out = String::new();
    match &attribution {
        Some(a) => render_suggestion(&mut out, records, record.seq, a),
        None => out.push_str("suggestion  none known\n"),
    }
    render_actor(&mut out, attribution.as_ref());
    let _ = writeln!(
        out,
        "change      #{} {} {} {} {} ({})",
        record.seq,
        record.source.as_deref().unwrap_or("-"),
        change.object,
        change.change.as_str(),
        change.direction.as_str(),
        change.severity.as_str(),
    );
    if let Some(w) = &change.witness {
        let _ = writeln!(out, "            {}", w.explanation);
    }
    let _ = writeln!(
        out,
        "verdict     {}: {}",
        change.verdict.as_str(),
        change.reason
    );
    if let Some(a) = &attribution {
        let _ = writeln!(out, "attributed  {}", a.line());
        if let Some(seq) = late {
            let _ = writeln!(out, "            (record #{seq}, after the change record)");
        }
    }
    Ok(out)
}

/// The suggestion the attribution names, with the lines of its evidence
/// quoted from the journaled text (posted before the change was recorded).
fn render_suggestion(out: &mut String, records: &[Record], before: u64, a: &Attribution) {
    let Some(id) = &a.suggestion else {
        out.push_str("suggestion  none matched\n");
        return;
    };
    let posted: Option<SuggestionBody> = records
        .iter()
        .filter(|r| r.seq < before)
        .filter_map(|r| match Body::of_record(r) {
            Ok(Some(Body::Suggestion(s))) if &s.id == id => Some(s),
            _ => None,
        })
        .next_back();
    let confidence = a.confidence.map_or("-", |c| c.as_str());
    let Some(s) = posted else {
        let _ = writeln!(
            out,
            "suggestion  {id} ({confidence}; its text is not in this journal)"
        );
        return;
    };
    let _ = writeln!(
        out,
        "suggestion  {id} by agent {} at {}{} ({confidence})",
        s.agent.as_deref().unwrap_or("-"),
        s.at,
        s.url
            .as_deref()
            .map(|u| format!(", {u}"))
            .unwrap_or_default()
    );
    let lines: Vec<&str> = s.text.lines().collect();
    for e in &a.evidence {
        let _ = writeln!(out, "            {}:", e.location);
        let start = e
            .location
            .rsplit_once(':')
            .and_then(|(_, l)| l.parse::<usize>().ok())
            .filter(|l| *l >= 1 && *l <= lines.len());
        match start {
            Some(start) => {
                // The command and its continuation lines, or the manifest's first line.
                for line in lines[start - 1..].iter().take(MAX_QUOTED) {
                    let _ = writeln!(out, "            > {line}");
                    if !line.trim_end().ends_with('\\') {
                        break;
                    }
                }
            }
            None => {
                let _ = writeln!(out, "            > {}", e.text);
            }
        }
    }
}

fn render_actor(out: &mut String, a: Option<&Attribution>) {
    let Some(actor) = a.and_then(|a| a.actor.as_ref()) else {
        out.push_str("actor       unknown\n");
        return;
    };
    let mut details = Vec::new();
    if !actor.groups.is_empty() {
        details.push(format!("groups {}", actor.groups.join(",")));
    }
    if let Some(i) = &actor.impersonated_user {
        details.push(format!("as {i}"));
    }
    if let Some(ua) = &actor.user_agent {
        details.push(ua.clone());
    }
    if !actor.source_ips.is_empty() {
        details.push(format!("from {}", actor.source_ips.join(",")));
    }
    if let Some(at) = actor.at {
        details.push(format!("at {at}"));
    }
    let kind = a.map_or("", |a| a.kind.as_str());
    let _ = writeln!(
        out,
        "actor       {} ({kind}{}{})",
        actor.display(),
        if details.is_empty() { "" } else { "; " },
        details.join("; ")
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attribution::{Actor, ActorSource, AttributionKind, Confidence, Evidence};
    use crate::decide::{ObjectKey, Verdict};
    use crate::model::k8s::{RbacKey, RbacKind};
    use crate::operator::records::{AttributionBody, Caller};
    use crate::report::{ChangeKind, Direction, Severity, Witness};

    const ANSWER: &str = "---\nid: eng-help-1\nagent: devhelper\n---\nBind it:\n\n```sh\nkubectl create clusterrolebinding payments-read-secrets \\\n  --clusterrole=secret-reader --group=payments-devs\n```\n";

    fn record(seq: u64, source: Option<&str>, body: &Body) -> Record {
        let (kind, body) = body.encode().unwrap();
        Record {
            seq,
            at: "2026-12-03T09:20:00Z".into(),
            kind: kind.into(),
            source: source.map(str::to_owned),
            body,
            prev: String::new(),
            mac: None,
            hash: String::new(),
        }
    }

    fn journal() -> Vec<Record> {
        let key = ObjectKey::K8s(RbacKey::new(
            RbacKind::ClusterRoleBinding,
            None,
            "payments-read-secrets",
        ));
        let suggestion = Body::Suggestion(SuggestionBody {
            id: "eng-help-1".into(),
            agent: Some("devhelper".into()),
            at: "2026-12-03T09:12:00Z".parse().unwrap(),
            url: Some("https://forum.example/t/90211/3".into()),
            caller: Caller::Kubernetes {
                username: "devhelper-poster".into(),
                uid: String::new(),
                groups: Vec::new(),
            },
            file: "forum-answer.md".into(),
            text: ANSWER.into(),
            actions: 1,
            skipped: Vec::new(),
        });
        let without_actor = Attribution {
            kind: AttributionKind::AgentSuggested,
            actor: None,
            agent: Some("devhelper".into()),
            suggestion: Some("eng-help-1".into()),
            confidence: Some(Confidence::Exact),
            evidence: vec![Evidence {
                location: "forum-answer.md:8".into(),
                text: "kubectl create clusterrolebinding payments-read-secrets".into(),
                grants: Vec::new(),
            }],
            beyond: Vec::new(),
        };
        let change = Body::Change(Box::new(ChangeBody {
            key: key.clone(),
            object: "ClusterRoleBinding/payments-read-secrets".into(),
            change: ChangeKind::Added,
            direction: Direction::Widening,
            severity: Severity::High,
            risks: Vec::new(),
            verdict: Verdict::Alert,
            reason: "unapproved widening".into(),
            fingerprint: "3f2a9c0d".into(),
            grants: String::new(),
            gained_count: 2,
            lost_count: 0,
            witness: Some(Witness {
                subject: "Group:payments-devs".into(),
                action: "get".into(),
                resource: "secrets".into(),
                scope: "cluster".into(),
                api_group: None,
                explanation: "Group:payments-devs can now get secrets cluster-wide".into(),
            }),
            detected_at: "2026-12-03T09:20:00Z".parse().unwrap(),
            latency_seconds: None,
            raw: None,
            attribution: Some(without_actor.clone()),
        }));
        let late = Body::Attribution(AttributionBody {
            key,
            object: "ClusterRoleBinding/payments-read-secrets".into(),
            fingerprint: "3f2a9c0d".into(),
            attribution: Attribution {
                actor: Some(Actor {
                    via: ActorSource::AuditLog,
                    username: Some("priya".into()),
                    groups: vec!["payments".into()],
                    user_agent: Some("kubectl/v1.33.0".into()),
                    source_ips: vec!["10.0.4.7".into()],
                    event: Some("create".into()),
                    at: Some("2026-12-03T09:19:59Z".parse().unwrap()),
                    ..Actor::default()
                }),
                ..without_actor
            },
            waited_seconds: 0.4,
        });
        vec![
            record(1, None, &suggestion),
            record(2, Some("prod-eu"), &change),
            record(3, Some("prod-eu"), &late),
        ]
    }

    #[test]
    fn the_chain_runs_from_the_suggestion_to_the_verdict() {
        let records = journal();
        let by_seq = explain(&records, "2").unwrap();
        insta::assert_snapshot!(by_seq);
        assert_eq!(explain(&records, "3f2a").unwrap(), by_seq);
    }

    #[test]
    fn an_unknown_change_is_an_error_naming_it() {
        let err = explain(&journal(), "ffff").unwrap_err().to_string();
        assert!(err.contains("\"ffff\""), "{err}");
    }
}
