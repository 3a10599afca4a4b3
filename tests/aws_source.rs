//! End-to-end tests of the live AWS IAM source through the real `aws-sdk-iam`
//! client: against a real moto server for what moto emulates, and against an
//! in-test replay server (serving IAM's real XML response shape, cut from a
//! captured moto response) for paging, throttling and errors moto cannot
//! produce.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Form, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use permdrift::source::aws::{
    AwsFetch, AwsProgress, AwsSourceError, AwsSourceOptions, fetch_account,
};
use serde_json::{Value, json};
use support::moto::{self, ACCOUNT_ID, Moto};

// ---------------------------------------------------------------------------
// helpers

async fn fetch(opts: &AwsSourceOptions) -> (Result<AwsFetch, AwsSourceError>, Vec<AwsProgress>) {
    let seen = Mutex::new(Vec::new());
    let result = fetch_account(opts, &|p| seen.lock().unwrap().push(p)).await;
    (result, seen.into_inner().unwrap())
}

/// Policy documents as the API returned them: URL-encoded (IAM, and moto for
/// most documents) or plain JSON (moto's trust policies).
fn decode_policy(raw: &Value) -> Value {
    let raw = raw.as_str().expect("policy document is a string");
    let text = if raw.trim_start().starts_with('{') {
        raw.to_owned()
    } else {
        percent_encoding::percent_decode_str(raw)
            .decode_utf8()
            .expect("utf-8 policy")
            .into_owned()
    };
    serde_json::from_str(&text).expect("policy document is JSON")
}

fn allow(action: &str) -> Value {
    json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": action, "Resource": "*"}]})
}

fn trust(principal: Value) -> Value {
    json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": principal, "Action": "sts:AssumeRole"}]})
}

/// The entities of `list` whose `key` starts with `prefix` (the moto server is
/// shared, so each test only looks at its own names).
fn named<'a>(doc: &'a Value, list: &str, key: &str, prefix: &str) -> HashMap<String, &'a Value> {
    let mut out = HashMap::new();
    for entity in doc[list].as_array().expect("list") {
        let name = entity[key].as_str().expect("name").to_owned();
        if name.starts_with(prefix) {
            assert!(
                out.insert(name.clone(), entity).is_none(),
                "{name} appears twice in {list}"
            );
        }
    }
    out
}

fn names(list: &Value, key: &str) -> Vec<String> {
    let mut v: Vec<String> = list
        .as_array()
        .expect("list")
        .iter()
        .map(|e| e[key].as_str().expect("name").to_owned())
        .collect();
    v.sort();
    v
}

fn is_rfc3339(v: &Value) -> bool {
    v.as_str()
        .is_some_and(|s| s.parse::<jiff::Timestamp>().is_ok())
}

// ---------------------------------------------------------------------------
// against moto

#[tokio::test]
async fn snapshot_describes_exactly_what_was_created_in_moto() {
    let moto = Moto::shared();
    let iam = moto.iam();
    let p = |name: &str| format!("arn:aws:iam::{ACCOUNT_ID}:policy/{name}");

    // Managed policies: one with a second version set as default.
    let read_v1 = allow("s3:GetObject");
    let read_v2 = allow("s3:*");
    let read = iam
        .create_policy()
        .policy_name("e2e-read")
        .path("/custom/")
        .policy_document(read_v1.to_string())
        .send()
        .await
        .unwrap();
    let read_arn = read.policy().unwrap().arn().unwrap().to_owned();
    assert_eq!(read_arn, p("custom/e2e-read"));
    iam.create_policy_version()
        .policy_arn(&read_arn)
        .policy_document(read_v2.to_string())
        .set_as_default(true)
        .send()
        .await
        .unwrap();
    for (name, doc) in [
        ("e2e-write", allow("dynamodb:PutItem")),
        ("e2e-boundary", allow("s3:*")),
    ] {
        iam.create_policy()
            .policy_name(name)
            .policy_document(doc.to_string())
            .send()
            .await
            .unwrap();
    }

    // Users, groups, membership, attachments, inline policies.
    iam.create_user()
        .user_name("e2e-alice")
        .path("/eng/")
        .tags(
            aws_sdk_iam::types::Tag::builder()
                .key("team")
                .value("payments")
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    iam.create_user().user_name("e2e-bob").send().await.unwrap();
    for group in ["e2e-devs", "e2e-ops"] {
        iam.create_group().group_name(group).send().await.unwrap();
    }
    for (group, user) in [
        ("e2e-devs", "e2e-alice"),
        ("e2e-devs", "e2e-bob"),
        ("e2e-ops", "e2e-alice"),
    ] {
        iam.add_user_to_group()
            .group_name(group)
            .user_name(user)
            .send()
            .await
            .unwrap();
    }
    iam.attach_user_policy()
        .user_name("e2e-alice")
        .policy_arn(&read_arn)
        .send()
        .await
        .unwrap();
    iam.attach_group_policy()
        .group_name("e2e-devs")
        .policy_arn(p("e2e-write"))
        .send()
        .await
        .unwrap();
    iam.put_user_policy()
        .user_name("e2e-alice")
        .policy_name("e2e-alice-inline")
        .policy_document(allow("sqs:SendMessage").to_string())
        .send()
        .await
        .unwrap();
    iam.put_group_policy()
        .group_name("e2e-devs")
        .policy_name("e2e-devs-inline")
        .policy_document(allow("logs:GetLogEvents").to_string())
        .send()
        .await
        .unwrap();

    // Roles: service principal (with boundary), same-account root, cross-account.
    let trust_service = trust(json!({"Service": "ec2.amazonaws.com"}));
    let trust_root = trust(json!({"AWS": format!("arn:aws:iam::{ACCOUNT_ID}:root")}));
    let trust_cross = json!({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow",
        "Principal": {"AWS": "arn:aws:iam::210987654321:root"},
        "Action": "sts:AssumeRole",
        "Condition": {"StringEquals": {"sts:ExternalId": "e2e-external"}}
    }]});
    iam.create_role()
        .role_name("e2e-ec2")
        .assume_role_policy_document(trust_service.to_string())
        .permissions_boundary(p("e2e-boundary"))
        .send()
        .await
        .unwrap();
    iam.create_role()
        .role_name("e2e-admin")
        .path("/ops/")
        .assume_role_policy_document(trust_root.to_string())
        .send()
        .await
        .unwrap();
    iam.create_role()
        .role_name("e2e-partner")
        .assume_role_policy_document(trust_cross.to_string())
        .send()
        .await
        .unwrap();
    iam.attach_role_policy()
        .role_name("e2e-ec2")
        .policy_arn(&read_arn)
        .send()
        .await
        .unwrap();
    iam.attach_role_policy()
        .role_name("e2e-admin")
        .policy_arn(p("e2e-write"))
        .send()
        .await
        .unwrap();
    iam.put_role_policy()
        .role_name("e2e-ec2")
        .policy_name("e2e-ec2-inline")
        .policy_document(allow("ec2:DescribeInstances").to_string())
        .send()
        .await
        .unwrap();
    iam.create_instance_profile()
        .instance_profile_name("e2e-ec2-profile")
        .send()
        .await
        .unwrap();
    iam.add_role_to_instance_profile()
        .instance_profile_name("e2e-ec2-profile")
        .role_name("e2e-ec2")
        .send()
        .await
        .unwrap();

    let (result, progress) = fetch(&moto.source_options()).await;
    let fetched = result.expect("fetch from moto");
    assert_eq!(fetched.account_id, ACCOUNT_ID, "from sts:GetCallerIdentity");
    assert_eq!(fetched.pages, 1, "moto never pages");
    assert_eq!(
        fetched.requests, 2,
        "one GetAccountAuthorizationDetails, one GetCallerIdentity"
    );
    assert_eq!(progress.len(), 1);
    assert_eq!(progress[0].page, 1);
    assert!(!progress[0].more);
    let doc = &fetched.document;
    let keys: Vec<&String> = doc.as_object().unwrap().keys().collect();
    assert_eq!(keys.len(), 4, "exactly the four GAAD lists: {keys:?}");

    // Users.
    let users = named(doc, "UserDetailList", "UserName", "e2e-");
    assert_eq!(users.len(), 2);
    let alice = users["e2e-alice"];
    assert_eq!(alice["Path"], "/eng/");
    assert_eq!(
        alice["Arn"],
        format!("arn:aws:iam::{ACCOUNT_ID}:user/eng/e2e-alice")
    );
    assert!(alice["UserId"].as_str().is_some_and(|id| !id.is_empty()));
    assert!(is_rfc3339(&alice["CreateDate"]), "{}", alice["CreateDate"]);
    let mut groups: Vec<&str> = alice["GroupList"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g.as_str().unwrap())
        .collect();
    groups.sort();
    assert_eq!(groups, ["e2e-devs", "e2e-ops"]);
    assert_eq!(
        alice["AttachedManagedPolicies"],
        json!([{"PolicyName": "e2e-read", "PolicyArn": read_arn}])
    );
    assert_eq!(alice["UserPolicyList"].as_array().unwrap().len(), 1);
    assert_eq!(alice["UserPolicyList"][0]["PolicyName"], "e2e-alice-inline");
    assert_eq!(
        decode_policy(&alice["UserPolicyList"][0]["PolicyDocument"]),
        allow("sqs:SendMessage")
    );
    assert_eq!(alice["Tags"], json!([{"Key": "team", "Value": "payments"}]));
    assert_eq!(users["e2e-bob"]["GroupList"], json!(["e2e-devs"]));
    assert_eq!(users["e2e-bob"]["AttachedManagedPolicies"], json!([]));

    // Groups.
    let groups = named(doc, "GroupDetailList", "GroupName", "e2e-");
    assert_eq!(groups.len(), 2);
    let devs = groups["e2e-devs"];
    assert_eq!(
        devs["AttachedManagedPolicies"],
        json!([{"PolicyName": "e2e-write", "PolicyArn": p("e2e-write")}])
    );
    assert_eq!(devs["GroupPolicyList"][0]["PolicyName"], "e2e-devs-inline");
    assert_eq!(
        decode_policy(&devs["GroupPolicyList"][0]["PolicyDocument"]),
        allow("logs:GetLogEvents")
    );
    assert_eq!(groups["e2e-ops"]["GroupPolicyList"], json!([]));

    // Roles: trust, boundary, attachments, inline, instance profile.
    let roles = named(doc, "RoleDetailList", "RoleName", "e2e-");
    assert_eq!(roles.len(), 3);
    let ec2 = roles["e2e-ec2"];
    assert_eq!(
        decode_policy(&ec2["AssumeRolePolicyDocument"]),
        trust_service
    );
    assert_eq!(
        ec2["PermissionsBoundary"],
        json!({"PermissionsBoundaryType": "PermissionsBoundaryPolicy", "PermissionsBoundaryArn": p("e2e-boundary")})
    );
    assert_eq!(
        ec2["AttachedManagedPolicies"],
        json!([{"PolicyName": "e2e-read", "PolicyArn": read_arn}])
    );
    assert_eq!(ec2["RolePolicyList"][0]["PolicyName"], "e2e-ec2-inline");
    assert_eq!(
        decode_policy(&ec2["RolePolicyList"][0]["PolicyDocument"]),
        allow("ec2:DescribeInstances")
    );
    assert_eq!(
        ec2["InstanceProfileList"][0]["InstanceProfileName"],
        "e2e-ec2-profile"
    );
    assert_eq!(
        ec2["InstanceProfileList"][0]["Roles"][0]["RoleName"],
        "e2e-ec2"
    );
    assert!(
        ec2.get("RoleLastUsed").is_none(),
        "volatile RoleLastUsed must be dropped"
    );
    assert!(
        ec2["InstanceProfileList"][0]["Roles"][0]
            .get("RoleLastUsed")
            .is_none()
    );
    let admin = roles["e2e-admin"];
    assert_eq!(admin["Path"], "/ops/");
    assert_eq!(
        decode_policy(&admin["AssumeRolePolicyDocument"]),
        trust_root
    );
    assert!(admin.get("PermissionsBoundary").is_none());
    assert_eq!(
        decode_policy(&roles["e2e-partner"]["AssumeRolePolicyDocument"]),
        trust_cross
    );
    assert_eq!(roles["e2e-partner"]["RolePolicyList"], json!([]));

    // Customer managed policies: default version, version list, counts.
    let policies = named(doc, "Policies", "PolicyName", "e2e-");
    assert_eq!(
        policies.len(),
        3,
        "PolicyName filled from the ARN where moto omits it"
    );
    let read = policies["e2e-read"];
    assert_eq!(read["Arn"], read_arn);
    assert_eq!(read["Path"], "/custom/");
    assert_eq!(read["DefaultVersionId"], "v2");
    assert_eq!(read["AttachmentCount"], 2);
    assert_eq!(read["IsAttachable"], true);
    let versions = read["PolicyVersionList"].as_array().unwrap();
    assert_eq!(versions.len(), 2);
    let default: Vec<&Value> = versions
        .iter()
        .filter(|v| v["IsDefaultVersion"] == true)
        .collect();
    assert_eq!(default.len(), 1, "exactly one default version");
    assert_eq!(default[0]["VersionId"], "v2");
    assert_eq!(
        decode_policy(&default[0]["Document"]),
        read_v2,
        "the default version's document"
    );
    let v1 = versions.iter().find(|v| v["VersionId"] == "v1").unwrap();
    assert_eq!(v1["IsDefaultVersion"], false);
    assert_eq!(decode_policy(&v1["Document"]), read_v1);
    assert!(versions.iter().all(|v| is_rfc3339(&v["CreateDate"])));
    assert_eq!(policies["e2e-boundary"]["AttachmentCount"], 0);
}

#[tokio::test]
async fn assume_role_goes_through_sts_and_reads_as_the_assumed_identity() {
    let moto = Moto::shared();
    // moto scopes assumed-role credentials to the role's account, so an empty
    // account 111111111111 proves both calls used the assumed session.
    let opts = AwsSourceOptions {
        assume_role: Some("arn:aws:iam::111111111111:role/permdrift-auditor".into()),
        ..moto.source_options()
    };
    let (result, _) = fetch(&opts).await;
    let fetched = result.expect("fetch through an assumed role");
    assert_eq!(fetched.account_id, "111111111111");
    assert_eq!(
        fetched.document,
        json!({"UserDetailList": [], "GroupDetailList": [], "RoleDetailList": [], "Policies": []})
    );
}

#[tokio::test]
async fn missing_credentials_say_how_to_log_in() {
    let moto = Moto::shared();
    // The isolated config has no default profile and no key variables.
    let opts = AwsSourceOptions {
        profile: None,
        ..moto.source_options()
    };
    let err = fetch(&opts).await.0.expect_err("no credentials anywhere");
    assert!(
        matches!(err, AwsSourceError::NoCredentials { profile: None, .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.starts_with("aws source: no usable aws credentials"),
        "{msg}"
    );
    assert!(
        msg.contains("aws sso login") && msg.contains("--profile"),
        "{msg}"
    );

    let opts = AwsSourceOptions {
        profile: Some("no-such-profile".into()),
        ..moto.source_options()
    };
    let err = fetch(&opts).await.0.expect_err("unknown profile");
    assert!(
        matches!(
            err,
            AwsSourceError::NoCredentials {
                profile: Some(_),
                ..
            }
        ),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("for profile no-such-profile")
            && msg.contains("aws sso login --profile no-such-profile"),
        "{msg}"
    );

    // With --assume-role, failing base credentials are reported against the role.
    let opts = AwsSourceOptions {
        profile: Some("no-such-profile".into()),
        assume_role: Some("arn:aws:iam::111111111111:role/auditor".into()),
        ..moto.source_options()
    };
    let err = fetch(&opts).await.0.expect_err("no base credentials");
    assert!(
        matches!(&err, AwsSourceError::AssumeRole { role_arn, .. } if role_arn.ends_with("role/auditor")),
        "{err:?}"
    );
    assert!(err.to_string().contains("sts:AssumeRole"), "{err}");
}

#[tokio::test]
async fn unreachable_endpoint_is_named_and_fails_fast() {
    moto::aws_env();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}");
    let opts = AwsSourceOptions {
        profile: Some(moto::PROFILE.into()),
        endpoint_url: Some(url.clone()),
        ..AwsSourceOptions::default()
    };
    let started = Instant::now();
    let err = fetch(&opts).await.0.expect_err("nothing listens there");
    assert!(matches!(err, AwsSourceError::Unreachable { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains(&url) && msg.contains("iam:GetAccountAuthorizationDetails"),
        "{msg}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "refused connections are not retried for long"
    );
}

#[tokio::test]
async fn moto_with_iam_auth_denies_and_rejects_like_aws() {
    // A private moto that enforces IAM auth after the first three calls.
    let moto = Moto::start(&[("INITIAL_NO_AUTH_ACTION_COUNT", "3")]);
    let iam = moto.iam();
    iam.create_user().user_name("reader").send().await.unwrap();
    iam.put_user_policy()
        .user_name("reader")
        .policy_name("list-only")
        .policy_document(allow("iam:ListUsers").to_string())
        .send()
        .await
        .unwrap();
    let key = iam
        .create_access_key()
        .user_name("reader")
        .send()
        .await
        .unwrap();
    let key = key.access_key().unwrap();
    moto::set_process_credentials(&key.access_key_id, &key.secret_access_key);

    // moto words this error as <ErrorResponse><Errors><Error>, unlike IAM.
    let opts = AwsSourceOptions {
        profile: Some(moto::PROCESS_PROFILE.into()),
        ..moto.source_options()
    };
    let err = fetch(&opts)
        .await
        .0
        .expect_err("reader may not read everything");
    match &err {
        AwsSourceError::AccessDenied {
            operation, action, ..
        } => {
            assert_eq!(*operation, "iam:GetAccountAuthorizationDetails");
            assert_eq!(*action, "iam:GetAccountAuthorizationDetails");
        }
        other => panic!("expected AccessDenied, got {other:?}"),
    }
    assert!(
        err.to_string()
            .contains("needs the IAM permission `iam:GetAccountAuthorizationDetails`"),
        "{err}"
    );

    // The shared profile's keys are unknown to an auth-enforcing moto.
    let err = fetch(&moto.source_options())
        .await
        .0
        .expect_err("unknown key");
    assert!(
        matches!(&err, AwsSourceError::InvalidCredentials { code, .. } if code == "InvalidClientTokenId"),
        "{err:?}"
    );
    assert!(err.to_string().contains("--profile"), "{err}");
}

#[tokio::test]
async fn zero_max_attempts_is_rejected() {
    moto::aws_env();
    let opts = AwsSourceOptions {
        max_attempts: 0,
        ..AwsSourceOptions::default()
    };
    let err = fetch(&opts).await.0.expect_err("0 attempts");
    assert!(
        matches!(
            err,
            AwsSourceError::InvalidOption {
                option: "max_attempts",
                ..
            }
        ),
        "{err:?}"
    );
}

// ---------------------------------------------------------------------------
// replay server: IAM's XML, cut into pages

/// One scripted answer the replay server gives before serving pages.
#[derive(Clone, Copy, Debug)]
enum Hiccup {
    /// 400 with IAM's `Throttling` error code.
    Throttling,
    /// A bare 429 with no AWS error body, as a gateway might send.
    TooManyRequests,
    /// 503 `ServiceUnavailable`.
    Unavailable,
    /// 403 `ExpiredToken`.
    ExpiredToken,
    /// 403 `AccessDenied`, in IAM's own error shape.
    AccessDenied,
}

#[derive(Default)]
struct ReplayState {
    pages: Vec<String>,
    hiccups: Vec<Hiccup>,
    /// Answer every GAAD request with this, forever.
    always: Option<Hiccup>,
    deny_caller_identity: bool,
    /// (Action, Marker) of every request, in order.
    seen: Vec<(String, Option<String>)>,
}

type Replay = Arc<Mutex<ReplayState>>;

fn marker_for(page: usize) -> String {
    // Opaque, with characters that need form encoding, like IAM's.
    format!("page/{page}+of=replay")
}

fn error_xml(code: &str, message: &str) -> String {
    format!(
        "<ErrorResponse xmlns=\"https://iam.amazonaws.com/doc/2010-05-08/\"><Error><Type>Sender</Type>\
         <Code>{code}</Code><Message>{message}</Message></Error><RequestId>replay</RequestId></ErrorResponse>"
    )
}

fn xml(status: StatusCode, body: String) -> Response {
    (status, [("content-type", "text/xml")], body).into_response()
}

async fn replay_handler(
    State(state): State<Replay>,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    let param = |k: &str| {
        form.iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
    };
    let action = param("Action").unwrap_or_default();
    let marker = param("Marker");
    let mut s = state.lock().unwrap();
    s.seen.push((action.clone(), marker.clone()));
    match action.as_str() {
        "GetCallerIdentity" if s.deny_caller_identity => xml(
            StatusCode::FORBIDDEN,
            error_xml(
                "AccessDenied",
                "not authorized to perform: sts:GetCallerIdentity",
            ),
        ),
        "GetCallerIdentity" => xml(
            StatusCode::OK,
            format!(
                "<GetCallerIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><GetCallerIdentityResult>\
                 <Arn>arn:aws:iam::{ACCOUNT_ID}:user/replay</Arn><UserId>AIDAREPLAY</UserId><Account>{ACCOUNT_ID}</Account>\
                 </GetCallerIdentityResult><ResponseMetadata><RequestId>replay</RequestId></ResponseMetadata></GetCallerIdentityResponse>"
            ),
        ),
        "GetAccountAuthorizationDetails" => {
            let mut filters: Vec<String> = form
                .iter()
                .filter(|(k, _)| k.starts_with("Filter.member."))
                .map(|(_, v)| v.clone())
                .collect();
            filters.sort();
            assert_eq!(
                filters,
                [
                    "AWSManagedPolicy",
                    "Group",
                    "LocalManagedPolicy",
                    "Role",
                    "User"
                ]
            );
            assert_eq!(param("MaxItems").as_deref(), Some("1000"));
            let hiccup = if s.hiccups.is_empty() {
                s.always
            } else {
                Some(s.hiccups.remove(0))
            };
            match hiccup {
                Some(Hiccup::Throttling) => {
                    return xml(
                        StatusCode::BAD_REQUEST,
                        error_xml("Throttling", "Rate exceeded"),
                    );
                }
                Some(Hiccup::TooManyRequests) => {
                    return StatusCode::TOO_MANY_REQUESTS.into_response();
                }
                Some(Hiccup::Unavailable) => {
                    return xml(
                        StatusCode::SERVICE_UNAVAILABLE,
                        error_xml("ServiceUnavailable", "Service unavailable"),
                    );
                }
                Some(Hiccup::ExpiredToken) => {
                    return xml(
                        StatusCode::FORBIDDEN,
                        error_xml(
                            "ExpiredToken",
                            "The security token included in the request is expired",
                        ),
                    );
                }
                Some(Hiccup::AccessDenied) => {
                    return xml(
                        StatusCode::FORBIDDEN,
                        error_xml(
                            "AccessDenied",
                            "User: arn:aws:iam::123456789012:user/replay is not authorized to perform: \
                             iam:GetAccountAuthorizationDetails on resource: *",
                        ),
                    );
                }
                None => {}
            }
            let index = match &marker {
                None => 0,
                Some(m) => (1..s.pages.len())
                    .find(|&i| marker_for(i) == *m)
                    .expect("a marker this server gave out"),
            };
            xml(StatusCode::OK, s.pages[index].clone())
        }
        other => xml(
            StatusCode::BAD_REQUEST,
            error_xml("InvalidAction", &format!("unexpected {other}")),
        ),
    }
}

async fn start_replay(state: ReplayState) -> (String, Replay) {
    let state = Arc::new(Mutex::new(state));
    let app = axum::Router::new()
        .route("/", axum::routing::post(replay_handler))
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, state)
}

fn replay_options(url: &str) -> AwsSourceOptions {
    moto::aws_env();
    AwsSourceOptions {
        profile: Some(moto::PROFILE.into()),
        endpoint_url: Some(url.into()),
        ..AwsSourceOptions::default()
    }
}

/// The direct `<member>` children of `<list>` in a GAAD XML body.
fn top_level_members(body: &str, list: &str) -> Vec<String> {
    let open = format!("<{list}>");
    let close = format!("</{list}>");
    let Some(start) = body.find(&open) else {
        assert!(
            body.contains(&format!("<{list}/>")),
            "{list} missing from the response"
        );
        return Vec::new();
    };
    let inner = &body[start + open.len()..start + body[start..].find(&close).unwrap()];
    let (mut out, mut depth, mut from, mut i) = (Vec::new(), 0usize, 0usize, 0usize);
    while i < inner.len() {
        let rest = &inner[i..];
        if rest.starts_with("<member>") {
            if depth == 0 {
                from = i;
            }
            depth += 1;
            i += "<member>".len();
        } else if rest.starts_with("</member>") {
            depth -= 1;
            i += "</member>".len();
            if depth == 0 {
                out.push(inner[from..i].to_owned());
            }
        } else if rest.starts_with("<member/>") {
            if depth == 0 {
                out.push("<member/>".to_owned());
            }
            i += "<member/>".len();
        } else {
            i += 1;
        }
    }
    out
}

const LISTS: [&str; 4] = [
    "UserDetailList",
    "GroupDetailList",
    "RoleDetailList",
    "Policies",
];

/// Cuts `members` (list index, member XML), in API order, into pages of
/// `per_page` entities, each a complete GAAD response.
fn paginate(members: &[(usize, String)], per_page: usize) -> Vec<String> {
    let chunks: Vec<&[(usize, String)]> = members.chunks(per_page).collect();
    chunks
        .iter()
        .enumerate()
        .map(|(i, chunk)| {
            let mut body = String::from(
                "<GetAccountAuthorizationDetailsResponse xmlns=\"https://iam.amazonaws.com/doc/2010-05-08/\">\
                 <GetAccountAuthorizationDetailsResult>",
            );
            for (l, list) in LISTS.iter().enumerate() {
                let items: String = chunk.iter().filter(|(li, _)| *li == l).map(|(_, m)| m.as_str()).collect();
                if items.is_empty() {
                    body += &format!("<{list}/>");
                } else {
                    body += &format!("<{list}>{items}</{list}>");
                }
            }
            if i + 1 < chunks.len() {
                body += &format!("<IsTruncated>true</IsTruncated><Marker>{}</Marker>", xml_escape(&marker_for(i + 1)));
            } else {
                body += "<IsTruncated>false</IsTruncated>";
            }
            body += "</GetAccountAuthorizationDetailsResult><ResponseMetadata><RequestId>replay</RequestId>\
                     </ResponseMetadata></GetAccountAuthorizationDetailsResponse>";
            body
        })
        .collect()
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A user with a permissions boundary, written by hand in IAM's shape (moto
/// fails on PutUserPermissionsBoundary, so it cannot produce one).
fn bounded_user_xml() -> String {
    format!(
        "<member><Path>/</Path><UserName>page-bounded</UserName><UserId>AIDAPAGEBOUNDED0001</UserId>\
         <Arn>arn:aws:iam::{ACCOUNT_ID}:user/page-bounded</Arn><CreateDate>2026-11-21T09:00:00Z</CreateDate>\
         <UserPolicyList/><GroupList><member>page-g1</member></GroupList><AttachedManagedPolicies/>\
         <PermissionsBoundary><PermissionsBoundaryType>PermissionsBoundaryPolicy</PermissionsBoundaryType>\
         <PermissionsBoundaryArn>arn:aws:iam::{ACCOUNT_ID}:policy/page-p1</PermissionsBoundaryArn></PermissionsBoundary>\
         <Tags/></member>"
    )
}

/// Populates the shared moto with `page-` entities and cuts its real GAAD
/// response (only those entities, plus the hand-written bounded user) into
/// pages of three, so every list has a page boundary inside it.
async fn recorded_pages() -> (Vec<String>, usize) {
    static PAGES: tokio::sync::OnceCell<(Vec<String>, usize)> = tokio::sync::OnceCell::const_new();
    PAGES
        .get_or_init(|| async {
            let moto = Moto::shared();
            let iam = moto.iam();
            for i in 1..=4 {
                iam.create_policy()
                    .policy_name(format!("page-p{i}"))
                    .policy_document(allow(&format!("s3:Get{i}")).to_string())
                    .send()
                    .await
                    .unwrap();
                iam.create_user().user_name(format!("page-u{i}")).send().await.unwrap();
            }
            for i in 1..=3 {
                iam.create_group().group_name(format!("page-g{i}")).send().await.unwrap();
                iam.add_user_to_group().group_name(format!("page-g{i}")).user_name(format!("page-u{i}")).send().await.unwrap();
            }
            for i in 1..=5 {
                iam.create_role()
                    .role_name(format!("page-r{i}"))
                    .assume_role_policy_document(trust(json!({"Service": "lambda.amazonaws.com"})).to_string())
                    .send()
                    .await
                    .unwrap();
                iam.attach_role_policy()
                    .role_name(format!("page-r{i}"))
                    .policy_arn(format!("arn:aws:iam::{ACCOUNT_ID}:policy/page-p{}", 1 + i % 4))
                    .send()
                    .await
                    .unwrap();
            }
            let body = moto.raw_query(
                "iam",
                "Action=GetAccountAuthorizationDetails&Version=2010-05-08&Filter.member.1=User&Filter.member.2=Group\
                 &Filter.member.3=Role&Filter.member.4=LocalManagedPolicy&Filter.member.5=AWSManagedPolicy",
            );
            let mut members = Vec::new();
            for (l, list) in LISTS.iter().enumerate() {
                for m in top_level_members(&body, list) {
                    if m.contains(">page-") || m.contains("policy/page-") {
                        members.push((l, m));
                    }
                }
                if l == 0 {
                    members.push((0, bounded_user_xml()));
                }
            }
            assert_eq!(members.len(), 5 + 3 + 5 + 4);
            (paginate(&members, 3), members.len())
        })
        .await
        .clone()
}

#[tokio::test]
async fn pages_merge_into_one_document_with_every_entity_once() {
    let (pages, entities) = recorded_pages().await;
    assert_eq!(pages.len(), 6);
    let (url, state) = start_replay(ReplayState {
        pages: pages.clone(),
        ..Default::default()
    })
    .await;
    let (result, progress) = fetch(&replay_options(&url)).await;
    let fetched = result.expect("paged fetch");
    assert_eq!(fetched.pages, 6);
    assert_eq!(fetched.requests, 7, "six pages and one GetCallerIdentity");
    assert_eq!(fetched.account_id, ACCOUNT_ID);

    let doc = &fetched.document;
    assert_eq!(
        names(&doc["UserDetailList"], "UserName"),
        ["page-bounded", "page-u1", "page-u2", "page-u3", "page-u4"]
    );
    assert_eq!(
        names(&doc["GroupDetailList"], "GroupName"),
        ["page-g1", "page-g2", "page-g3"]
    );
    assert_eq!(
        names(&doc["RoleDetailList"], "RoleName"),
        ["page-r1", "page-r2", "page-r3", "page-r4", "page-r5"]
    );
    assert_eq!(
        names(&doc["Policies"], "PolicyName"),
        ["page-p1", "page-p2", "page-p3", "page-p4"]
    );
    let total: usize = LISTS.iter().map(|l| doc[l].as_array().unwrap().len()).sum();
    assert_eq!(total, entities);

    // Every list was split across pages, and progress saw each page.
    let per_page: Vec<[usize; 4]> = progress
        .iter()
        .map(|p| [p.users, p.groups, p.roles, p.policies])
        .collect();
    assert_eq!(
        per_page,
        [
            [3, 0, 0, 0],
            [2, 1, 0, 0],
            [0, 2, 1, 0],
            [0, 0, 3, 0],
            [0, 0, 1, 2],
            [0, 0, 0, 2]
        ]
    );
    assert_eq!(
        progress.iter().map(|p| p.page).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5, 6]
    );
    assert!(progress[..5].iter().all(|p| p.more) && !progress[5].more);
    assert_eq!(
        progress[0].to_string(),
        "page 1: 3 users, 0 groups, 0 roles, 0 policies, more to come"
    );

    // The client sent back exactly the markers it was given, in order.
    let seen = state.lock().unwrap().seen.clone();
    let markers: Vec<Option<String>> = seen
        .iter()
        .filter(|(a, _)| a == "GetAccountAuthorizationDetails")
        .map(|(_, m)| m.clone())
        .collect();
    let expected: Vec<Option<String>> = (0..6).map(|i| (i > 0).then(|| marker_for(i))).collect();
    assert_eq!(markers, expected);

    // A user permissions boundary (which moto cannot hold) comes through.
    let bounded = doc["UserDetailList"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["UserName"] == "page-bounded")
        .unwrap();
    assert_eq!(
        bounded["PermissionsBoundary"],
        json!({
            "PermissionsBoundaryType": "PermissionsBoundaryPolicy",
            "PermissionsBoundaryArn": format!("arn:aws:iam::{ACCOUNT_ID}:policy/page-p1")
        })
    );
    assert_eq!(bounded["CreateDate"], "2026-11-21T09:00:00Z");
}

#[tokio::test]
async fn throttling_is_retried_with_backoff_until_it_succeeds() {
    let (pages, _) = recorded_pages().await;
    let hiccups = vec![
        Hiccup::Throttling,
        Hiccup::TooManyRequests,
        Hiccup::Unavailable,
    ];
    let (url, state) = start_replay(ReplayState {
        pages,
        hiccups,
        ..Default::default()
    })
    .await;
    let started = Instant::now();
    let (result, _) = fetch(&replay_options(&url)).await;
    let fetched = result.expect("throttling is retried");
    assert_eq!(fetched.pages, 6);
    assert_eq!(
        fetched.requests,
        6 + 3 + 1,
        "pages, three retried throttles, GetCallerIdentity"
    );
    assert_eq!(
        state.lock().unwrap().seen.len(),
        10,
        "the server saw every retry"
    );
    // Full-jitter backoff draws up to 1 s, 2 s and 4 s; the chance that all
    // three together stay under 100 ms is about 2 in 100,000.
    assert!(
        started.elapsed() > Duration::from_millis(100),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn throttling_past_max_attempts_is_an_error_not_a_partial_document() {
    let (pages, _) = recorded_pages().await;
    let (url, state) = start_replay(ReplayState {
        pages,
        always: Some(Hiccup::Throttling),
        ..Default::default()
    })
    .await;
    let opts = AwsSourceOptions {
        max_attempts: 2,
        ..replay_options(&url)
    };
    let err = fetch(&opts).await.0.expect_err("always throttled");
    assert!(
        matches!(err, AwsSourceError::Throttled { attempts: 2, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("--max-attempts"), "{err}");
    assert_eq!(state.lock().unwrap().seen.len(), 2);
}

#[tokio::test]
async fn expired_token_says_how_to_refresh() {
    let (url, _) = start_replay(ReplayState {
        always: Some(Hiccup::ExpiredToken),
        ..Default::default()
    })
    .await;
    let err = fetch(&replay_options(&url)).await.0.expect_err("expired");
    assert!(
        matches!(err, AwsSourceError::ExpiredCredentials { .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("aws sso login --profile {}", moto::PROFILE)),
        "{msg}"
    );
    assert!(msg.contains("iam:GetAccountAuthorizationDetails"), "{msg}");
}

#[tokio::test]
async fn access_denied_in_iam_error_shape_names_the_action() {
    let (url, _) = start_replay(ReplayState {
        always: Some(Hiccup::AccessDenied),
        ..Default::default()
    })
    .await;
    let err = fetch(&replay_options(&url)).await.0.expect_err("denied");
    assert!(
        matches!(
            err,
            AwsSourceError::AccessDenied {
                action: "iam:GetAccountAuthorizationDetails",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("is not authorized"), "{err}");
}

#[tokio::test]
async fn truncated_page_without_marker_or_with_a_repeated_one_is_incomplete() {
    let (pages, _) = recorded_pages().await;
    let broken = pages[0].replace(
        &format!("<Marker>{}</Marker>", xml_escape(&marker_for(1))),
        "",
    );
    assert_ne!(broken, pages[0]);
    let (url, _) = start_replay(ReplayState {
        pages: vec![broken],
        ..Default::default()
    })
    .await;
    let err = fetch(&replay_options(&url))
        .await
        .0
        .expect_err("cannot go on");
    assert!(
        matches!(err, AwsSourceError::Incomplete { pages: 1, .. }),
        "{err:?}"
    );

    // A server that hands out the same marker again would loop forever.
    let looping = vec![pages[0].clone(), pages[0].clone()];
    let (url, _) = start_replay(ReplayState {
        pages: looping,
        ..Default::default()
    })
    .await;
    let err = fetch(&replay_options(&url)).await.0.expect_err("loops");
    assert!(
        matches!(&err, AwsSourceError::Incomplete { pages: 2, reason, .. } if reason.contains("repeated")),
        "{err:?}"
    );
}

#[tokio::test]
async fn denied_caller_identity_falls_back_to_the_first_arn() {
    let (pages, _) = recorded_pages().await;
    let (url, state) = start_replay(ReplayState {
        pages,
        deny_caller_identity: true,
        ..Default::default()
    })
    .await;
    let (result, _) = fetch(&replay_options(&url)).await;
    let fetched = result.expect("fetch without sts");
    assert_eq!(fetched.account_id, ACCOUNT_ID);
    assert!(
        state
            .lock()
            .unwrap()
            .seen
            .iter()
            .any(|(a, _)| a == "GetCallerIdentity")
    );
}

#[test]
fn fetch_future_can_be_spawned() {
    fn assert_send<T: Send>(_: &T) {}
    let opts = AwsSourceOptions::default();
    let future = fetch_account(&opts, &|_| {});
    assert_send(&future);
}

// ---------------------------------------------------------------------------
// through the CLI: the snapshot's grants are what was created

fn permdrift_cli(args: &[&str]) -> std::process::Output {
    // The child inherits the isolated AWS configuration set up by `aws_env`.
    moto::aws_env();
    std::process::Command::new(env!("CARGO_BIN_EXE_permdrift"))
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("run permdrift")
}

#[tokio::test]
async fn cli_snapshot_grants_match_what_was_created_and_diff_sees_widening() {
    use permdrift::grants::catalog::Catalog;
    use permdrift::whocan;

    let moto = Moto::shared();
    let iam = moto.iam();
    let bucket = "arn:aws:s3:::cli-exports/*";
    let read = json!({"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:GetObject","Resource":bucket}]});
    let pass = json!({"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iam:PassRole","Resource":format!("arn:aws:iam::{ACCOUNT_ID}:role/cli-worker")}]});
    iam.create_policy()
        .policy_name("cli-read")
        .policy_document(read.to_string())
        .send()
        .await
        .unwrap();
    iam.create_role()
        .role_name("cli-worker")
        .assume_role_policy_document(
            trust(json!({"AWS": format!("arn:aws:iam::{ACCOUNT_ID}:root")})).to_string(),
        )
        .send()
        .await
        .unwrap();
    iam.attach_role_policy()
        .role_name("cli-worker")
        .policy_arn(format!("arn:aws:iam::{ACCOUNT_ID}:policy/cli-read"))
        .send()
        .await
        .unwrap();
    iam.create_group()
        .group_name("cli-deployers")
        .send()
        .await
        .unwrap();
    iam.put_group_policy()
        .group_name("cli-deployers")
        .policy_name("pass")
        .policy_document(pass.to_string())
        .send()
        .await
        .unwrap();
    iam.create_user()
        .user_name("cli-dana")
        .send()
        .await
        .unwrap();
    iam.add_user_to_group()
        .group_name("cli-deployers")
        .user_name("cli-dana")
        .send()
        .await
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let before = dir.path().join("before.json");
    let endpoint = moto.endpoint();
    let args = |out: &std::path::Path| {
        vec![
            "snapshot".to_owned(),
            "--aws".into(),
            "--profile".into(),
            moto::PROFILE.into(),
            "--endpoint-url".into(),
            endpoint.clone(),
            "-o".into(),
            out.display().to_string(),
        ]
    };
    let a: Vec<String> = args(&before);
    let o = permdrift_cli(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("aws: account 123456789012"));

    let (snapshot, _) =
        permdrift::input::load(std::slice::from_ref(&before), Default::default()).unwrap();
    let source = &snapshot.sources[ACCOUNT_ID];
    assert_eq!(source.meta.account_id.as_deref(), Some(ACCOUNT_ID));
    assert!(source.meta.collected_at.is_some());
    let model = source.iam().unwrap();
    let catalog = Catalog::embedded();
    let subjects = |action: &str, resource: &str| -> Vec<String> {
        whocan::iam(model, catalog, action, Some(resource))
            .into_iter()
            .map(|a| a.subject)
            .collect()
    };
    let worker = format!("arn:aws:iam::{ACCOUNT_ID}:role/cli-worker");
    let dana = format!("arn:aws:iam::{ACCOUNT_ID}:user/cli-dana");
    assert!(subjects("s3:GetObject", "arn:aws:s3:::cli-exports/report.csv").contains(&worker));
    assert!(!subjects("s3:GetObject", "arn:aws:s3:::other/report.csv").contains(&worker));
    assert!(!subjects("s3:PutObject", "arn:aws:s3:::cli-exports/report.csv").contains(&worker));
    // Group-inherited: dana may pass the worker role, and only that role.
    assert!(subjects("iam:PassRole", &worker).contains(&dana));
    assert!(
        !subjects(
            "iam:PassRole",
            &format!("arn:aws:iam::{ACCOUNT_ID}:role/other")
        )
        .contains(&dana)
    );
    // Trust: the account root may assume the worker role.
    assert!(
        subjects("sts:AssumeRole", &worker).contains(&format!("arn:aws:iam::{ACCOUNT_ID}:root"))
    );

    // A human follows bad advice through the SDK: the worker role may now do anything.
    let admin = json!({"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]});
    iam.put_role_policy()
        .role_name("cli-worker")
        .policy_name("debug")
        .policy_document(admin.to_string())
        .send()
        .await
        .unwrap();
    let after = dir.path().join("after.json");
    let a: Vec<String> = args(&after);
    let o = permdrift_cli(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = permdrift_cli(&[
        "diff",
        before.to_str().unwrap(),
        after.to_str().unwrap(),
        "--format",
        "json",
        "-q",
    ]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let report: Value = serde_json::from_slice(&o.stdout).unwrap();
    let change = report["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["object"]["arn"] == worker.as_str())
        .expect("worker role change");
    assert_eq!(change["severity"], "critical");
    assert_eq!(change["direction"], "widening");
    assert!(
        change["risks"]
            .as_array()
            .unwrap()
            .contains(&json!("admin"))
    );
    assert_eq!(change["witness"]["subject"], worker.as_str());
}
