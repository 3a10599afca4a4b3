//! permdrift where CI already runs it: the GitHub Action (action.yml) and
//! the pre-commit hook (.pre-commit-hooks.yaml) are run as written, their
//! scripts parsed out of the YAML so the tests and the files cannot drift,
//! against a real git repository whose base and head differ; and the shell
//! completions and man page generated from the clap definitions.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use serde_yaml::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// PATH with the built `permdrift` first.
fn path_with_permdrift() -> String {
    let bin = Path::new(env!("CARGO_BIN_EXE_permdrift")).parent().unwrap();
    format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "ci")
        .env("GIT_AUTHOR_EMAIL", "ci@example.com")
        .env("GIT_COMMITTER_NAME", "ci")
        .env("GIT_COMMITTER_EMAIL", "ci@example.com")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A repository whose base commit has the incident's "before" state under
/// `state/` and whose head has `after` (or `before` again when `widen` is false).
fn repository(widen: bool) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path();
    git(repo, &["init", "--quiet", "-b", "main"]);
    let copy = |side: &str| {
        let state = repo.join("state");
        let _ = std::fs::remove_dir_all(&state);
        std::fs::create_dir_all(&state).unwrap();
        for f in ["aws.json", "cluster.yaml"] {
            std::fs::copy(
                root().join("examples/incident").join(side).join(f),
                state.join(f),
            )
            .unwrap();
        }
    };
    copy("before");
    git(repo, &["add", "."]);
    git(repo, &["commit", "--quiet", "-m", "base"]);
    let base = git(repo, &["rev-parse", "HEAD"]);
    copy(if widen { "after" } else { "before" });
    std::fs::write(repo.join("README"), "head\n").unwrap();
    git(repo, &["add", "."]);
    git(repo, &["commit", "--quiet", "-m", "head"]);
    (dir, base)
}

fn yaml(file: &str) -> Value {
    serde_yaml::from_str(&std::fs::read_to_string(root().join(file)).unwrap()).unwrap()
}

/// The steps of the action, by id.
fn action_steps() -> BTreeMap<String, Value> {
    let action = yaml("action.yml");
    assert_eq!(action["runs"]["using"], "composite");
    action["runs"]["steps"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|s| (s["id"].as_str().unwrap().to_owned(), s.clone()))
        .collect()
}

/// Runs one step of the action as the runner would (`bash -eo pipefail`),
/// with its `env` resolved from `inputs`; every expression it uses must be
/// one the test knows.
fn run_step(
    step: &Value,
    repo: &Path,
    runner_temp: &Path,
    inputs: &BTreeMap<&str, String>,
) -> Output {
    assert_eq!(step["shell"], "bash");
    let script = step["run"].as_str().unwrap();
    assert!(
        !script.contains("${{"),
        "expressions belong in env, not in run: {script}"
    );
    let mut command = Command::new("bash");
    command
        .args(["--noprofile", "--norc", "-eo", "pipefail", "-c", script])
        .current_dir(repo)
        .env("PATH", path_with_permdrift())
        .env("NO_COLOR", "1")
        .env("RUNNER_TEMP", runner_temp)
        .env("GITHUB_OUTPUT", runner_temp.join("output"))
        .env("GITHUB_STEP_SUMMARY", runner_temp.join("summary"));
    if let Some(env) = step["env"].as_mapping() {
        for (name, expression) in env {
            let expression = expression.as_str().unwrap();
            let value = inputs
                .get(expression)
                .unwrap_or_else(|| panic!("the test does not know {expression}"));
            command.env(name.as_str().unwrap(), value);
        }
    }
    command.output().unwrap()
}

fn github_action(widen: bool) -> (String, String, String) {
    let (repo, base) = repository(widen);
    let runner_temp = tempfile::tempdir().unwrap();
    let sarif = runner_temp.path().join("permdrift.sarif");
    let inputs = BTreeMap::from([
        ("${{ inputs.base }}", base),
        ("${{ inputs.path }}", "state".to_owned()),
        ("${{ inputs.fail-on }}", "widening".to_owned()),
        ("${{ inputs.sarif }}", sarif.display().to_string()),
    ]);
    let steps = action_steps();
    for id in ["base", "diff"] {
        let out = run_step(&steps[id], repo.path(), runner_temp.path(), &inputs);
        assert!(
            out.status.success(),
            "step {id}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let read =
        |name: &str| std::fs::read_to_string(runner_temp.path().join(name)).unwrap_or_default();
    (
        read("output"),
        read("summary"),
        std::fs::read_to_string(&sarif).unwrap(),
    )
}

#[test]
fn the_github_action_reports_a_widening_pull_request() {
    let (output, summary, sarif) = github_action(true);
    assert!(output.contains("exit-code=1\n"), "{output}");
    // The markdown report, as posted in the comment and the job summary.
    assert!(summary.contains("customer-data-analytics"), "{summary}");
    assert!(summary.contains("trust-public"), "{summary}");
    let sarif: serde_json::Value = serde_json::from_str(&sarif).unwrap();
    assert_eq!(sarif["version"], "2.1.0");
    assert!(!sarif["runs"][0]["results"].as_array().unwrap().is_empty());
}

#[test]
fn the_github_action_passes_a_pull_request_that_changes_no_access() {
    let (output, summary, _) = github_action(false);
    assert!(output.contains("exit-code=0\n"), "{output}");
    assert!(summary.contains("no changes"), "{summary}");
}

#[test]
fn the_action_ends_with_the_diff_exit_code() {
    let steps = action_steps();
    let result = &steps["result"];
    assert_eq!(result["env"]["CODE"], "${{ steps.diff.outputs.exit-code }}");
    let runner_temp = tempfile::tempdir().unwrap();
    for code in ["0", "1", "2"] {
        let out = Command::new("bash")
            .args(["--noprofile", "--norc", "-eo", "pipefail", "-c"])
            .arg(result["run"].as_str().unwrap())
            .env("RUNNER_TEMP", runner_temp.path())
            .env("CODE", code)
            .current_dir(runner_temp.path())
            .output()
            .unwrap();
        assert_eq!(out.status.code().unwrap().to_string(), code);
    }
}

fn pre_commit(widen: bool) -> Output {
    let hooks = yaml(".pre-commit-hooks.yaml");
    let hook = &hooks[0];
    assert_eq!(hook["id"], "permdrift-diff");
    assert_eq!(hook["pass_filenames"], false);
    let words = shell_words::split(hook["entry"].as_str().unwrap()).unwrap();
    let (repo, base) = repository(widen);
    Command::new(&words[0])
        .args(&words[1..])
        .current_dir(repo.path())
        .env("PATH", path_with_permdrift())
        .env("NO_COLOR", "1")
        .env("PERMDRIFT_BASE", base)
        .env("PERMDRIFT_PATH", "state")
        .env_remove("PRE_COMMIT_FROM_REF")
        .output()
        .unwrap()
}

#[test]
fn the_pre_commit_hook_fails_on_widening_and_prints_the_report() {
    let out = pre_commit(true);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        report.contains("customer-data-analytics") && report.contains("trust-public"),
        "{report}"
    );
    let out = pre_commit(false);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn permdrift(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_permdrift"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

const SUBCOMMANDS: [&str; 9] = [
    "snapshot",
    "diff",
    "who-can",
    "history",
    "run",
    "baseline",
    "keygen",
    "completions",
    "man",
];

#[test]
fn completions_for_bash_zsh_and_fish_know_every_subcommand() {
    for shell in ["bash", "zsh", "fish"] {
        let script = permdrift(&["completions", shell]);
        for sub in SUBCOMMANDS {
            assert!(script.contains(sub), "{shell} completions lack {sub}");
        }
        assert!(
            script.contains("--fail-on") || script.contains("fail-on"),
            "{shell}"
        );
    }
    // The bash script parses.
    let bash = permdrift(&["completions", "bash"]);
    let out = Command::new("bash")
        .args(["-n", "-c", &bash])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_man_page_lists_the_subcommands() {
    let page = permdrift(&["man"]);
    assert!(page.contains(".TH permdrift 1"));
    for sub in SUBCOMMANDS {
        assert!(
            page.contains(&format!("permdrift\\-{}", sub.replace('-', "\\-"))),
            "man lacks {sub}"
        );
    }
}

#[test]
fn an_unknown_shell_is_refused() {
    let out = Command::new(env!("CARGO_BIN_EXE_permdrift"))
        .args(["completions", "tcsh"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("tcsh"));
}

/// `permdrift_` metric names in `text` (histogram series by their metric).
fn metric_names(text: &str) -> std::collections::BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("permdrift_"))
        .map(|w| {
            ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| w.strip_suffix(s))
                .unwrap_or(w)
                .to_owned()
        })
        .collect()
}

#[test]
fn every_dashboard_query_uses_documented_metrics() {
    let doc = std::fs::read_to_string(root().join("docs/operator.md")).unwrap();
    let documented: std::collections::BTreeSet<String> = doc
        .lines()
        .filter_map(|l| l.strip_prefix("| `permdrift_"))
        .filter_map(|l| l.split('`').next())
        .map(|n| format!("permdrift_{n}"))
        .collect();
    assert!(documented.contains("permdrift_open_widening"));
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("charts/permdrift/dashboards/permdrift.json"))
            .unwrap(),
    )
    .unwrap();
    let mut titles = Vec::new();
    let mut used = std::collections::BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        titles.push(panel["title"].as_str().unwrap().to_owned());
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap();
            let names = metric_names(expr);
            assert!(!names.is_empty(), "{expr}");
            used.extend(names);
        }
    }
    let undocumented: Vec<_> = used.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "not in docs/operator.md: {undocumented:?}"
    );
    for wanted in [
        "Open unapproved widenings by source and severity",
        "Exposure time of open widenings",
        "Attributed changes by attribution and agent",
        "Reverts by outcome",
        "Detection latency",
        "Detection and exposure latency quantiles",
        "Sources up and recording",
    ] {
        assert!(
            titles.iter().any(|t| t == wanted),
            "no panel {wanted:?}: {titles:?}"
        );
    }
}
