//! Glob containment on IAM-sized ARN patterns: `glob::covers` (a bit-parallel
//! automaton) side by side with the table it replaced (kept here as the
//! baseline), on pairs that stay alive to the end, the worst case for both.
//!
//! Run: `cargo bench --bench glob` (knobs: BENCH_RUNS, default 200).
//! Results go to stdout as a markdown table.

use permdrift::grants::glob;
use std::hint::black_box;
use std::time::Instant;

/// The containment table `glob::covers` used before: one cell per pair of
/// positions, so 6 KB patterns fill 36 M cells.
fn covers_table(outer: &str, inner: &str) -> bool {
    let o = outer.as_bytes();
    let i = inner.as_bytes();
    let width = i.len() + 1;
    let mut memo = vec![false; (o.len() + 1) * width];
    memo[o.len() * width + i.len()] = true;
    for oi in (0..o.len()).rev() {
        for ii in (0..=i.len()).rev() {
            let value = if o[oi] == b'*' {
                memo[(oi + 1) * width + ii] || (ii < i.len() && memo[oi * width + ii + 1])
            } else if ii == i.len() || i[ii] == b'*' {
                false
            } else if i[ii] == b'?' {
                o[oi] == b'?' && memo[(oi + 1) * width + ii + 1]
            } else {
                (o[oi] == b'?' || o[oi] == i[ii]) && memo[(oi + 1) * width + ii + 1]
            };
            memo[oi * width + ii] = value;
        }
    }
    memo[0]
}

/// Median seconds per call over `runs` calls.
fn time(runs: usize, f: impl Fn() -> bool) -> f64 {
    let mut samples: Vec<f64> = (0..runs)
        .map(|_| {
            let started = Instant::now();
            black_box(f());
            started.elapsed().as_secs_f64()
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

fn main() {
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let arn = |body: String| format!("arn:aws:s3:::bucket/{body}");
    let cases = [
        (
            "6 KB vs 6 KB, covered",
            arn("x*y".repeat(2_000)),
            arn("x?y".repeat(2_000)),
        ),
        (
            "6 KB vs 6 KB, stars everywhere",
            arn("*a".repeat(3_000)),
            arn("*a".repeat(3_000) + "*"),
        ),
        (
            // No `*` to narrow the window: every word of the state, every byte.
            "6 KB vs 6 KB, no star (worst case)",
            "?".repeat(6_000),
            "a".repeat(6_000),
        ),
        (
            "10 KB vs 10 KB (the cap), covered",
            arn("x*y".repeat(3_407)),
            arn("x?y".repeat(3_407)),
        ),
        (
            "typical ARNs",
            "arn:aws:s3:::data-*/reports/*".to_owned(),
            "arn:aws:s3:::data-eu/reports/2026/*".to_owned(),
        ),
    ];
    println!("| case | bytes | covers | old table | ratio |");
    println!("|---|---|---|---|---|");
    for (name, outer, inner) in &cases {
        let new = glob::covers(outer, inner);
        assert_eq!(new, covers_table(outer, inner), "{name}: answers differ");
        let table_runs = if outer.len() > 1000 {
            runs.min(5)
        } else {
            runs
        };
        let fast = time(runs, || glob::covers(outer, inner));
        let slow = time(table_runs, || covers_table(outer, inner));
        println!(
            "| {name} | {} / {} | {:.1} µs | {:.1} µs | {:.0}x |",
            outer.len(),
            inner.len(),
            fast * 1e6,
            slow * 1e6,
            slow / fast
        );
    }
}
