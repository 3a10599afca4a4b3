//! `permdrift history --store DIR list|show|diff|verify|reset`: reading the
//! operator's store without taking its lock, and starting it over.
//!
//! Records come out of the journal, filtered and printed (text, or JSON for
//! scripts); two stored snapshots go through the usual diff and renderer;
//! `verify` turns the store's check (chain, MACs with the key, the store's
//! head file, a head kept elsewhere) into an exit code: 0 intact, 1 broken,
//! 2 trouble. `reset` is the offline way to start a new chain: it takes the
//! lock, like the operator.

use super::diff::ReportArgs;
use super::{Ctx, output};
use crate::snapshot::Snapshot;
use crate::store::{self, Record, StoreError};
use anyhow::{Context, bail};
use clap::{Subcommand, ValueEnum};
use serde_json::Value;
use std::fmt::Write;
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
#[command(
    about = "Read the operator's store: list, show and diff journal records, verify the chain",
    long_about = "Read the operator's store: list, show and diff journal records, verify the chain.\n\n\
        The store is the directory `permdrift run` writes (its `store.path`): `journal.jsonl`, \
        one hash-chained record per line, and `snapshots/<sha256>.json`, one source's snapshot \
        per file. These commands (but `reset`) only read it and take no lock, so they are safe \
        while the operator runs; a record the operator is writing at that moment is not shown yet. \
        What `verify` proves, with and without the journal key and a head kept elsewhere: \
        docs/journal.md.",
    after_help = "Exit status: 0 success (verify: intact), 1 verify found a broken record or diff found \
        changes at or above --fail-on, 2 trouble (no store, unreadable or damaged journal).\n\
        Examples:\n  \
        permdrift history --store /var/lib/permdrift list --kind change --source prod-eu\n  \
        permdrift history --store /var/lib/permdrift show 42\n  \
        permdrift history --store /var/lib/permdrift diff 12 42\n  \
        permdrift history --store /var/lib/permdrift verify --key-file /etc/permdrift/journal-key --expect-head 42:HASH\n  \
        permdrift history --store /var/lib/permdrift reset --reason \"journal emptied on node loss, see INC-7\""
)]
pub struct HistoryArgs {
    /// The store directory (the operator's `store.path`).
    #[arg(long, value_name = "DIR", env = "PERMDRIFT_STORE", global = true)]
    store: Option<PathBuf>,
    #[command(subcommand)]
    command: HistoryCommand,
}

#[derive(Subcommand)]
enum HistoryCommand {
    /// One line per record, oldest first: seq, time, kind, source and the notable body fields.
    List(ListArgs),
    /// One record in full.
    Show(ShowArgs),
    /// Diff two stored snapshots, named by digest (or a unique prefix) or by the
    /// seq of a record whose body has a `digest`.
    Diff(DiffArgs),
    /// Check the hash chain (and with --key-file every MAC), every snapshot file that
    /// `snapshot` and `baseline` records name, and that the journal reaches the store's
    /// head file and --expect-head; exit 1 at the first broken record.
    Verify(VerifyArgs),
    /// Start over: set the journal aside (never deleted) and begin a new chain whose
    /// first record (kind `reset`) names the reason, the actor and the previous head.
    /// The only way past a journal the operator refuses; needs the store unlocked
    /// (no operator running on it).
    Reset(ResetArgs),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum RecordFormat {
    Text,
    Json,
}

#[derive(clap::Args)]
struct ListArgs {
    /// Only records of this source.
    #[arg(long, value_name = "S")]
    source: Option<String>,
    /// Only records of this kind (repeat for several).
    #[arg(long, value_name = "K")]
    kind: Vec<String>,
    /// Only records with seq at least SEQ.
    #[arg(long, value_name = "SEQ")]
    since: Option<u64>,
    /// Only the last N matching records.
    #[arg(long, value_name = "N")]
    last: Option<usize>,
    /// text: aligned columns; json: an array with one compact record per line.
    #[arg(long, value_enum, default_value = "text")]
    format: RecordFormat,
}

#[derive(clap::Args)]
struct ShowArgs {
    /// The record's seq.
    seq: u64,
    #[arg(long, value_enum, default_value = "text")]
    format: RecordFormat,
}

#[derive(clap::Args)]
struct DiffArgs {
    /// The earlier snapshot: a digest, a unique digest prefix, or a record seq.
    a: String,
    /// The later snapshot.
    b: String,
    #[command(flatten)]
    report: ReportArgs,
}

#[derive(clap::Args)]
struct VerifyArgs {
    #[arg(long, value_enum, default_value = "text")]
    format: RecordFormat,
    /// The journal key file (the operator's store.journalKeyFile): check every record's
    /// MAC. Without it only the unkeyed chain is checked, which anyone able to write
    /// the store can re-hash.
    #[arg(long, value_name = "PATH", env = "PERMDRIFT_JOURNAL_KEY_FILE")]
    key_file: Option<PathBuf>,
    /// A head kept outside the store (from the operator's log or metrics): the
    /// journal must reach seq SEQ and, with HASH, have that hash there.
    #[arg(long, value_name = "SEQ[:HASH]")]
    expect_head: Option<store::ExpectedHead>,
}

#[derive(clap::Args)]
struct ResetArgs {
    /// Why the store starts over (kept in the reset record).
    #[arg(long, value_name = "TEXT")]
    reason: String,
    /// Who starts it over [default: $USER].
    #[arg(long, value_name = "NAME")]
    actor: Option<String>,
    /// The journal key file: needed when the old journal's records carry MACs,
    /// and the new chain is MACed with it.
    #[arg(long, value_name = "PATH", env = "PERMDRIFT_JOURNAL_KEY_FILE")]
    key_file: Option<PathBuf>,
}

pub fn run(ctx: &Ctx, args: HistoryArgs) -> anyhow::Result<u8> {
    let Some(dir) = args.store else {
        bail!("no store given: pass --store DIR (or set PERMDRIFT_STORE)");
    };
    match args.command {
        HistoryCommand::List(a) => list(ctx, &dir, a),
        HistoryCommand::Show(a) => show(&dir, a),
        HistoryCommand::Diff(a) => diff_snapshots(ctx, &dir, a),
        HistoryCommand::Verify(a) => verify(&dir, a),
        HistoryCommand::Reset(a) => reset(ctx, &dir, a),
    }
}

/// The intact records; a break is reported once what precedes it is printed.
fn records(dir: &Path) -> anyhow::Result<(Vec<Record>, Option<StoreError>)> {
    let scan = store::read_journal(dir)?;
    let broken = scan.broken.map(|b| StoreError::Corrupt {
        dir: dir.display().to_string(),
        line: b.line,
        reason: b.reason,
    });
    Ok((scan.records, broken))
}

fn after_break(broken: Option<StoreError>) -> anyhow::Result<u8> {
    match broken {
        None => Ok(0),
        Some(e) => Err(anyhow::Error::new(e)
            .context("records after this line are not shown (see `permdrift history verify`)")),
    }
}

fn list(ctx: &Ctx, dir: &Path, args: ListArgs) -> anyhow::Result<u8> {
    let (all, broken) = records(dir)?;
    let mut chosen: Vec<&Record> = all
        .iter()
        .filter(|r| args.since.is_none_or(|s| r.seq >= s))
        .filter(|r| args.source.is_none() || r.source == args.source)
        .filter(|r| args.kind.is_empty() || args.kind.contains(&r.kind))
        .collect();
    if let Some(n) = args.last {
        chosen.drain(..chosen.len().saturating_sub(n));
    }
    let text = match args.format {
        RecordFormat::Text => list_text(&chosen),
        RecordFormat::Json => list_json(&chosen)?,
    };
    output::print(&text)?;
    if chosen.is_empty() && broken.is_none() {
        ctx.info(&format!("{} records, none matched", all.len()));
    }
    after_break(broken)
}

/// Body fields worth a column, in display order.
const NOTABLE: [&str; 8] = [
    "object",
    "change",
    "direction",
    "severity",
    "verdict",
    "digest",
    "fingerprint",
    "reason",
];

/// A body field as `key=value`: hashes shortened, values with spaces quoted,
/// structures compacted and capped.
fn field(key: &str, value: &Value) -> String {
    let text = match value {
        Value::String(s) if matches!(key, "digest" | "fingerprint") => s.chars().take(12).collect(),
        Value::String(s) => s.clone(),
        other => {
            let s = other.to_string();
            if s.chars().count() > 60 {
                format!("{}...", s.chars().take(57).collect::<String>())
            } else {
                s
            }
        }
    };
    if text.is_empty() || text.contains(char::is_whitespace) || text.contains('"') {
        format!("{key}={text:?}")
    } else {
        format!("{key}={text}")
    }
}

fn list_text(records: &[&Record]) -> String {
    let w_seq = records
        .iter()
        .map(|r| r.seq.to_string().len())
        .max()
        .unwrap_or(1);
    let w_at = records.iter().map(|r| r.at.len()).max().unwrap_or(0);
    let w_kind = records.iter().map(|r| r.kind.len()).max().unwrap_or(0);
    let w_source = records
        .iter()
        .map(|r| r.source.as_deref().map_or(1, str::len))
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for r in records {
        let fields: Vec<String> = NOTABLE
            .iter()
            .filter_map(|k| r.body.get(*k).map(|v| field(k, v)))
            .collect();
        let line = format!(
            "{:>w_seq$}  {:<w_at$}  {:<w_kind$}  {:<w_source$}  {}",
            r.seq,
            r.at,
            r.kind,
            r.source.as_deref().unwrap_or("-"),
            fields.join(" ")
        );
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn list_json(records: &[&Record]) -> anyhow::Result<String> {
    let mut out = String::from("[");
    for (i, r) in records.iter().enumerate() {
        out.push_str(if i == 0 { "\n" } else { ",\n" });
        out.push_str(&serde_json::to_string(r)?);
    }
    out.push_str(if records.is_empty() { "]\n" } else { "\n]\n" });
    Ok(out)
}

fn find(dir: &Path, seq: u64) -> anyhow::Result<Record> {
    let (all, broken) = records(dir)?;
    match all.into_iter().find(|r| r.seq == seq) {
        Some(r) => Ok(r),
        None => match broken {
            Some(e) => Err(anyhow::Error::new(e).context(format!(
                "record {seq} is not before the first broken record"
            ))),
            None => bail!("store {}: no record {seq}", dir.display()),
        },
    }
}

fn show(dir: &Path, args: ShowArgs) -> anyhow::Result<u8> {
    let r = find(dir, args.seq)?;
    let text = match args.format {
        RecordFormat::Json => format!("{}\n", serde_json::to_string_pretty(&r)?),
        RecordFormat::Text => {
            let mut out = String::new();
            let _ = writeln!(out, "seq     {}", r.seq);
            let _ = writeln!(out, "at      {}", r.at);
            let _ = writeln!(out, "kind    {}", r.kind);
            let _ = writeln!(out, "source  {}", r.source.as_deref().unwrap_or("-"));
            let _ = writeln!(out, "prev    {}", r.prev);
            if let Some(mac) = &r.mac {
                let _ = writeln!(out, "mac     {mac}");
            }
            let _ = writeln!(out, "hash    {}", r.hash);
            let _ = writeln!(out, "body");
            for line in serde_json::to_string_pretty(&r.body)?.lines() {
                let _ = writeln!(out, "  {line}");
            }
            out
        }
    };
    output::print(&text)?;
    Ok(0)
}

/// A snapshot digest from a seq (the record's body `digest`), a digest or a prefix.
fn resolve(dir: &Path, name: &str) -> anyhow::Result<String> {
    if !name.is_empty() && name.len() < 20 && name.bytes().all(|b| b.is_ascii_digit()) {
        let seq: u64 = name.parse().context("seq out of range")?;
        let r = find(dir, seq)?;
        return match r.body.get("digest").and_then(Value::as_str) {
            Some(d) => Ok(d.to_owned()),
            None => bail!(
                "store {}: record {seq} ({}) names no snapshot (its body has no `digest`)",
                dir.display(),
                r.kind
            ),
        };
    }
    Ok(store::snapshots::resolve_prefix(dir, name)?)
}

fn diff_snapshots(ctx: &Ctx, dir: &Path, args: DiffArgs) -> anyhow::Result<u8> {
    let catalog = args.report.catalog()?;
    let a = resolve(dir, &args.a)?;
    let b = resolve(dir, &args.b)?;
    let started = std::time::Instant::now();
    let old = one(store::snapshots::load(dir, &a, None)?);
    let new = one(store::snapshots::load(dir, &b, Some(&old))?);
    ctx.timing("load snapshots", started);
    args.report.report(ctx, &old, &new, catalog.as_deref())
}

fn one(source: crate::snapshot::SourceSnapshot) -> Snapshot {
    let mut s = Snapshot::new();
    s.sources.insert(source.name.clone(), source);
    s
}

fn key(file: Option<&Path>) -> anyhow::Result<Option<store::JournalKey>> {
    Ok(file.map(store::JournalKey::from_file).transpose()?)
}

fn plural(n: u64, word: &str) -> String {
    format!("{n} {word}{}", if n == 1 { "" } else { "s" })
}

/// What the MAC check covered, in a line: the CLI says so plainly when it
/// checked only the unkeyed chain.
fn mac_note(report: &store::VerifyReport) -> String {
    match (report.macs_checked, report.macs_from) {
        (true, Some(seq)) => format!("MACs checked with the journal key from seq {seq} on"),
        (true, None) => "no record carries a MAC: only the unkeyed chain was checked (a key switched on MACs from the next record)".into(),
        (false, Some(seq)) => format!(
            "records carry a MAC from seq {seq} on, not checked: no journal key given (--key-file or PERMDRIFT_JOURNAL_KEY_FILE), so only the unkeyed chain was checked"
        ),
        (false, None) => "no journal key given: only the unkeyed chain was checked".into(),
    }
}

fn verify(dir: &Path, args: VerifyArgs) -> anyhow::Result<u8> {
    let key = key(args.key_file.as_deref())?;
    let report = store::verify(dir, key.as_ref(), args.expect_head.as_ref())?;
    let text = match args.format {
        RecordFormat::Json => {
            let mut v = serde_json::to_value(&report)?;
            if let Some(m) = v.as_object_mut() {
                m.insert("intact".into(), Value::Bool(report.intact()));
            }
            format!("{}\n", serde_json::to_string_pretty(&v)?)
        }
        RecordFormat::Text => {
            let mut out = String::new();
            for w in &report.warnings {
                let _ = writeln!(out, "warning: {w}");
            }
            match &report.first_broken {
                None => {
                    let _ = writeln!(
                        out,
                        "store {}: intact: {}, {} checked, head {}:{}",
                        dir.display(),
                        plural(report.records, "record"),
                        plural(report.snapshots_checked, "snapshot"),
                        report.records,
                        report.head
                    );
                    if let Some(e) = &args.expect_head {
                        let _ = writeln!(
                            out,
                            "reaches the expected head {}{}",
                            e.seq,
                            e.hash
                                .as_deref()
                                .map(|h| format!(":{h}"))
                                .unwrap_or_default()
                        );
                    }
                }
                Some(b) => {
                    let seq = b.seq.map(|s| format!(" (seq {s})")).unwrap_or_default();
                    let _ = writeln!(
                        out,
                        "store {}: {}: {} line {}{seq}: {}",
                        dir.display(),
                        if b.tampered { "tampered" } else { "broken" },
                        store::JOURNAL,
                        b.line,
                        b.reason
                    );
                    let _ = writeln!(
                        out,
                        "{} before it verified, {} checked",
                        plural(report.records, "record"),
                        plural(report.snapshots_checked, "snapshot"),
                    );
                }
            }
            let _ = writeln!(out, "{}", mac_note(&report));
            out
        }
    };
    output::print(&text)?;
    Ok(u8::from(!report.intact()))
}

fn reset(ctx: &Ctx, dir: &Path, args: ResetArgs) -> anyhow::Result<u8> {
    let key = key(args.key_file.as_deref())?;
    let actor = args
        .actor
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "permdrift history reset".into());
    let at = jiff::Timestamp::now().to_string();
    let (store, record) = match store::Store::reset(dir, key.as_ref(), &args.reason, &actor, &at) {
        Ok(done) => done,
        Err(e @ StoreError::Locked { .. }) => {
            return Err(
                anyhow::Error::new(e).context("stop the operator before resetting its store")
            );
        }
        Err(e) => return Err(e.into()),
    };
    let previous = &record.body["previous"];
    let text = |k: &str| previous.get(k).and_then(Value::as_str);
    if let Some(p) = text("problem") {
        ctx.warn(&format!("the previous journal was not intact: {p}"));
    }
    let aside = text("journal").map_or_else(
        || "there was no journal to set aside".to_owned(),
        |j| format!("previous journal set aside as {}", dir.join(j).display()),
    );
    output::print(&format!(
        "store {}: reset: {aside} (head {}); new chain starts at {}{}\n",
        dir.display(),
        text("head").unwrap_or("0"),
        store.head(),
        if store.keyed() { ", MACed" } else { "" }
    ))?;
    Ok(0)
}
