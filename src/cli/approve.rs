//! `permdrift approve`: approve one widening, for a time.
//!
//! What is approved comes in either as the object and digest (`permdrift
//! plan` prints both) or as content: a manifest, or an IAM policy document
//! and its target, diffed against the source's current state
//! (src/approval/content.rs) so the approval exists before anyone applies
//! it. Out goes a signed approval file (`--key`, `-o`), verified offline by
//! the operator against `approvals.keys`, or a request to a running
//! operator's API with the caller's Kubernetes token (`--server`; the
//! operator's endpoint is not there yet, docs/approvals.md).

use super::api_client::{self, Credential};
use super::{Ctx, InputArgs, load, output};
use crate::approval::content::{self, IamContent, ProposedWidening};
use crate::approval::{Approval, SignedApproval};
use crate::index::k8s::K8sObject;
use crate::signature::SecretKey;
use crate::snapshot::{SourceData, SourceSnapshot};
use anyhow::{Context, bail};
use serde::Serialize;
use std::path::PathBuf;

#[derive(clap::Args)]
#[command(after_help = "Examples:\n  \
    permdrift plan --source prod --baseline base.json --current now.json   # prints object and digest\n  \
    permdrift approve --key alice.key --key-id alice --source prod --object ClusterRoleBinding/ci-admin \\\n      \
    --digest 3f2a... --for 4h --reason \"INC-42 hotfix\" -o approval.json\n  \
    permdrift approve --key alice.key --key-id alice --source prod --snapshot now.json --manifest crb.yaml \\\n      \
    --reason \"reviewed in PR 812\" -o approval.json\n  \
    permdrift approve --key alice.key --key-id alice --source acct --snapshot now.json \\\n      \
    --policy-document admin.json --target arn:aws:iam::123456789012:role/ci --reason \"...\" -o approval.json")]
pub struct ApproveArgs {
    /// The source the widening is in.
    #[arg(long)]
    source: String,
    /// The widened object, as `permdrift plan` and the diff name it (`ClusterRoleBinding/x`).
    #[arg(long, requires = "digest", conflicts_with = "snapshot")]
    object: Option<String>,
    /// The widening's grants digest (`permdrift plan` prints it).
    #[arg(long, requires = "object")]
    digest: Option<String>,
    /// The source's current state (a snapshot), to approve content against.
    #[arg(long, value_name = "FILE")]
    snapshot: Option<PathBuf>,
    /// Kubernetes manifests to pre-approve (as `kubectl apply -f` would write them).
    #[arg(long, value_name = "FILE", requires = "snapshot")]
    manifest: Vec<PathBuf>,
    /// An IAM policy document to pre-approve, put on --target.
    #[arg(
        long,
        value_name = "FILE",
        requires = "snapshot",
        requires = "target",
        conflicts_with = "manifest"
    )]
    policy_document: Option<PathBuf>,
    /// The entity the document goes on: a user, group or role ARN (as an
    /// inline policy), or a managed policy ARN (as its new default version).
    #[arg(long, value_name = "ARN")]
    target: Option<String>,
    /// The inline policy's name [default: the document file's stem].
    #[arg(long, value_name = "NAME")]
    policy_name: Option<String>,
    /// How long the approval holds (`30m`, `4h`); the operator caps it at `approvals.maxExpiry`.
    #[arg(long = "for", value_name = "DURATION", default_value = "8h")]
    valid_for: String,
    /// Why: journaled with the approval.
    #[arg(long)]
    reason: String,
    /// Sign with this ed25519 private key (PEM, from `permdrift keygen`).
    #[arg(
        long,
        value_name = "FILE",
        requires = "key_id",
        conflicts_with = "server"
    )]
    key: Option<PathBuf>,
    /// The id the operator's config lists the key under (`approvals.keys[].id`).
    #[arg(long, value_name = "ID")]
    key_id: Option<String>,
    /// Where to write the signed approval (one approval, or a list when the content widens several objects).
    #[arg(short, long, value_name = "FILE", requires = "key")]
    output: Option<PathBuf>,
    /// Send the approval to a running operator's API with your Kubernetes token.
    #[arg(long, value_name = "URL")]
    server: Option<String>,
    #[command(flatten)]
    trust: api_client::TrustArgs,
    #[command(flatten)]
    bearer: api_client::TokenArgs,
    #[command(flatten)]
    input: InputArgs,
}

/// What `--server` posts (the operator authenticates the bearer token and
/// checks RBAC verb `approve` on `widenings.permdrift.dev`).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ApprovalRequest {
    pub source: String,
    pub object: String,
    pub digest: String,
    pub reason: String,
    pub valid_for_seconds: u64,
}

pub fn run(ctx: &Ctx, args: ApproveArgs) -> anyhow::Result<u8> {
    let valid_for = crate::config::parse_duration(&args.valid_for)
        .map_err(|e| anyhow::anyhow!("--for: {e}"))?;
    if valid_for.is_zero() {
        bail!("--for: an approval must hold for longer than 0");
    }
    let targets = what(ctx, &args)?;
    if targets.is_empty() {
        ctx.info("the content widens nothing against the current state: nothing to approve");
        return Ok(0);
    }
    for t in &targets {
        ctx.info(&format!(
            "approving {} in {} ({}, digest {})",
            t.object,
            args.source,
            t.severity.as_str(),
            t.digest
        ));
    }
    if let Some(server) = &args.server {
        return send(ctx, &args, server, &targets, valid_for.as_secs());
    }
    let (Some(key_file), Some(key_id), Some(out)) = (&args.key, &args.key_id, &args.output) else {
        bail!("say how to approve: --key FILE --key-id ID -o FILE (signed), or --server URL");
    };
    let text = std::fs::read_to_string(key_file)
        .with_context(|| format!("--key {}", key_file.display()))?;
    let key =
        SecretKey::from_pem(&text).with_context(|| format!("--key {}", key_file.display()))?;
    let issued = jiff::Timestamp::now();
    let expires =
        issued + jiff::SignedDuration::try_from(valid_for).context("--for is too long")?;
    let signed: Vec<SignedApproval> = targets
        .into_iter()
        .map(|t| {
            Approval {
                source: args.source.clone(),
                object: t.object,
                digest: t.digest,
                approver: key_id.clone(),
                reason: args.reason.clone(),
                issued,
                expires,
            }
            .sign(&key)
        })
        .collect();
    let mut json = match signed.as_slice() {
        [one] => serde_json::to_string_pretty(one)?,
        many => serde_json::to_string_pretty(many)?,
    };
    json.push('\n');
    output::write_atomic(out, json.as_bytes())?;
    ctx.info(&format!(
        "wrote {} signed approval{} to {} (valid until {expires})",
        signed.len(),
        if signed.len() == 1 { "" } else { "s" },
        out.display()
    ));
    Ok(0)
}

/// The widenings to approve: named, or computed from content.
fn what(ctx: &Ctx, args: &ApproveArgs) -> anyhow::Result<Vec<ProposedWidening>> {
    if let (Some(object), Some(digest)) = (&args.object, &args.digest) {
        if digest.len() != 64 || !digest.chars().all(|c| c.is_ascii_hexdigit()) {
            bail!("--digest {digest:?}: expected 64 hex digits, as `permdrift plan` prints");
        }
        return Ok(vec![ProposedWidening {
            object: object.clone(),
            digest: digest.to_ascii_lowercase(),
            // Unknown here; the operator judges the severity itself.
            severity: crate::report::Severity::Info,
        }]);
    }
    let Some(snapshot) = &args.snapshot else {
        bail!(
            "say what to approve: --object O --digest D, or --snapshot CURRENT with --manifest \
             FILE or --policy-document FILE --target ARN"
        );
    };
    let current = load(ctx, std::slice::from_ref(snapshot), &args.input)?;
    let Some(source) = current.sources.get(&args.source) else {
        let names: Vec<&str> = current.sources.keys().map(String::as_str).collect();
        bail!(
            "{}: has no source {:?} (it has {})",
            snapshot.display(),
            args.source,
            names.join(", ")
        );
    };
    let proposed = if !args.manifest.is_empty() {
        let manifests = load(ctx, &args.manifest, &args.input)?;
        let objects: Vec<K8sObject> = manifests
            .sources
            .values()
            .filter_map(|s| match &s.data {
                SourceData::Kubernetes(m) => Some(m.objects().map(|(_, o)| o.clone())),
                SourceData::Aws(_) => None,
            })
            .flatten()
            .collect();
        if objects.is_empty() {
            bail!("--manifest: no RBAC objects in the given files");
        }
        content::with_k8s_objects(source, &objects)?
    } else if let (Some(doc_file), Some(target)) = (&args.policy_document, &args.target) {
        iam_content(source, doc_file, target, args.policy_name.as_deref())?
    } else {
        bail!("with --snapshot, give --manifest FILE or --policy-document FILE --target ARN");
    };
    Ok(content::widenings(
        source,
        &proposed,
        crate::grants::catalog::Catalog::embedded(),
    )?)
}

fn iam_content(
    source: &SourceSnapshot,
    doc_file: &std::path::Path,
    target: &str,
    name: Option<&str>,
) -> anyhow::Result<SourceSnapshot> {
    let text = std::fs::read_to_string(doc_file)
        .with_context(|| format!("--policy-document {}", doc_file.display()))?;
    let document: serde_json::Value = serde_json::from_str(&text).with_context(|| {
        format!(
            "--policy-document {}: not a JSON policy document",
            doc_file.display()
        )
    })?;
    let stem = doc_file
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("permdrift-approved");
    let content = IamContent {
        target_arn: target,
        name: name.unwrap_or(stem),
        document: &document,
    };
    content::with_iam_policy(source, &content)
        .with_context(|| format!("--policy-document {}", doc_file.display()))
}

fn send(
    ctx: &Ctx,
    args: &ApproveArgs,
    server: &str,
    targets: &[ProposedWidening],
    valid_for_seconds: u64,
) -> anyhow::Result<u8> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let token = runtime.block_on(args.bearer.token())?;
    let url = format!("{}/api/v1/approvals", server.trim_end_matches('/'));
    for t in targets {
        let body = serde_json::to_string(&ApprovalRequest {
            source: args.source.clone(),
            object: t.object.clone(),
            digest: t.digest.clone(),
            reason: args.reason.clone(),
            valid_for_seconds,
        })?;
        let credential = Credential::BearerJson {
            token: token.clone(),
            body,
        };
        let (status, reply) = runtime.block_on(api_client::send(&url, &args.trust, &credential))?;
        if status != 200 {
            bail!("{url}: {status}: {}", reply.trim());
        }
        ctx.info(reply.trim());
    }
    Ok(0)
}
