//! Rendering a [`Report`] as text (for terminals and CI logs, coloured on a
//! TTY), JSON (the versioned contract) or markdown (for pull-request comments).

use crate::report::{Change, Grant, Report, Severity};
use std::fmt::Write;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
    Markdown,
    /// SARIF 2.1.0 for code scanning (src/sarif.rs).
    Sarif,
}

/// Grants listed per change in text and markdown; JSON always has all of them.
pub const MAX_GRANTS_SHOWN: usize = 20;
/// Lines of object diff shown per change in text and markdown.
const MAX_DIFF_LINES: usize = 80;

pub fn render(report: &Report, format: OutputFormat, color: bool) -> String {
    match format {
        OutputFormat::Json => {
            let mut s = serde_json::to_string_pretty(report).unwrap_or_default();
            s.push('\n');
            s
        }
        OutputFormat::Text => text(report, &Palette::new(color)),
        OutputFormat::Markdown => markdown(report),
        OutputFormat::Sarif => crate::sarif::render(report, &Default::default(), &[]),
    }
}

struct Palette {
    on: bool,
}

impl Palette {
    fn new(on: bool) -> Self {
        Self { on }
    }

    fn paint(&self, code: &str, s: &str) -> String {
        if self.on {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_owned()
        }
    }

    fn severity(&self, s: Severity) -> String {
        let label = format!("{:<8}", s.as_str().to_uppercase());
        let code = match s {
            Severity::Critical => "1;91",
            Severity::High => "91",
            Severity::Medium => "93",
            Severity::Low => "96",
            Severity::Info => "2",
        };
        self.paint(code, &label)
    }
}

fn headline(report: &Report) -> String {
    let s = &report.summary;
    if s.changes == 0 {
        return "no changes".into();
    }
    let mut parts = Vec::new();
    for (n, word) in [
        (s.widening, "widening"),
        (s.narrowing, "narrowing"),
        (s.mixed, "mixed"),
        (s.neutral, "neutral"),
    ] {
        if n > 0 {
            parts.push(format!("{n} {word}"));
        }
    }
    let max = s.max_severity.map_or("none", Severity::as_str);
    format!(
        "{} change{}: {} (highest severity: {max})",
        s.changes,
        if s.changes == 1 { "" } else { "s" },
        parts.join(", ")
    )
}

fn grant_line(g: &Grant) -> String {
    let mut resource = match &g.api_group {
        Some(group) => crate::classify::k8s::qualified_resource(&g.resource, group),
        None => g.resource.clone(),
    };
    if !g.resource_names.is_empty() {
        resource.push_str(&format!(" [{}]", g.resource_names.join(", ")));
    }
    let mut line = format!("{}  {}  {} {}", g.subject, g.scope, g.action, resource);
    if let Some(c) = &g.condition {
        line.push_str(&format!("  when {c}"));
    }
    if g.effect.as_deref() == Some("deny") {
        line = format!("DENY {line}");
    }
    if g.latent {
        line.push_str("  (latent)");
    }
    if g.possible {
        line.push_str("  (possible)");
    }
    line
}

fn text(report: &Report, p: &Palette) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "permdrift: {}", headline(report));
    for c in &report.changes {
        text_change(&mut out, c, p);
    }
    if !report.subjects.is_empty() {
        let _ = writeln!(out, "\nSubjects");
        for s in &report.subjects {
            let _ = writeln!(
                out,
                "  {}  {}  {}  [{}: {}]",
                s.subject,
                p.paint("32", &format!("+{}", s.gained_count)),
                p.paint("31", &format!("-{}", s.lost_count)),
                s.platform,
                s.source
            );
        }
    }
    for i in &report.incomplete {
        let _ = writeln!(
            out,
            "\n{} source {:?} not fully compared: {} ({} objects left out)",
            p.paint("93", "warning:"),
            i.source,
            i.reason,
            i.objects_not_compared
        );
    }
    for w in &report.warnings {
        let _ = writeln!(out, "{} {w}", p.paint("93", "warning:"));
    }
    out
}

fn text_change(out: &mut String, c: &Change, p: &Palette) {
    let _ = writeln!(
        out,
        "\n{} {:<9} {}  {}  [{}: {}]",
        p.severity(c.severity),
        c.direction.as_str(),
        p.paint("1", &c.object.display()),
        c.change.as_str(),
        c.platform,
        c.source
    );
    if !c.risks.is_empty() {
        let risks: Vec<String> = c.risks.iter().map(|r| r.as_str()).collect();
        let _ = writeln!(out, "  risks    {}", risks.join(", "));
    }
    if let Some(w) = &c.witness {
        let _ = writeln!(out, "  witness  {}", w.explanation);
    }
    if let Some(a) = &c.attribution {
        let line = a.as_ref().map_or_else(|| "none".to_owned(), |a| a.line());
        let _ = writeln!(out, "  by       {line}");
    }
    for (label, grants, count, sign, code) in [
        ("gained", &c.gained, c.gained_count, "+", "32"),
        ("lost", &c.lost, c.lost_count, "-", "31"),
    ] {
        if count == 0 {
            continue;
        }
        let _ = writeln!(
            out,
            "  {label:<8} {count} grant{}",
            if count == 1 { "" } else { "s" }
        );
        for g in grants.iter().take(MAX_GRANTS_SHOWN) {
            let _ = writeln!(
                out,
                "    {}",
                p.paint(code, &format!("{sign} {}", grant_line(g)))
            );
        }
        let shown = grants.len().min(MAX_GRANTS_SHOWN);
        if count > shown {
            let _ = writeln!(
                out,
                "    ... and {} more (see --format json)",
                count - shown
            );
        }
    }
    let lines: Vec<&str> = c.text_diff.lines().collect();
    for line in lines.iter().take(MAX_DIFF_LINES) {
        let colored = if line.starts_with('+') && !line.starts_with("+++") {
            p.paint("32", line)
        } else if line.starts_with('-') && !line.starts_with("---") {
            p.paint("31", line)
        } else if line.starts_with("@@") {
            p.paint("36", line)
        } else {
            (*line).to_owned()
        };
        let _ = writeln!(out, "  | {colored}");
    }
    if lines.len() > MAX_DIFF_LINES {
        let _ = writeln!(out, "  | ... {} more lines", lines.len() - MAX_DIFF_LINES);
    }
}

fn md_escape(s: &str) -> String {
    s.replace('|', "\\|")
}

fn markdown(report: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "### permdrift: {}\n", headline(report));
    if !report.changes.is_empty() {
        let _ = writeln!(
            out,
            "| Severity | Direction | Object | Change | Source | Risks |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|---|");
        for c in &report.changes {
            let risks: Vec<String> = c
                .risks
                .iter()
                .map(|r| format!("`{}`", r.as_str()))
                .collect();
            let severity = match c.severity {
                Severity::Critical | Severity::High => format!("**{}**", c.severity.as_str()),
                other => other.as_str().to_owned(),
            };
            let _ = writeln!(
                out,
                "| {severity} | {} | `{}` | {} | {} | {} |",
                c.direction.as_str(),
                md_escape(&c.object.display()),
                c.change.as_str(),
                md_escape(&c.source),
                risks.join(" ")
            );
        }
    }
    for c in &report.changes {
        let _ = writeln!(
            out,
            "\n<details><summary><code>{}</code>: {} {}</summary>\n",
            c.object.display(),
            c.severity.as_str(),
            c.direction.as_str()
        );
        if let Some(w) = &c.witness {
            let _ = writeln!(out, "**Witness:** {}\n", w.explanation);
        }
        if let Some(a) = &c.attribution {
            let line = a.as_ref().map_or_else(|| "none".to_owned(), |a| a.line());
            let _ = writeln!(out, "**Attribution:** {}\n", md_escape(&line));
        }
        for (label, grants, count) in [
            ("Gained", &c.gained, c.gained_count),
            ("Lost", &c.lost, c.lost_count),
        ] {
            if count == 0 {
                continue;
            }
            let _ = writeln!(out, "**{label}** ({count})\n");
            for g in grants.iter().take(MAX_GRANTS_SHOWN) {
                let _ = writeln!(out, "- `{}`", grant_line(g).replace('`', "'"));
            }
            let shown = grants.len().min(MAX_GRANTS_SHOWN);
            if count > shown {
                let _ = writeln!(out, "- ... and {} more", count - shown);
            }
            out.push('\n');
        }
        let lines: Vec<&str> = c.text_diff.lines().take(MAX_DIFF_LINES).collect();
        let _ = writeln!(out, "```diff\n{}\n```\n</details>", lines.join("\n"));
    }
    for i in &report.incomplete {
        let _ = writeln!(
            out,
            "\n> **Warning:** source `{}` not fully compared: {} ({} objects left out)",
            i.source, i.reason, i.objects_not_compared
        );
    }
    for w in &report.warnings {
        let _ = writeln!(out, "\n> **Warning:** {w}");
    }
    out
}
