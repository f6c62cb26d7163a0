//! `sticky-canary cohort` and `sticky-canary assign`: what they print is what Argo Rollouts,
//! Flagger and Envoy accept (the Argo and Flagger snippets validated against the CRDs of
//! `${CRD_DIR:-../shared/crds}`), and the built binary's output and exit codes.
#![cfg(test)]

use serde_json::{json, Value};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use sticky_canary::plan::Plan;
use sticky_canary::routing::hash::bucket;
use sticky_canary_cli::cohort::{self, regex, Cohort, Format};
use sticky_canary_harness::envoy::workspace_root;
use sticky_canary_harness::schema::{self, parse_documents, Crds};

struct Ran {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs the built `sticky-canary` with `args`, `stdin` as its standard input.
fn sticky_canary(args: &[&str], stdin: &str) -> Ran {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sticky-canary"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    Ran {
        code: out.status.code().unwrap(),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

/// The CRDs (`$CRD_DIR`, relative to the repository root unless absolute, default
/// `../shared/crds`), or `None` with a printed reason when the folder is absent.
fn crds() -> Option<Crds> {
    let dir = std::env::var_os("CRD_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("../shared/crds"));
    let dir = if dir.is_absolute() {
        dir
    } else {
        workspace_root().join(dir)
    };
    if !dir.is_dir() {
        eprintln!(
            "SKIPPED: CRD validation — no CRD folder at {}",
            dir.display()
        );
        return None;
    }
    Some(Crds::load_dir(&dir).unwrap())
}

fn valid(crds: &Crds, doc: &Value) {
    let api = doc["apiVersion"].as_str().unwrap();
    let kind = doc["kind"].as_str().unwrap();
    let schema = crds.schema(api, kind).expect("a CRD for the kind");
    let errors = schema::validate_resource(schema, doc);
    assert!(errors.is_empty(), "{kind}: {errors:?}\n{doc:#}");
}

/// A Rollout with Istio traffic routing whose steps are `steps` and whose managed route is `route`.
fn rollout(route: &str, steps: Value) -> Value {
    json!({
        "apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout",
        "metadata": {"name": "checkout"},
        "spec": {
            "selector": {"matchLabels": {"app": "checkout"}},
            "template": {"metadata": {"labels": {"app": "checkout"}},
                         "spec": {"containers": [{"name": "app", "image": "checkout:2"}]}},
            "strategy": {"canary": {
                "canaryService": "checkout-canary", "stableService": "checkout-stable",
                "trafficRouting": {"managedRoutes": [{"name": route}],
                                   "istio": {"virtualService": {"name": "checkout"}}},
                "steps": steps,
            }},
        },
    })
}

fn canary(matches: Value) -> Value {
    json!({
        "apiVersion": "flagger.app/v1beta1", "kind": "Canary",
        "metadata": {"name": "checkout"},
        "spec": {
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "checkout"},
            "service": {"port": 80},
            "analysis": {"interval": "1m", "threshold": 5, "iterations": 10, "match": matches},
        },
    })
}

fn yaml(text: &str) -> Value {
    let mut docs = parse_documents(text).unwrap();
    assert_eq!(docs.len(), 1, "{text}");
    docs.remove(0)
}

const SIZES: [u32; 8] = [1, 500, 1250, 2500, 3333, 5000, 9999, 10_000];

/// The Argo steps: setCanaryScale (the pods, rounded up to a whole percent) then setHeaderRoute
/// with the cohort's regex, valid in a Rollout; 0 % removes the managed route.
#[test]
fn argo_steps_are_valid_rollout_steps() {
    let crds = crds();
    for n in SIZES {
        let c = Cohort {
            hundredths: n,
            header: "x-canary-bucket".into(),
            route: "cohort-5".into(),
        };
        let steps = yaml(&c.render(Format::Argo));
        assert_eq!(steps[0]["setCanaryScale"]["weight"], n.div_ceil(100));
        let route = &steps[1]["setHeaderRoute"];
        assert_eq!(route["name"], "cohort-5");
        let m = &route["match"][0];
        assert_eq!(m["headerName"], "x-canary-bucket");
        assert_eq!(m["headerValue"]["regex"], regex(n).as_str());
        if let Some(crds) = &crds {
            valid(crds, &rollout("cohort-5", steps));
        }
    }
    let c = Cohort {
        hundredths: 0,
        header: "x-canary-bucket".into(),
        route: "cohort".into(),
    };
    let steps = yaml(&c.render(Format::Argo));
    assert_eq!(steps, json!([{"setHeaderRoute": {"name": "cohort"}}]));
    if let Some(crds) = &crds {
        valid(crds, &rollout("cohort", steps));
        // The validation can fail: a typo in a step is caught.
        let bad = rollout("cohort", json!([{"setHeaderRoute": {"nme": "cohort"}}]));
        let errors = schema::validate_resource(
            crds.schema("argoproj.io/v1alpha1", "Rollout").unwrap(),
            &bad,
        );
        assert!(!errors.is_empty());
    }
}

/// The Flagger match is a valid Canary `analysis.match`; the Envoy entry a header matcher with
/// the regex as a `safe_regex`; the bare regex is the regex.
#[test]
fn flagger_envoy_and_regex_formats() {
    let crds = crds();
    for n in [0].into_iter().chain(SIZES) {
        let c = Cohort {
            hundredths: n,
            header: "x-bucket".into(),
            route: "cohort".into(),
        };
        let flagger = yaml(&c.render(Format::Flagger));
        assert_eq!(
            flagger,
            json!({"match": [{"headers": {"x-bucket": {"regex": regex(n)}}}]})
        );
        if let Some(crds) = &crds {
            valid(crds, &canary(flagger["match"].clone()));
        }
        let envoy = yaml(&c.render(Format::Envoy));
        assert_eq!(
            envoy,
            json!([{"name": "x-bucket", "string_match": {"safe_regex": {"regex": regex(n)}}}])
        );
        assert_eq!(c.render(Format::Regex), format!("{}\n", regex(n)));
    }
}

/// The binary prints what `Cohort::render` gives; usage errors exit 1, help 0.
#[test]
fn cohort_command_line() {
    let ran = sticky_canary(&["cohort", "12.5%"], "");
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    let want = Cohort {
        hundredths: 1250,
        header: "x-canary-bucket".into(),
        route: "cohort".into(),
    };
    assert_eq!(ran.stdout, want.render(Format::Argo));
    let ran = sticky_canary(
        &[
            "cohort", "5", "--header", "X-Bucket", "--name", "five", "--format", "flagger",
        ],
        "",
    );
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    assert!(
        ran.stdout
            .contains("x-bucket:\n        regex: '0[0-4][0-9]{2}'"),
        "{}",
        ran.stdout
    );
    let ran = sticky_canary(&["cohort", "0.01%", "--format", "regex"], "");
    assert_eq!((ran.code, ran.stdout.as_str()), (0, "0000\n"));
    for (bad, says) in [
        (&["cohort", "0.001"][..], "finer than the buckets"),
        (&["cohort", "100.5"], "above 100"),
        (&["cohort", "-5"], "unexpected argument"),
        (&["cohort", "five"], "not a percentage"),
        (&["cohort"], "required"),
        (&["cohort", "5", "--format", "yaml"], "invalid value 'yaml'"),
        (
            &["cohort", "5", "--header", "x bucket"],
            "not a header name",
        ),
        (&["cohort", "5", "--name", "a/b"], "not a route name"),
        (&["cohort", "--table", "5"], "cannot be used with"),
    ] {
        let ran = sticky_canary(bad, "");
        assert_eq!(ran.code, 1, "{bad:?}");
        assert!(ran.stderr.contains(says), "{bad:?}: {}", ran.stderr);
        assert!(ran.stdout.is_empty(), "{bad:?}");
    }
    for help in [
        &["cohort", "--help"][..],
        &["cohort", "-h"],
        &["assign", "--help"],
    ] {
        let ran = sticky_canary(help, "");
        assert_eq!(ran.code, 0, "{help:?}");
        assert!(ran.stdout.contains("Usage: sticky-canary"), "{help:?}");
    }
}

/// `cohort --table`: a markdown table whose every regex (`\|` read as `|`) is the regex of its
/// percentage.
#[test]
fn the_table_of_common_sizes() {
    let ran = sticky_canary(&["cohort", "--table"], "");
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    let rows: Vec<&str> = ran.stdout.lines().skip(2).collect();
    assert_eq!(rows.len(), cohort::COMMON.len());
    for (row, n) in rows.iter().zip(cohort::COMMON) {
        let cells: Vec<&str> = row.split(" | ").collect();
        assert_eq!(cells[0], format!("| {}", cohort::format_percent(n)));
        let re = cells[2]
            .trim_end_matches(" |")
            .trim_matches('`')
            .replace("\\|", "|");
        assert_eq!(re, regex(n), "{row}");
    }
}

const CONFIG: &str = r#"{"service":"checkout","salt":"checkout-2026-11",
  "versions":[{"name":"canary","weight":5},{"name":"stable","weight":95}],
  "default_version":"stable",
  "session":{"sources":[{"cookie":"session_id"},{"header":"x-user-id"}]}}"#;

fn config_file(name: &str, text: &str) -> PathBuf {
    let dir = workspace_root().join("target/tmp");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("cli-ramp-{}-{name}", std::process::id()));
    std::fs::write(&path, text).unwrap();
    path
}

/// `assign` prints key, version, bucket and reason as the core computes them, for keys on the
/// command line, in a file (CRLF, blank lines) and on stdin, as lines or JSON lines.
#[test]
fn assign_command_line() {
    let config = config_file("config.json", CONFIG);
    let plan = Plan::from_json(CONFIG.as_bytes()).unwrap();
    let keys: Vec<String> = (0..400).map(|i| format!("s{i:03}")).collect();
    let file = config_file("keys.txt", &(keys[2..].join("\r\n") + "\r\n\r\n  \n"));
    let c = config.to_str().unwrap();
    let mut args = vec!["assign", "--config", c, keys[0].as_str(), keys[1].as_str()];
    args.extend(["--keys-file", file.to_str().unwrap()]);
    let ran = sticky_canary(&args, "");
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    let lines: Vec<&str> = ran.stdout.lines().collect();
    assert_eq!(lines.len(), keys.len());
    let mut canary = 0;
    for (line, key) in lines.iter().zip(&keys) {
        let b = bucket(&plan.salt, key.as_bytes());
        let version = plan.version_name(plan.bucket(key.as_bytes()));
        assert_eq!(*line, format!("{key}\t{version}\t{b:04}\thash"));
        canary += usize::from(version == "canary");
    }
    assert!(canary > 0, "no key on the canary among {}", keys.len());

    let ran = sticky_canary(
        &["assign", "--config", c, "--keys-file", "-", "--json"],
        "a\nb\n",
    );
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    let rows: Vec<Value> = ran
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1]["key"], "b");
    assert_eq!(
        rows[1]["bucket"],
        format!("{:04}", bucket(&plan.salt, b"b"))
    );
    assert_eq!(rows[1]["reason"], "hash");

    // --held: the hold cookie rides along; hold, the default version, no bucket.
    let held = config_file(
        "held.json",
        &CONFIG.replace(
            r#"{"header":"x-user-id"}]}"#,
            r#"{"header":"x-user-id"}],"hold":{"cookie":"sc_hold","idle_seconds":900}}"#,
        ),
    );
    let ran = sticky_canary(
        &[
            "assign",
            "--config",
            held.to_str().unwrap(),
            "--held",
            "s001",
        ],
        "",
    );
    assert_eq!(
        (ran.code, ran.stdout.as_str()),
        (0, "s001\tstable\t-\thold\n"),
        "{}",
        ran.stderr
    );
    let ran = sticky_canary(&["assign", "--config", c, "--held", "s001"], "");
    assert_eq!(ran.code, 1);
    assert!(ran.stderr.contains("no session.hold"), "{}", ran.stderr);

    // A key the cookie cannot carry: reported, the others printed, exit 1.
    let ran = sticky_canary(&["assign", "--config", c, "ok", "not ok"], "");
    assert_eq!(ran.code, 1);
    assert_eq!(ran.stdout.lines().count(), 1);
    assert!(ran.stderr.contains("\"not ok\""), "{}", ran.stderr);

    let bad = config_file(
        "bad.json",
        &CONFIG.replace("\"weight\":5", "\"weight\":\"5\""),
    );
    let ran = sticky_canary(&["assign", "--config", bad.to_str().unwrap(), "k"], "");
    assert_eq!(ran.code, 1);
    assert!(ran.stderr.contains("versions[0].weight"), "{}", ran.stderr);
    assert!(ran.stdout.is_empty());
    for (args, says) in [
        (&["assign", "--config", c][..], "no keys"),
        (&["assign", "k"], "--config"),
        (
            &["assign", "--config", "/nonexistent/c.json", "k"],
            "cannot read",
        ),
        (
            &["assign", "--config", c, "--keys-file", "/nonexistent/k"],
            "cannot read",
        ),
    ] {
        let ran = sticky_canary(args, "");
        assert_eq!(ran.code, 1, "{args:?}");
        assert!(ran.stderr.contains(says), "{args:?}: {}", ran.stderr);
    }
    for f in [config, file, bad, held] {
        std::fs::remove_file(f).unwrap();
    }
}

/// The manual's chapter on the cohort shows what the command prints: the table of common sizes,
/// the Argo step of 5 %, and the `assign` lines of its example (the configuration reference's
/// config, whose salt and weights `CONFIG` repeats).
#[test]
fn the_manual_shows_real_output() {
    let chapter = std::fs::read_to_string(workspace_root().join("docs/src/cli/cohort.md")).unwrap();
    let reference =
        std::fs::read_to_string(workspace_root().join("docs/src/reference/configuration.md"))
            .unwrap();
    assert!(
        chapter.contains(&cohort::table()),
        "docs/src/cli/cohort.md: the cohort table is stale"
    );
    let step = Cohort {
        hundredths: 500,
        header: cohort::DEFAULT_HEADER.into(),
        route: cohort::DEFAULT_ROUTE.into(),
    };
    assert!(
        chapter.contains(&format!("```yaml\n{}```", step.render(Format::Argo))),
        "docs/src/cli/cohort.md: the Argo step of 5 % is stale"
    );
    assert!(reference.contains(r#""salt": "checkout-2026-11""#));
    let plan = Plan::from_json(CONFIG.as_bytes()).unwrap();
    for key in ["alice", "bob"] {
        let a = sticky_canary_cli::assign::assign(&plan, key, false).unwrap();
        assert!(
            chapter.contains(&format!("# {}\n", a.line())),
            "docs/src/cli/cohort.md: assign {key} is stale"
        );
    }
    let alice = sticky_canary_cli::assign::assign(&plan, "alice", false).unwrap();
    assert!(
        chapter.contains(&format!("# {}\n", alice.json())),
        "docs/src/cli/cohort.md: assign --json is stale"
    );
}

/// The point of the cohort: for every whole percentage p, the regex `cohort p` prints matches
/// the bucket `assign` reports exactly for the sessions that weights canary p / stable 100−p
/// send to the canary.
#[test]
fn the_regex_selects_the_sessions_the_weights_select() {
    use sticky_canary_cli::assign::assign;
    let keys: Vec<String> = (0..300).map(|i| format!("session-{i}")).collect();
    let mut agreed = 0;
    for p in 1..100 {
        let versions = format!(
            r#""versions":[{{"name":"canary","weight":{p}}},{{"name":"stable","weight":{}}}]"#,
            100 - p
        );
        let config = CONFIG.replace(
            r#""versions":[{"name":"canary","weight":5},{"name":"stable","weight":95}]"#,
            &versions,
        );
        let plan = Plan::from_json(config.as_bytes()).unwrap();
        assert_eq!(plan.versions[0].weight, p);
        let re = regex::Regex::new(&format!("^(?:{})$", regex(p * 100))).unwrap();
        for key in &keys {
            let a = assign(&plan, key, false).unwrap();
            assert_eq!(re.is_match(&a.bucket), a.version == "canary", "{p}% {key}");
            agreed += 1;
        }
    }
    assert_eq!(agreed, 99 * keys.len());
}
