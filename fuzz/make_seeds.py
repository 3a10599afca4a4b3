#!/usr/bin/env python3
"""Writes fuzz/seeds/TARGET/ from the project's real data (see docs/fuzzing.md).

Sources: ../shared/data (Kubernetes bootstrap RBAC and application manifests,
a published GetAccountAuthorizationDetails document, AWS managed policies),
examples/, what `permdrift snapshot` writes from those, the raw XML a
moto_server answers for GetAccountAuthorizationDetails, and journal lines
chained the way src/store/record.rs describes (checked with `permdrift
history verify`). Every seed is kept small (a few KiB) so libFuzzer mutates
structure, not bulk.

    python3 fuzz/make_seeds.py [PERMDRIFT_BINARY]   # default: cargo run from the repo
"""
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
DATA = os.path.join(REPO, "..", "shared", "data")
if not os.path.isdir(DATA):
    DATA = "/work/shared/data"
SEEDS = os.path.join(HERE, "seeds")
BIN = sys.argv[1] if len(sys.argv) > 1 else None


def permdrift(*args):
    cmd = [BIN] if BIN else ["cargo", "run", "-q", "--manifest-path", os.path.join(REPO, "Cargo.toml"), "--bin", "permdrift", "--"]
    subprocess.run(cmd + ["-q", *args], check=True)


def write(target, name, text):
    os.makedirs(os.path.join(SEEDS, target), exist_ok=True)
    data = text.encode() if isinstance(text, str) else text
    with open(os.path.join(SEEDS, target, name), "wb") as f:
        f.write(data)


def read(*parts):
    with open(os.path.join(DATA, *parts)) as f:
        return f.read()


def yaml_documents(text):
    """The documents of a multi-document YAML file, verbatim."""
    docs, cur = [], []
    for line in text.splitlines(keepends=True):
        if line.rstrip() == "---":
            if "".join(cur).strip():
                docs.append("".join(cur))
            cur = []
        else:
            cur.append(line)
    if "".join(cur).strip():
        docs.append("".join(cur))
    return docs


def kind_of(doc):
    for line in doc.splitlines():
        if line.startswith("kind:"):
            return line.split(":", 1)[1].strip()
    return "?"


def main():
    shutil.rmtree(SEEDS, ignore_errors=True)
    tmp = tempfile.mkdtemp()

    # --- Kubernetes YAML: one document of each RBAC kind, a whole small
    # multi-document file, and two small v1 Lists (v1 and v1beta1 RBAC).
    nginx = yaml_documents(read("k8s", "apps", "ingress-nginx-rbac.yaml"))
    seen = set()
    for doc in nginx:
        kind = kind_of(doc)
        if kind not in seen:
            seen.add(kind)
            write("load_yaml", f"ingress-nginx-{kind}.yaml", "---\n" + doc)
    prom = read("k8s", "apps", "prometheus-operator-rbac.yaml")
    write("load_yaml", "prometheus-operator-rbac.yaml", prom)
    write("load_yaml", "namespace-roles.yaml", read("k8s", "bootstrap", "namespace-roles.yaml"))
    write("load_yaml", "cluster-role-bindings-v1beta1.yaml", read("k8s", "bootstrap", "cluster-role-bindings.yaml"))

    # --- The same as kubectl JSON: a pretty List, a compact List, one object, a stream.
    import yaml  # PyYAML, only to turn the real YAML into JSON
    ns_roles = yaml.safe_load(read("k8s", "bootstrap", "namespace-roles.yaml"))
    write("load_json", "namespace-roles.json", json.dumps(ns_roles, indent=4) + "\n")
    bindings = yaml.safe_load(read("k8s", "bootstrap", "namespace-role-bindings.yaml"))
    write("load_json", "namespace-role-bindings.compact.json", json.dumps(bindings, separators=(",", ":")))
    prom_docs = [yaml.safe_load(d) for d in yaml_documents(prom)]
    write("load_json", "prometheus-operator-clusterrole.json", json.dumps(prom_docs[1], indent=2))
    write("load_json", "prometheus-operator-stream.json", "\n".join(json.dumps(d) for d in prom_docs) + "\n")

    # --- GetAccountAuthorizationDetails: small slices of the published document.
    gaad = json.loads(read("aws", "gaad", "cloudsplaining.example-authz-details.json"))
    small = lambda xs, names, key: [x for x in xs if x[key] in names]
    users = small(gaad["UserDetailList"], {"obama"}, "UserName")
    groups = small(gaad["GroupDetailList"], {"admin"}, "GroupName")
    roles = small(gaad["RoleDetailList"], {"MyRole"}, "RoleName")
    policies = small(gaad["Policies"], {"InsecurePolicy", "AdministratorAccess", "NotYourPolicy"}, "PolicyName")
    slice1 = {"UserDetailList": users, "GroupDetailList": groups, "RoleDetailList": roles, "Policies": policies}
    write("gaad_json", "users-groups-roles.json", json.dumps(slice1, indent=4) + "\n")
    slice2 = {
        "UserDetailList": small(gaad["UserDetailList"], {"biden"}, "UserName"),
        "GroupDetailList": small(gaad["GroupDetailList"], {"biden"}, "GroupName"),
        "RoleDetailList": small(gaad["RoleDetailList"], {"OverprivilegedEC2"}, "RoleName"),
        "Policies": small(gaad["Policies"], {"AmazonS3ReadOnlyAccess"}, "PolicyName"),
    }
    write("gaad_json", "overprivileged.json", json.dumps(slice2, indent=4) + "\n")

    # Real IAM's own encoding: every policy document URL-encoded text.
    def encode_docs(v):
        if isinstance(v, dict):
            return {k: (urllib.parse.quote(json.dumps(x, separators=(",", ":")), safe="")
                        if k in ("PolicyDocument", "AssumeRolePolicyDocument") and isinstance(x, dict)
                        else encode_docs(x)) for k, x in v.items()}
        if isinstance(v, list):
            return [encode_docs(x) for x in v]
        return v
    write("gaad_json", "url-encoded.json", json.dumps(encode_docs(slice1)))
    for f in os.listdir(os.path.join(SEEDS, "gaad_json")):
        shutil.copy(os.path.join(SEEDS, "gaad_json", f), os.path.join(SEEDS, "load_json", "gaad-" + f))

    # --- permdrift's own snapshots of the above, JSON and YAML.
    k8s_in = os.path.join(tmp, "prom.yaml")
    aws_in = os.path.join(tmp, "aws.json")
    with open(k8s_in, "w") as f:
        f.write(prom)
    with open(aws_in, "w") as f:
        json.dump(slice1, f)
    for fmt in ("json", "yaml"):
        out = os.path.join(tmp, "both." + fmt)
        permdrift("snapshot", "--from", k8s_in, "--from", aws_in, "-o", out)
        with open(out) as f:
            write("load_" + fmt, "snapshot-kube-and-aws." + fmt, f.read())
        out = os.path.join(tmp, "kube." + fmt)
        permdrift("snapshot", "--from", os.path.join(DATA, "k8s", "bootstrap", "namespace-roles.yaml"), "-o", out)
        with open(out) as f:
            write("load_" + fmt, "snapshot-kube." + fmt, f.read())

    # --- IAM policy documents: plain JSON text, URL-encoded, form-encoded.
    managed = json.loads(read("aws", "managed-policies.json"))
    chosen = [p for p in managed if len(json.dumps(p["document"])) < 1500][:4]
    for p in chosen:
        write("iam_policy", p["name"] + ".json", json.dumps(p["document"], indent=2))
    trust = roles[0]["AssumeRolePolicyDocument"]
    write("iam_policy", "MyRole-trust.url", urllib.parse.quote(json.dumps(trust), safe=""))
    insecure = policies[0]["PolicyVersionList"][0]["Document"]
    write("iam_policy", "InsecurePolicy.form", urllib.parse.quote_plus(json.dumps(insecure)))

    # --- XML: what moto_server answers for GetAccountAuthorizationDetails.
    xml = moto_gaad(users, roles, insecure, trust)
    write("load_xml", "moto-gaad.xml", xml)

    # --- Operator config: the example, and its smallest valid form.
    with open(os.path.join(REPO, "examples", "permdrift.yaml")) as f:
        write("config", "permdrift.yaml", f.read())
    write("config", "minimal.yaml",
          "apiVersion: permdrift.dev/v1alpha1\nkind: Config\nstore:\n  path: /tmp/store\n"
          "sources:\n  - name: acct\n    aws:\n      pollInterval: 5m\n")

    # --- Journal: lines chained as src/store/record.rs describes, verified below.
    journal = make_journal()
    store = os.path.join(tmp, "store")
    os.makedirs(store)
    with open(os.path.join(store, "journal.jsonl"), "w") as f:
        f.write(journal)
    permdrift("history", "--store", store, "verify")
    write("journal_line", "journal.jsonl", journal)
    for i, line in enumerate(journal.splitlines(), 1):
        write("journal_line", f"line-{i}", line)
    shutil.rmtree(tmp)


def canonical(v):
    return json.dumps(v, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def make_journal():
    key = {"platform": "kubernetes", "kind": "ClusterRole", "namespace": None, "name": "prometheus-operator"}
    bodies = [
        ("change", "prod", {"key": key, "object": "ClusterRole/prometheus-operator", "verdict": "alert",
                            "fingerprint": "3f1c", "grants": "g-3f1c", "severity": "high",
                            "detected_at": 1764763200.5, "raw": {"rules": [{"verbs": ["*"]}]}}),
        ("baseline-patch", "prod", {"key": key, "object": "ClusterRole/prometheus-operator",
                                    "raw": None, "reason": "accepted"}),
        ("close", "prod", {"key": key, "object": "ClusterRole/prometheus-operator",
                           "fingerprint": "3f1c", "reason": "restored", "exposure_seconds": 42}),
        ("note", None, {"text": "tab\there, quote \" and \u00e9"}),
    ]
    prev = "0" * 64
    lines = []
    for seq, (kind, source, body) in enumerate(bodies, 1):
        rec = {"seq": seq, "at": f"2026-12-03T10:0{seq}:00Z", "kind": kind, "body": body, "prev": prev}
        if source:
            rec["source"] = source
        h = hashlib.sha256((prev + "\n" + canonical(rec)).encode()).hexdigest()
        rec["hash"] = h
        order = ["seq", "at", "kind", "source", "body", "prev", "hash"]
        lines.append("{" + ",".join(f'"{k}":{canonical(rec[k])}' for k in order if k in rec) + "}")
        prev = h
    return "\n".join(lines) + "\n"


def moto_gaad(users, roles, policy_doc, trust):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(["moto_server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def call(**form):
            form["Version"] = "2010-05-08"
            req = urllib.request.Request(
                f"http://127.0.0.1:{port}/", data=urllib.parse.urlencode(form).encode(),
                headers={"Content-Type": "application/x-www-form-urlencoded",
                         "Authorization": "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/iam/aws4_request, SignedHeaders=host, Signature=0"})
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.read().decode()
        for _ in range(100):
            try:
                call(Action="ListUsers")
                break
            except OSError:
                time.sleep(0.1)
        user = users[0]["UserName"]
        call(Action="CreateUser", UserName=user)
        call(Action="CreateGroup", GroupName="admin")
        call(Action="AddUserToGroup", GroupName="admin", UserName=user)
        arn = "arn:aws:iam::123456789012:policy/InsecurePolicy"
        call(Action="CreatePolicy", PolicyName="InsecurePolicy", PolicyDocument=json.dumps(policy_doc))
        call(Action="AttachUserPolicy", UserName=user, PolicyArn=arn)
        role = roles[0]["RoleName"]
        call(Action="CreateRole", RoleName=role, AssumeRolePolicyDocument=json.dumps(trust))
        call(Action="PutRolePolicy", RoleName=role, PolicyName="inline", PolicyDocument=json.dumps(policy_doc))
        return call(Action="GetAccountAuthorizationDetails",
                    **{"Filter.member.1": "User", "Filter.member.2": "Role", "Filter.member.3": "Group",
                       "Filter.member.4": "LocalManagedPolicy"})
    finally:
        proc.terminate()
        proc.wait()


if __name__ == "__main__":
    main()
