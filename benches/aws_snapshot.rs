//! AWS snapshot benchmark: one account's IAM state read through
//! `fetch_account` (GetAccountAuthorizationDetails) versus the per-entity
//! listing a user would otherwise script, side by side against one moto
//! server populated with many roles and customer managed policies; and
//! `cloudsplaining download` against the same server when it is installed.
//!
//! Run: `cargo bench --bench aws_snapshot`. Knobs (environment):
//! `BENCH_ROLES` (5000), `BENCH_POLICIES` (2000), `BENCH_ATTACH` (policies per
//! role, 3), `BENCH_CONCURRENCY` (in-flight requests for population and the
//! per-entity listing, 8), `BENCH_RUNS` (fetch_account repetitions, 3),
//! `CLOUDSPLAINING` (path to the `cloudsplaining` executable, else PATH).
//! A JSON summary goes to `.bench-out/aws_snapshot.json`.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use aws_sdk_iam::types::PolicyScopeType;
use permdrift::source::aws::fetch_account;
use permdrift_test_support::moto::{ACCOUNT_ID, Moto};
use serde_json::{Value, json};

fn knob(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn policy_doc(i: usize) -> String {
    json!({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow",
        "Action": [format!("s3:GetObject{i}"), "s3:ListBucket"],
        "Resource": format!("arn:aws:s3:::bench-bucket-{i}/*")
    }]})
    .to_string()
}

fn trust_doc(i: usize) -> String {
    let principal = match i % 3 {
        0 => json!({"Service": "lambda.amazonaws.com"}),
        1 => json!({"AWS": format!("arn:aws:iam::{ACCOUNT_ID}:root")}),
        _ => json!({"AWS": "arn:aws:iam::210987654321:root"}),
    };
    json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": principal, "Action": "sts:AssumeRole"}]})
        .to_string()
}

fn attached_policy(role: usize, k: usize, policies: usize) -> usize {
    (role * 7 + k * 613) % policies
}

/// Runs `job(0..n)` with `concurrency` jobs in flight.
async fn concurrently<F, Fut>(n: usize, concurrency: usize, job: F)
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let job = Arc::new(job);
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let (next, job) = (next.clone(), job.clone());
        workers.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                job(i).await;
            }
        });
    }
    while let Some(done) = workers.join_next().await {
        done.expect("bench worker");
    }
}

async fn populate(
    iam: &aws_sdk_iam::Client,
    roles: usize,
    policies: usize,
    attach: usize,
    concurrency: usize,
) {
    let c = iam.clone();
    concurrently(policies, concurrency, move |i| {
        let c = c.clone();
        async move {
            c.create_policy()
                .policy_name(format!("bench-policy-{i:05}"))
                .path("/bench/")
                .policy_document(policy_doc(i))
                .send()
                .await
                .expect("create policy");
        }
    })
    .await;
    let c = iam.clone();
    concurrently(roles, concurrency, move |i| {
        let c = c.clone();
        async move {
            let name = format!("bench-role-{i:05}");
            c.create_role()
                .role_name(&name)
                .assume_role_policy_document(trust_doc(i))
                .send()
                .await
                .expect("create role");
            for k in 0..attach {
                c.attach_role_policy()
                    .role_name(&name)
                    .policy_arn(format!(
                        "arn:aws:iam::{ACCOUNT_ID}:policy/bench/bench-policy-{:05}",
                        attached_policy(i, k, policies)
                    ))
                    .send()
                    .await
                    .expect("attach role policy");
            }
            c.put_role_policy()
                .role_name(&name)
                .policy_name("inline")
                .policy_document(policy_doc(100_000 + i))
                .send()
                .await
                .expect("put role policy");
        }
    })
    .await;
}

/// What the per-entity listing read, to check it saw what GAAD saw.
#[derive(Debug, Default)]
struct Listed {
    requests: AtomicU64,
    roles: AtomicU64,
    attachments: AtomicU64,
    inline_documents: AtomicU64,
    policy_documents: AtomicU64,
}

impl Listed {
    fn count(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }
}

/// The script a user would otherwise write: list every entity, then ask for
/// each one's attachments, inline policies and policy documents one by one.
/// ListRoles omits permissions boundaries and tags, hence GetRole per role.
async fn per_entity_listing(iam: &aws_sdk_iam::Client, concurrency: usize) -> Arc<Listed> {
    let listed = Arc::new(Listed::default());

    // Users and groups (none here, but a complete snapshot must ask).
    listed.count();
    iam.list_users()
        .max_items(1000)
        .send()
        .await
        .expect("list users");
    listed.count();
    iam.list_groups()
        .max_items(1000)
        .send()
        .await
        .expect("list groups");

    let mut role_names = Vec::new();
    let mut marker = None;
    loop {
        listed.count();
        let page = iam
            .list_roles()
            .max_items(1000)
            .set_marker(marker.take())
            .send()
            .await
            .expect("list roles");
        role_names.extend(page.roles().iter().map(|r| r.role_name().to_owned()));
        match page.marker().filter(|_| page.is_truncated()) {
            Some(m) => marker = Some(m.to_owned()),
            None => break,
        }
    }
    let role_names = Arc::new(role_names);
    let (c, l, names) = (iam.clone(), listed.clone(), role_names.clone());
    concurrently(role_names.len(), concurrency, move |i| {
        let (c, l, names) = (c.clone(), l.clone(), names.clone());
        async move {
            let name = &names[i];
            l.count();
            c.get_role().role_name(name).send().await.expect("get role");
            l.count();
            let attached = c
                .list_attached_role_policies()
                .role_name(name)
                .send()
                .await
                .expect("list attached role policies");
            l.attachments
                .fetch_add(attached.attached_policies().len() as u64, Ordering::Relaxed);
            l.count();
            let inline = c
                .list_role_policies()
                .role_name(name)
                .send()
                .await
                .expect("list role policies");
            for policy in inline.policy_names() {
                l.count();
                c.get_role_policy()
                    .role_name(name)
                    .policy_name(policy)
                    .send()
                    .await
                    .expect("get role policy");
                l.inline_documents.fetch_add(1, Ordering::Relaxed);
            }
            l.roles.fetch_add(1, Ordering::Relaxed);
        }
    })
    .await;

    let mut policies = Vec::new();
    let mut marker = None;
    loop {
        listed.count();
        let page = iam
            .list_policies()
            .scope(PolicyScopeType::Local)
            .max_items(1000)
            .set_marker(marker.take())
            .send()
            .await
            .expect("list policies");
        policies.extend(page.policies().iter().map(|p| {
            (
                p.arn().unwrap_or_default().to_owned(),
                p.default_version_id().unwrap_or("v1").to_owned(),
            )
        }));
        match page.marker().filter(|_| page.is_truncated()) {
            Some(m) => marker = Some(m.to_owned()),
            None => break,
        }
    }
    let policies = Arc::new(policies);
    let (c, l, ps) = (iam.clone(), listed.clone(), policies.clone());
    concurrently(policies.len(), concurrency, move |i| {
        let (c, l, ps) = (c.clone(), l.clone(), ps.clone());
        async move {
            let (arn, version) = &ps[i];
            l.count();
            c.get_policy_version()
                .policy_arn(arn)
                .version_id(version)
                .send()
                .await
                .expect("get policy version");
            l.policy_documents.fetch_add(1, Ordering::Relaxed);
        }
    })
    .await;
    listed
}

fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

fn cloudsplaining(moto: &Moto, roles: usize) -> Value {
    let exe = std::env::var("CLOUDSPLAINING").unwrap_or_else(|_| "cloudsplaining".into());
    let out = tempfile::tempdir().expect("temp dir");
    let before = moto.served_requests();
    let started = Instant::now();
    let run = std::process::Command::new(&exe)
        .args(["download", "--output"])
        .arg(out.path())
        .env("AWS_ENDPOINT_URL", moto.endpoint())
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .output();
    let elapsed = started.elapsed();
    let run = match run {
        Ok(run) => run,
        Err(e) => {
            let why =
                format!("not run: {exe}: {e} (pip install cloudsplaining, or set CLOUDSPLAINING)");
            println!("(c) cloudsplaining download: {why}");
            return json!({"skipped": why});
        }
    };
    if !run.status.success() {
        let why = format!(
            "failed ({}): {}",
            run.status,
            String::from_utf8_lossy(&run.stderr)
                .lines()
                .last()
                .unwrap_or("")
        );
        println!("(c) cloudsplaining download: {why}");
        return json!({"skipped": why});
    }
    let requests = moto.served_requests() - before;
    let file = out.path().join("default.json");
    let doc: Value = std::fs::read(&file)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null);
    let got_roles = doc["RoleDetailList"].as_array().map_or(0, Vec::len);
    assert_eq!(got_roles, roles, "cloudsplaining saw every role");
    println!(
        "(c) cloudsplaining download:     {:>8.3} s  {:>6} requests (moto log)  {} roles",
        secs(elapsed),
        requests,
        got_roles
    );
    json!({"seconds": secs(elapsed), "requests": requests, "roles": got_roles})
}

fn main() {
    let roles = knob("BENCH_ROLES", 5000);
    let policies = knob("BENCH_POLICIES", 2000).max(1);
    let attach = knob("BENCH_ATTACH", 3);
    let concurrency = knob("BENCH_CONCURRENCY", 8);
    let runs = knob("BENCH_RUNS", 3).max(1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");

    let moto = Moto::start(&[]);
    let iam = moto.iam();
    println!(
        "aws_snapshot: moto {} with {roles} roles ({attach} attached + 1 inline policy each), {policies} customer managed policies",
        moto.endpoint()
    );
    let started = Instant::now();
    rt.block_on(populate(&iam, roles, policies, attach, concurrency));
    let populated = moto.served_requests();
    println!(
        "populated with {populated} requests in {:.1} s (not timed below)",
        started.elapsed().as_secs_f64()
    );

    // (a) fetch_account, repeated; the median is reported.
    let opts = moto.source_options();
    let mut times = Vec::new();
    let mut fetched = None;
    for _ in 0..runs {
        let before = moto.served_requests();
        let started = Instant::now();
        let f = rt
            .block_on(fetch_account(&opts, &|_| {}))
            .expect("fetch_account against moto");
        times.push(started.elapsed());
        assert_eq!(
            moto.served_requests() - before,
            f.requests as usize,
            "request counts agree"
        );
        fetched = Some(f);
    }
    let fetched = fetched.expect("at least one run");
    times.sort();
    let a_time = times[times.len() / 2];
    let doc = &fetched.document;
    let a_roles = doc["RoleDetailList"].as_array().map_or(0, Vec::len);
    let a_attachments: usize = doc["RoleDetailList"].as_array().map_or(0, |rs| {
        rs.iter()
            .map(|r| r["AttachedManagedPolicies"].as_array().map_or(0, Vec::len))
            .sum()
    });
    let a_policies = doc["Policies"].as_array().map_or(0, Vec::len);
    let bytes = serde_json::to_vec(doc).map_or(0, |b| b.len());
    assert_eq!(a_roles, roles);
    assert_eq!(a_policies, policies);
    println!(
        "(a) fetch_account (GAAD):       {:>8.3} s  {:>6} requests  {} pages  {a_roles} roles  {a_policies} policies  {:.1} MiB JSON  (median of {runs}: {:?})",
        secs(a_time),
        fetched.requests,
        fetched.pages,
        bytes as f64 / 1048576.0,
        times.iter().map(|t| secs(*t)).collect::<Vec<_>>()
    );

    // (b) per-entity listing.
    let before = moto.served_requests();
    let started = Instant::now();
    let listed = rt.block_on(per_entity_listing(&iam, concurrency));
    let b_time = started.elapsed();
    let b_requests = listed.requests.load(Ordering::Relaxed);
    assert_eq!(
        moto.served_requests() - before,
        b_requests as usize,
        "request counts agree"
    );
    assert_eq!(listed.roles.load(Ordering::Relaxed) as usize, a_roles);
    assert_eq!(
        listed.attachments.load(Ordering::Relaxed) as usize,
        a_attachments
    );
    assert_eq!(
        listed.policy_documents.load(Ordering::Relaxed) as usize,
        a_policies
    );
    println!(
        "(b) per-entity listing:         {:>8.3} s  {:>6} requests  ({concurrency} in flight; same roles, attachments, {} inline + {} policy documents)",
        secs(b_time),
        b_requests,
        listed.inline_documents.load(Ordering::Relaxed),
        listed.policy_documents.load(Ordering::Relaxed),
    );
    let time_ratio = b_time.as_secs_f64() / a_time.as_secs_f64();
    let request_ratio = b_requests as f64 / f64::from(fetched.requests);
    println!("ratio (b)/(a): {time_ratio:.1}x time, {request_ratio:.0}x requests");

    let c = cloudsplaining(&moto, roles);

    let summary = json!({
        "bench": "aws_snapshot",
        "roles": roles, "policies": policies, "attached_per_role": attach, "concurrency": concurrency,
        "populate_requests": populated,
        "fetch_account": {"seconds_median": secs(a_time), "runs": times.iter().map(|t| secs(*t)).collect::<Vec<_>>(),
                          "requests": fetched.requests, "pages": fetched.pages, "json_bytes": bytes},
        "per_entity": {"seconds": secs(b_time), "requests": b_requests},
        "ratio": {"time": (time_ratio * 10.0).round() / 10.0, "requests": request_ratio.round()},
        "cloudsplaining_download": c,
    });
    let _ = std::fs::create_dir_all(".bench-out");
    let _ = std::fs::write(
        ".bench-out/aws_snapshot.json",
        serde_json::to_string_pretty(&summary).unwrap_or_default(),
    );
}
