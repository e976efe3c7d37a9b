//! `podtailor render` as a user runs it: the seed scenario, the output formats, and every kind
//! of bad input, each a clear one-line error with exit code 1 (2 for usage), never a panic.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::{Value, json};

fn render(args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_podtailor"));
    cmd.arg("render").args(args).current_dir(common::repo());
    cmd.env_remove("PODTAILOR_TEMPLATE").env_remove("PODTAILOR_OVERRIDES");
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn: {e}"));
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        use std::io::Write;
        pipe.write_all(text.as_bytes()).unwrap_or_else(|e| panic!("stdin: {e}"));
    }
    child.wait_with_output().unwrap_or_else(|e| panic!("wait: {e}"))
}

fn examples(extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = ["--template", "examples/template.yaml", "--overrides", "examples/overrides"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

fn run_ok(args: &[String]) -> String {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = render(&args, None);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_seed_scenario() {
    let desired: Value = serde_json::from_str(&run_ok(&examples(&["-o", "json", "examples/review.json"])))
        .unwrap_or_else(|e| panic!("{e}"));
    let base = &desired["spec"]["containers"][0];
    assert_eq!(
        base["resources"],
        json!({"requests": {"cpu": "500m", "memory": "1024Mi"}, "limits": {"cpu": "500m", "memory": "1024Mi"}})
    );
    let my_secret = base["env"].as_array().and_then(|e| e.iter().find(|v| v["name"] == "MY_SECRET")).cloned();
    assert_eq!(
        my_secret,
        Some(
            json!({"name": "MY_SECRET", "valueFrom": {"secretKeyRef": {"name": "infrared-photon-7780-env", "key": "MY_SECRET"}}})
        )
    );
    assert_eq!(desired["spec"]["restartPolicy"], "Never");
    assert_eq!(desired["metadata"]["labels"]["tier"], "airflow");
    assert_eq!(desired["metadata"]["labels"]["dag_id"], "example_kubernetes_executor_pod_override_sources");
    assert_eq!(desired["metadata"].get("name"), None, "the template's placeholder name must not be copied");
    assert_eq!(desired["spec"]["securityContext"], json!({"runAsUser": 50000, "fsGroup": 50000}));
    let volumes: Vec<&str> =
        desired["spec"]["volumes"].as_array().into_iter().flatten().filter_map(|v| v["name"].as_str()).collect();
    assert_eq!(volumes, ["logs", "config", "kube-api-access-7xq2m"]);
}

#[test]
fn the_patch_of_the_review_applies_and_a_second_pass_is_empty() {
    let review = common::read_json(&common::examples().join("review.json"));
    let patch: json_patch::Patch = serde_json::from_str(&run_ok(&examples(&["-o", "patch", "examples/review.json"])))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!patch.0.is_empty());
    let mut pod = review["request"]["object"].clone();
    json_patch::patch(&mut pod, &patch).unwrap_or_else(|e| panic!("{e}"));
    let desired: Value = serde_json::from_str(&run_ok(&examples(&["-o", "json", "examples/review.json"])))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(pod, desired);
    let out = render(
        &examples(&["-o", "patch", "-"]).iter().map(String::as_str).collect::<Vec<_>>(),
        Some(&desired.to_string()),
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "[]");
}

#[test]
fn yaml_is_the_default_and_the_bare_pod_renders_like_the_review() {
    let yaml = run_ok(&examples(&["examples/pod.yaml"]));
    let desired: Value = serde_yaml_ng::from_str(&yaml).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(desired["spec"]["containers"][0]["resources"]["limits"]["cpu"], "500m");
    assert_eq!(desired["metadata"]["namespace"], "airflow");
}

#[test]
fn a_pod_that_did_not_opt_in_comes_out_unchanged() {
    assert_eq!(run_ok(&examples(&["-o", "patch", "examples/review-not-opted-in.json"])).trim(), "[]");
    let review = common::read_json(&common::examples().join("review-not-opted-in.json"));
    let out: Value = serde_json::from_str(&run_ok(&examples(&["-o", "json", "examples/review-not-opted-in.json"])))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out, review["request"]["object"]);
}

#[test]
fn the_namespace_comes_from_the_pod_else_the_flag() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let o = "apiVersion: podtailor.dev/v1alpha1\nkind: PodOverride\nmetadata: {name: o, namespace: team}\nspec: {pod: {spec: {serviceAccountName: team-sa}}}\n";
    std::fs::write(dir.path().join("o.yaml"), o).unwrap_or_else(|e| panic!("{e}"));
    let pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: p, annotations: {podtailor.dev/override: o}}\nspec: {containers: [{name: base}]}\n";
    let d = dir.path().display().to_string();
    let args = ["--template", "examples/template.yaml", "--overrides", &d, "-o", "json"];
    let out = render(&[&args[..], &["-"]].concat(), Some(pod));
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found in namespace \"default\""));
    let out = render(&[&args[..], &["-n", "team", "-"]].concat(), Some(pod));
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("team-sa"));
}

/// render -o yaml quotes every string a YAML 1.1 reader (PyYAML, which Airflow uses) would
/// take for a date, a time, a number, a boolean or null, keys as well as values, from the pod
/// and from an override alike.
#[test]
fn render_yaml_quotes_what_a_yaml_1_1_reader_would_retype() {
    let pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: p, labels: {\"on\": \"yes\", ds: \"2026-11-24\"}, \
               annotations: {podtailor.dev/override: o}}\nspec: {containers: [{name: base, \
               args: [\"0755\", \"1e3\", \"0x1F\", \"~\", \"null\", \".inf\", \"12:30\", \"n\"]}]}\n";
    let out = scenario(
        TEMPLATE,
        &[("o.yaml", &over("{pod: {spec: {nodeSelector: {pool: \"off\", \"y\": \"2026-11-24T10:00:00Z\"}}}}"))],
        pod,
    );
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let yaml = String::from_utf8_lossy(&out.stdout);
    for line in [
        "    \"on\": \"yes\"\n",
        "    ds: \"2026-11-24\"\n",
        "    - \"0755\"\n    - \"1e3\"\n    - \"0x1F\"\n    - \"~\"\n    - \"null\"\n    - \".inf\"\n    - \"12:30\"\n    - \"n\"\n",
        "    pool: \"off\"\n",
        "    \"y\": \"2026-11-24T10:00:00Z\"\n",
    ] {
        assert!(yaml.contains(line), "{line:?} not in:\n{yaml}");
    }
    let desired: Value = serde_yaml_ng::from_str(&yaml).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(desired["metadata"]["labels"], json!({"on": "yes", "ds": "2026-11-24"}));
    assert_eq!(desired["spec"]["nodeSelector"], json!({"pool": "off", "y": "2026-11-24T10:00:00Z"}));
}

/// Writes a scenario (template, override files, input) and runs render on it.
fn scenario(template: &str, overrides: &[(&str, &str)], input: &str) -> Output {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let root = dir.path();
    std::fs::create_dir(root.join("o")).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(root.join("template.yaml"), template).unwrap_or_else(|e| panic!("{e}"));
    for (name, text) in overrides {
        std::fs::write(root.join("o").join(name), text).unwrap_or_else(|e| panic!("{e}"));
    }
    std::fs::write(root.join("input"), input).unwrap_or_else(|e| panic!("{e}"));
    let p = |n: &str| root.join(n).display().to_string();
    let args = [p("template.yaml"), p("o"), p("input")];
    render(&["--template", &args[0], "--overrides", &args[1], "-n", "ns", &args[2]], None)
}

const TEMPLATE: &str =
    "apiVersion: v1\nkind: Pod\nmetadata: {name: placeholder}\nspec: {containers: [{name: base, image: i:1}]}\n";
const POD: &str = "apiVersion: v1\nkind: Pod\nmetadata: {name: p, annotations: {podtailor.dev/override: o}}\nspec: {containers: [{name: base}]}\n";

fn over(spec: &str) -> String {
    format!(
        "apiVersion: podtailor.dev/v1alpha1\nkind: PodOverride\nmetadata: {{name: o, namespace: ns}}\nspec: {spec}\n"
    )
}

fn assert_error(out: &Output, wants: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line expected: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    for want in wants {
        assert!(stderr.contains(want), "{want:?} not in: {stderr}");
    }
    assert!(out.stdout.is_empty());
}

#[test]
fn malformed_input() {
    assert_error(
        &scenario(TEMPLATE, &[], "apiVersion: v1\nkind: Pod\nmetadata: [unclosed\n"),
        &["input: invalid YAML"],
    );
    assert_error(&scenario(TEMPLATE, &[], "{\"apiVersion\": \"v1\", "), &["input: invalid JSON"]);
    assert_error(&scenario(TEMPLATE, &[], "apiVersion: apps/v1\nkind: Deployment\n"), &["input: is a \"Deployment\""]);
    assert_error(&scenario(TEMPLATE, &[], "{\"kind\": \"AdmissionReview\", \"request\": {}}"), &["has no object"]);
}

#[test]
fn a_template_that_is_not_a_pod() {
    assert_error(
        &scenario("apiVersion: apps/v1\nkind: Deployment\n", &[], POD),
        &[
            "template.yaml",
            "is not a Pod manifest: expected `apiVersion: v1` and `kind: Pod`",
            "apiVersion \"apps/v1\" and kind \"Deployment\"",
        ],
    );
    assert_error(&scenario("key: [broken\n", &[], POD), &["template.yaml", "invalid YAML"]);
    assert_error(
        &scenario("apiVersion: v1\nkind: Pod\nspec: {containers: [{image: x}]}\n", &[], POD),
        &["spec.containers[0].name"],
    );
}

#[test]
fn an_override_naming_a_missing_container() {
    let o = over("{container: worker, resources: {limits: {cpu: 1}}}");
    assert_error(
        &scenario(TEMPLATE, &[("o.yaml", &o)], POD),
        &["PodOverride \"o\"", "namespace \"ns\"", "container \"worker\" not found"],
    );
}

#[test]
fn an_unknown_deploy_type() {
    let o = over("{secrets: [{deployType: file, deployTarget: /x, secret: s}]}");
    assert_error(
        &scenario(TEMPLATE, &[("o.yaml", &o)], POD),
        &["o.yaml", "PodOverride \"o\"", "namespace \"ns\"", "spec.secrets[0].deployType", "unknown variant `file`"],
    );
}

#[test]
fn a_relative_volume_target() {
    let o = over("{secrets: [{deployType: volume, deployTarget: etc/creds, secret: s}]}");
    assert_error(
        &scenario(TEMPLATE, &[("o.yaml", &o)], POD),
        &["o.yaml", "PodOverride \"o\"", "spec.secrets[0].deployTarget", "not an absolute path"],
    );
}

#[test]
fn an_unknown_field() {
    let o = over("{resources: {limit: {cpu: 1}}}");
    assert_error(
        &scenario(TEMPLATE, &[("o.yaml", &o)], POD),
        &["o.yaml", "spec.resources.limit", "unknown field `limit`"],
    );
}

#[test]
fn a_missing_override() {
    assert_error(&scenario(TEMPLATE, &[], POD), &["PodOverride \"o\" not found in namespace \"ns\""]);
}

#[test]
fn an_annotation_with_invalid_names() {
    let pod = POD.replace("podtailor.dev/override: o", "podtailor.dev/override: 'o, Not_Valid'");
    assert_error(
        &scenario(TEMPLATE, &[("o.yaml", &over("{}"))], &pod),
        &["namespace \"ns\"", "\"Not_Valid\" is not a valid PodOverride name"],
    );
}

#[test]
fn files_that_do_not_exist() {
    let out =
        render(&["--template", "/nonexistent/t.yaml", "--overrides", "examples/overrides", "examples/pod.yaml"], None);
    assert_error(&out, &["/nonexistent/t.yaml"]);
    let out = render(&examples(&["/nonexistent/pod.yaml"]).iter().map(String::as_str).collect::<Vec<_>>(), None);
    assert_error(&out, &["/nonexistent/pod.yaml"]);
}

#[test]
fn usage_errors_exit_2() {
    let out = render(&["--template", "examples/template.yaml"], None);
    assert_eq!(out.status.code(), Some(2));
    let out =
        render(&examples(&["-o", "xml", "examples/pod.yaml"]).iter().map(String::as_str).collect::<Vec<_>>(), None);
    assert_eq!(out.status.code(), Some(2));
    assert!(Path::new(env!("CARGO_BIN_EXE_podtailor")).exists());
}

/// `serve` without a source of overrides, with both, or `--cluster` without any way to reach
/// a cluster: a clear error before anything is served.
#[test]
fn serve_needs_exactly_one_source_of_overrides_and_a_reachable_configuration() {
    let serve_with = |cluster_env: Option<&str>, args: &[&str]| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_podtailor"));
        command
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args(["serve", "--template", "examples/template.yaml", "--tls-cert", "x.crt", "--tls-key", "x.key"])
            .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .args(args)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env_remove("KUBERNETES_SERVICE_PORT")
            .env_remove("PODTAILOR_OVERRIDES")
            .env("KUBECONFIG", "/nonexistent/kubeconfig");
        match cluster_env {
            Some(v) => command.env("PODTAILOR_CLUSTER", v),
            None => command.env_remove("PODTAILOR_CLUSTER"),
        };
        command.output().unwrap_or_else(|e| panic!("{e}"))
    };
    let serve = |args: &[&str]| serve_with(None, args);
    let neither = serve(&[]);
    assert_eq!(neither.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&neither.stderr).contains("--overrides <DIR>"));
    let both = serve(&["--cluster", "--overrides", "examples/overrides"]);
    assert_eq!(both.status.code(), Some(2));
    let unreachable = serve(&["--cluster"]);
    assert_eq!(unreachable.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&unreachable.stderr);
    assert!(stderr.starts_with("podtailor serve: --cluster: cannot configure a Kubernetes client"), "{stderr}");
    assert!(stderr.contains("/nonexistent/kubeconfig"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");

    // PODTAILOR_CLUSTER=false is files mode, as if it were not set (a Deployment may set it so)
    let files = serve_with(Some("false"), &["--overrides", "examples/overrides"]);
    let stderr = String::from_utf8_lossy(&files.stderr);
    assert_eq!(files.status.code(), Some(1), "{stderr}");
    assert!(stderr.starts_with("podtailor serve: ") && stderr.contains("x.crt"), "past the arguments: {stderr}");
    let neither = serve_with(Some("false"), &[]);
    assert_eq!(neither.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&neither.stderr).contains("--overrides <DIR>"));
    let cluster = serve_with(Some("true"), &[]);
    let stderr = String::from_utf8_lossy(&cluster.stderr);
    assert!(stderr.starts_with("podtailor serve: --cluster: cannot configure a Kubernetes client"), "{stderr}");
    let both = serve_with(Some("true"), &["--overrides", "examples/overrides"]);
    assert_eq!(both.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&both.stderr).contains("cannot be used with '--cluster'"));
}

#[test]
fn a_panic_ends_render_with_one_line_and_exit_code_1() {
    let pod = POD.replace("override: o", &format!("override: {}", podtailor::mutate::PANIC_OVERRIDE));
    let out = render(&examples(&["-o", "json", "-"]).iter().map(String::as_str).collect::<Vec<_>>(), Some(&pod));
    common::assert_internal_error(&out, "render");
    assert!(out.stdout.is_empty());
}

// --- the mistakes a newcomer makes: each error says what to do ----------------------------

/// `podtailor ARGS...` in the repository, without the configuration variables of a shell.
fn podtailor(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_podtailor"));
    cmd.args(args).current_dir(common::repo()).stdin(Stdio::null());
    for var in ["PODTAILOR_TEMPLATE", "PODTAILOR_OVERRIDES", "PODTAILOR_CLUSTER", "RUST_LOG"] {
        cmd.env_remove(var);
    }
    cmd.env_remove("PODTAILOR_LISTEN").env_remove("PODTAILOR_ADMIN_LISTEN");
    cmd
}

fn output(cmd: &mut Command) -> (Option<i32>, String, String) {
    let out = cmd.output().unwrap_or_else(|e| panic!("spawn: {e}"));
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const NOT_IN_DEFAULT: &str = "PodOverride \"resource-requirements\" not found in namespace \"default\"; it exists in namespace \"airflow\" (use -n airflow)";
const A_TYPO: &str =
    "PodOverride \"resource-requirement\" not found in namespace \"airflow\"; did you mean \"resource-requirements\"?";

#[test]
fn launch_dry_run_says_where_the_override_is_and_what_was_meant() {
    let launch = |extra: &[&str]| {
        let mut args =
            vec!["launch", "--dry-run", "--template", "examples/template.yaml", "--overrides", "examples/overrides"];
        args.extend_from_slice(extra);
        output(&mut podtailor(&args))
    };
    let (code, _, stderr) = launch(&["--override", "resource-requirements", "--", "true"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(
        stderr,
        format!("podtailor launch: task \"task\": the webhook would deny its pod: podtailor: {NOT_IN_DEFAULT}\n")
    );
    let (code, _, stderr) = launch(&["-n", "airflow", "--override", "resource-requirement", "--", "true"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.ends_with(&format!("{A_TYPO}\n")), "{stderr}");
    // both mistakes at once: the near name, and where it is
    let (code, _, stderr) = launch(&["--override", "resource-requirement", "--", "true"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.ends_with("PodOverride \"resource-requirement\" not found in namespace \"default\"; did you mean \"resource-requirements\" in namespace \"airflow\" (use -n airflow)?\n"),
        "{stderr}"
    );
    let (code, stdout, stderr) = launch(&["-n", "airflow", "--override", "resource-requirements", "--", "true"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("cpu: 500m"), "{stdout}");
}

/// `launch --dry-run` prints the webhook's warnings as render does, naming the task.
#[test]
fn launch_dry_run_prints_the_webhooks_warnings_on_stderr() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let image = "apiVersion: podtailor.dev/v1alpha1\nkind: PodOverride\nmetadata: {name: img}\nspec: {pod: {spec: {containers: [{name: base, image: 'other:2'}]}}}\n";
    std::fs::write(dir.path().join("img.yaml"), image).unwrap_or_else(|e| panic!("{e}"));
    let d = dir.path().display().to_string();
    let (code, stdout, stderr) = output(&mut podtailor(&[
        "launch",
        "--dry-run",
        "--template",
        "examples/template.yaml",
        "--overrides",
        &d,
        "--override",
        "img",
        "--image",
        "mine:1",
        "--",
        "true",
    ]));
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(
        stderr,
        "podtailor launch: warning: task \"task\": override \"img\" replaced spec.containers[name=base].image, which the pod set to mine:1 (now other:2)\n"
    );
    assert!(stdout.contains("image: other:2"), "{stdout}");
}

/// `launch --dry-run --template` alone, like `render --template`: the template without overrides.
#[test]
fn launch_dry_run_needs_no_overrides_for_the_template_alone() {
    let (code, stdout, stderr) =
        output(&mut podtailor(&["launch", "--dry-run", "--template", "examples/template.yaml", "--", "true"]));
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("# task task: the pod the webhook would make (namespace default)"), "{stdout}");
    assert!(stdout.contains("tier: airflow"), "{stdout}");
}

#[test]
fn render_says_where_the_override_is_and_what_was_meant() {
    let pod = |names: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: p, annotations: {{podtailor.dev/override: {names}}}}}\nspec: {{containers: [{{name: base}}]}}\n"
        )
    };
    let args = examples(&["-"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = render(&args, Some(&pod("resource-requirements")));
    assert_error(&out, &[NOT_IN_DEFAULT]);
    let args = examples(&["-n", "airflow", "-"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_error(&render(&args, Some(&pod("resource-requirement"))), &[A_TYPO]);
}

#[test]
fn render_needs_no_overrides_for_the_template_alone() {
    let pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: p, annotations: {podtailor.dev/override: ''}}\nspec: {containers: [{name: base}]}\n";
    let out = render(&["--template", "examples/template.yaml", "-o", "json", "-"], Some(pod));
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let desired: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(desired["metadata"]["labels"]["tier"], "airflow");
    assert_eq!(desired["spec"]["restartPolicy"], "Never");
    // an override named with no directory is simply not found
    let named = pod.replace("override: ''", "override: resource-requirements");
    assert_error(
        &render(&["--template", "examples/template.yaml", "-"], Some(&named)),
        &["PodOverride \"resource-requirements\" not found in namespace \"default\""],
    );
}

#[test]
fn render_prints_the_webhooks_warnings_on_stderr() {
    let pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: p, annotations: {podtailor.dev/override: o}}\nspec: {containers: [{name: base, resources: {limits: {cpu: '2'}}}]}\n";
    let out = scenario(TEMPLATE, &[("o.yaml", &over("{resources: {limits: {cpu: 1}}}"))], pod);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(
        stderr,
        "podtailor render: warning: override \"o\" replaced spec.containers[name=base].resources.limits.cpu, which the pod set to 2 (now 1)\n"
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("cpu: \"1\""));
}

#[test]
fn render_names_the_variable_an_env_secret_is_exposed_as() {
    let pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: p, annotations: {podtailor.dev/override: o}}\nspec: {containers: [{name: base}]}\n";
    let o = over("{secrets: [{deployType: env, deployTarget: my_token, secret: api, key: token}]}");
    let out = scenario(TEMPLATE, &[("o.yaml", &o)], pod);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(
        stderr,
        "podtailor render: warning: override \"o\": spec.secrets[0].deployTarget: \"my_token\" is exposed as MY_TOKEN (env targets are upper-cased, as Airflow's Secret does)\n"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("name: MY_TOKEN") && !stdout.contains("my_token"), "{stdout}");
}

#[test]
fn an_overrides_directory_keeps_its_kustomization_and_names_its_subdirectories() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    for f in ["resource-requirements.yaml", "secret-env.yaml"] {
        std::fs::copy(common::examples().join("overrides").join(f), dir.path().join(f))
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let kustomization = "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: [resource-requirements.yaml, secret-env.yaml]\n";
    std::fs::write(dir.path().join("kustomization.yaml"), kustomization).unwrap_or_else(|e| panic!("{e}"));
    let d = dir.path().display().to_string();
    let render_pod = || {
        output(&mut podtailor(&[
            "render",
            "--template",
            "examples/template.yaml",
            "--overrides",
            &d,
            "examples/pod.yaml",
        ]))
    };
    let (code, stdout, stderr) = render_pod();
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(stderr, "", "a kustomization.yaml is skipped without a warning");
    assert!(stdout.contains("MY_SECRET"));
    std::fs::create_dir(dir.path().join("prod")).unwrap_or_else(|e| panic!("{e}"));
    let (code, _, stderr) = render_pod();
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(
        stderr,
        format!(
            "podtailor render: warning: {d}: subdirectories are not read (only the directory's own *.yaml, *.yml and *.json files, as with kubectl apply -f without -R): {}\n",
            dir.path().join("prod").display()
        )
    );
}

#[test]
fn a_template_that_is_not_a_manifest_says_what_a_template_is() {
    assert_error(
        &scenario("hello world\n", &[], POD),
        &[
            "podtailor render: --template ",
            "template.yaml: is not a Pod manifest: expected `apiVersion: v1` and `kind: Pod` (the platform's worker pod), it is the text \"hello world\"",
        ],
    );
}

#[test]
fn an_override_file_that_is_not_a_manifest_says_what_an_override_is() {
    assert_error(
        &scenario(TEMPLATE, &[("o.yaml", "hello world\n")], POD),
        &[
            "podtailor render: --overrides ",
            "o.yaml: is not a PodOverride manifest: expected `apiVersion: podtailor.dev/v1alpha1` and `kind: PodOverride`, it is the text \"hello world\"",
        ],
    );
}

/// render and launch --dry-run name the flag of a file they cannot read, once, as serve does.
#[test]
fn render_and_launch_name_the_flag_of_a_missing_file_once() {
    let (code, _, stderr) = output(&mut podtailor(&[
        "render",
        "--template",
        "examples/template.yaml",
        "--overrides",
        "examples/nope",
        "examples/pod.yaml",
    ]));
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(stderr, "podtailor render: --overrides examples/nope: No such file or directory (os error 2)\n");
    let (code, _, stderr) =
        output(&mut podtailor(&["render", "--template", "examples/nope.yaml", "examples/pod.yaml"]));
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(stderr, "podtailor render: --template examples/nope.yaml: No such file or directory (os error 2)\n");
    let (code, _, stderr) = output(&mut podtailor(&[
        "launch",
        "--dry-run",
        "--template",
        "examples/template.yaml",
        "--overrides",
        "examples/nope",
        "--",
        "true",
    ]));
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(stderr, "podtailor launch: --overrides examples/nope: No such file or directory (os error 2)\n");
}

#[test]
fn launch_says_the_command_goes_after_the_double_dash() {
    let (code, _, stderr) = output(&mut podtailor(&["launch", "--dry-run", "sh", "-c", "true"]));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("-- sh -c true"), "{stderr}");
}

/// `serve` with certificates made for the test, in `dir`, and `args`.
fn serve_in(dir: &Path, args: &[&str]) -> (Option<i32>, String) {
    let cert = dir.join("tls.crt").display().to_string();
    let key = dir.join("tls.key").display().to_string();
    let mut cmd = podtailor(&["serve", "--template", "examples/template.yaml", "--tls-cert", &cert, "--tls-key", &key]);
    cmd.args(args);
    let (code, _, stderr) = output(&mut cmd);
    (code, stderr)
}

fn certificates(dir: &Path) {
    let (cert, key, _) = common::Pki::new().leaf("podtailor");
    std::fs::write(dir.join("tls.crt"), cert).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(dir.join("tls.key"), key).unwrap_or_else(|e| panic!("{e}"));
}

const FREE: [&str; 4] = ["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"];

#[test]
fn serve_names_the_flag_of_a_missing_file_once() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (code, stderr) = serve_in(dir.path(), &[&["--overrides", "examples/overrides"][..], &FREE].concat());
    let cert = dir.path().join("tls.crt").display().to_string();
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(
        stderr,
        format!(
            "podtailor serve: --tls-cert {cert}: No such file or directory (os error 2) (`make certs` writes a development certificate and key under certs/)\n"
        )
    );
    certificates(dir.path());
    let (code, stderr) = serve_in(dir.path(), &[&["--overrides", "examples/nope"][..], &FREE].concat());
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(stderr, "podtailor serve: --overrides examples/nope: No such file or directory (os error 2)\n");
}

#[test]
fn serve_says_a_key_does_not_belong_to_its_certificate() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    certificates(dir.path());
    let (_, other_key, _) = common::Pki::new().leaf("other");
    std::fs::write(dir.path().join("tls.key"), other_key).unwrap_or_else(|e| panic!("{e}"));
    let (code, stderr) = serve_in(dir.path(), &[&["--overrides", "examples/overrides"][..], &FREE].concat());
    let p = |f: &str| dir.path().join(f).display().to_string();
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(
        stderr,
        format!(
            "podtailor serve: --tls-key {}: this private key does not belong to the certificate {}: their public keys differ\n",
            p("tls.key"),
            p("tls.crt")
        )
    );
}

#[test]
fn serve_on_a_port_in_use_names_the_flag_to_change() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    certificates(dir.path());
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let addr = taken.local_addr().unwrap_or_else(|e| panic!("{e}")).to_string();
    for (flag, other) in [("--listen", "--admin-listen"), ("--admin-listen", "--listen")] {
        let (code, stderr) =
            serve_in(dir.path(), &["--overrides", "examples/overrides", flag, &addr, other, "127.0.0.1:0"]);
        assert_eq!(code, Some(1), "{stderr}");
        assert!(stderr.starts_with(&format!("podtailor serve: {flag} {addr}: cannot listen: ")), "{stderr}");
        assert!(
            stderr.ends_with(&format!(
                "(another process listens there: stop it, or choose another address with {flag})\n"
            )),
            "{stderr}"
        );
    }
}

#[test]
fn serve_with_a_port_alone_gives_an_example_address() {
    let (code, _, stderr) = output(&mut podtailor(&["serve", "--listen", "8443"]));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("\"8443\" is not an address and port: expected IP:PORT, like 127.0.0.1:8443 (this machine only) or 0.0.0.0:8443 (every interface)"),
        "{stderr}"
    );
}

/// An API server that cannot be reached: the first retry already names its address.
#[test]
fn launch_names_the_api_server_it_cannot_reach() {
    use std::io::BufRead;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let port = closed.local_addr().unwrap_or_else(|e| panic!("{e}")).port();
    drop(closed);
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let kubeconfig = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {{server: 'http://127.0.0.1:{port}'}}\nusers:\n- name: u\n  user: {{}}\ncontexts:\n- name: x\n  context: {{cluster: c, user: u}}\ncurrent-context: x\n"
    );
    std::fs::write(dir.path().join("config"), kubeconfig).unwrap_or_else(|e| panic!("{e}"));
    let mut child = podtailor(&["launch", "--", "true"])
        .env("KUBECONFIG", dir.path().join("config"))
        .env("HOME", dir.path())
        .env_remove("KUBERNETES_SERVICE_HOST")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn: {e}"));
    let mut first = String::new();
    if let Some(stderr) = child.stderr.take() {
        std::io::BufReader::new(stderr).read_line(&mut first).unwrap_or_else(|e| panic!("{e}"));
    }
    child.kill().unwrap_or_else(|e| panic!("{e}"));
    let _ = child.wait();
    let want = format!("creating the pod in namespace \"default\" on http://127.0.0.1:{port}/: ");
    assert!(first.contains(&want), "{first}");
    assert!(first.contains("retrying in 0.5s (attempt 2 of 6)"), "{first}");
}

/// `serve --cluster` with an API server that cannot be reached: it serves (the last known set,
/// none yet) and each failed watch says which API server it could not reach.
#[test]
fn serve_cluster_names_the_api_server_it_cannot_reach() {
    use std::io::BufRead;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let port = closed.local_addr().unwrap_or_else(|e| panic!("{e}")).port();
    drop(closed);
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    certificates(dir.path());
    let kubeconfig = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {{server: 'http://127.0.0.1:{port}'}}\nusers:\n- name: u\n  user: {{}}\ncontexts:\n- name: x\n  context: {{cluster: c, user: u}}\ncurrent-context: x\n"
    );
    std::fs::write(dir.path().join("config"), kubeconfig).unwrap_or_else(|e| panic!("{e}"));
    let cert = dir.path().join("tls.crt").display().to_string();
    let key = dir.path().join("tls.key").display().to_string();
    let mut child = podtailor(&["serve", "--cluster", "--template", "examples/template.yaml"])
        .args(["--tls-cert", &cert, "--tls-key", &key])
        .args(FREE)
        .env("KUBECONFIG", dir.path().join("config"))
        .env("HOME", dir.path())
        .env_remove("KUBERNETES_SERVICE_HOST")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn: {e}"));
    let mut failed = None;
    if let Some(stderr) = child.stderr.take() {
        // the watch retries about once a second: its first failure comes within a few lines
        for line in std::io::BufReader::new(stderr).lines().take(20) {
            let line = line.unwrap_or_else(|e| panic!("{e}"));
            if line.contains("watching PodOverrides failed") {
                failed = Some(line);
                break;
            }
        }
    }
    child.kill().unwrap_or_else(|e| panic!("{e}"));
    let _ = child.wait();
    let failed = failed.unwrap_or_else(|| panic!("no failed watch logged"));
    assert!(failed.contains(&format!("cluster{{server=\"http://127.0.0.1:{port}/\"}}")), "{failed}");
}

/// The template written once for every release is, in the namespace of a release, the
/// release's own template: the same pod, the same applied-marker.
#[test]
fn the_template_for_every_release_expands_the_namespace() {
    let pod = std::fs::read_to_string(common::repo().join("examples/pod.yaml")).unwrap_or_else(|e| panic!("{e}"));
    let pod = pod.replace("namespace: airflow", "namespace: infrared-photon-7780");
    let overrides =
        pod.replace("podtailor.dev/override: resource-requirements,secret-env", "podtailor.dev/override: \"\"");
    let fixed = render(&["--template", "examples/template.yaml", "-"], Some(&overrides));
    let every = render(&["--template", "examples/template-every-release.yaml", "-"], Some(&overrides));
    assert_eq!(every.status.code(), Some(0), "{}", String::from_utf8_lossy(&every.stderr));
    assert_eq!(String::from_utf8_lossy(&every.stdout), String::from_utf8_lossy(&fixed.stdout));
    // another namespace, another release, another marker
    let other = render(
        &["--template", "examples/template-every-release.yaml", "-n", "team-b", "-o", "json", "-"],
        Some(&overrides.replace("  namespace: infrared-photon-7780\n", "")),
    );
    assert_eq!(other.status.code(), Some(0), "{}", String::from_utf8_lossy(&other.stderr));
    let desired: Value = serde_json::from_slice(&other.stdout).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(desired["metadata"]["labels"]["release"], "team-b");
    assert_eq!(desired["spec"]["serviceAccountName"], "team-b-worker");
    assert_eq!(desired["spec"]["containers"][0]["envFrom"][0]["secretRef"]["name"], "team-b-env");
    // without a namespace, it is refused with what to do
    let unknown = render(
        &["--template", "examples/template-every-release.yaml", "-"],
        Some(&overrides.replace("  namespace: infrared-photon-7780\n", "")),
    );
    assert_eq!(unknown.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&unknown.stderr);
    assert!(stderr.contains("the pod's namespace is not known, and the template expands {{namespace}} (metadata.labels.release): give it with -n NS"), "{stderr}");
}

/// A namespace's own PodTemplate replaces the template for its pods, and the marker names it.
#[test]
fn a_namespace_template_replaces_the_template_in_its_namespace() {
    let pod = "apiVersion: v1\nkind: Pod\nmetadata: {generateName: t-, annotations: {podtailor.dev/override: ''}}\nspec: {containers: [{name: base}]}\n";
    let args = |ns: &'static str| {
        vec![
            "--template",
            "examples/template-every-release.yaml",
            "--namespace-templates",
            "examples/podtemplates",
            "-n",
            ns,
            "-o",
            "json",
            "-",
        ]
    };
    let own = render(&args("stellar-nebula-2280"), Some(pod));
    assert_eq!(own.status.code(), Some(0), "{}", String::from_utf8_lossy(&own.stderr));
    let own: Value = serde_json::from_slice(&own.stdout).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(own["spec"]["containers"][0]["image"], "quay.io/astronomer/ap-airflow:2.9.3");
    assert!(own["spec"]["volumes"].is_null(), "not merged with the cluster's template: {own}");
    let marker = own["metadata"]["annotations"]["podtailor.dev/applied"].as_str().unwrap_or_default();
    assert!(marker.starts_with("overrides=; podtemplate=stellar-nebula-2280/podtailor; config=sha256:"), "{marker}");
    let other = render(&args("airflow"), Some(pod));
    let other: Value = serde_json::from_slice(&other.stdout).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(other["spec"]["containers"][0]["image"], "quay.io/astronomer/ap-airflow:2.10.5");
    assert_eq!(other["metadata"]["labels"]["release"], "airflow");
    // a bad placeholder is a load error naming the file and the field
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let bad = dir.path().join("t.yaml");
    std::fs::write(
        &bad,
        "apiVersion: v1\nkind: Pod\nmetadata: {labels: {release: '{{release}}'}}\nspec: {containers: [{name: base}]}\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let out = render(&["--template", &bad.display().to_string(), "-n", "a", "-"], Some(pod));
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--template ")
            && stderr.contains("t.yaml: metadata.labels.release: \"{{release}}\": unknown placeholder {{release}}"),
        "{stderr}"
    );
}

// --- `podtailor policy`: the template and the overrides as admission policies -------------

/// The documents `podtailor policy` printed, each read back as JSON values.
fn policy_documents(stdout: &str) -> Vec<Value> {
    use serde::Deserialize;
    serde_yaml_ng::Deserializer::from_str(stdout)
        .map(|doc| Value::deserialize(doc).unwrap_or_else(|e| panic!("{e}\n{stdout}")))
        .collect()
}

const POLICY_KINDS: [&str; 4] = [
    "MutatingAdmissionPolicy",
    "MutatingAdmissionPolicyBinding",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
];

#[test]
fn policy_prints_the_four_objects_for_the_examples() {
    let (code, stdout, stderr) = output(&mut podtailor(&[
        "policy",
        "--template",
        "examples/template.yaml",
        "--overrides",
        "examples/overrides",
    ]));
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(stderr, "");
    let docs = policy_documents(&stdout);
    let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap_or_default()).collect();
    assert_eq!(kinds, POLICY_KINDS);
    for doc in &docs {
        assert_eq!(doc["apiVersion"], "admissionregistration.k8s.io/v1", "{doc}");
        assert_eq!(doc["metadata"]["name"], "podtailor", "{doc}");
    }
    let mutating = &docs[0]["spec"];
    assert_eq!(mutating["reinvocationPolicy"], "Never");
    let conditions = mutating["matchConditions"].as_array().cloned().unwrap_or_default();
    assert!(!conditions.is_empty(), "no matchConditions: {mutating}");
    assert!(
        conditions.iter().all(|c| c["expression"].as_str().is_some_and(|e| e.contains("'podtailor.dev/override'"))),
        "every matchCondition tests the opt-in annotation: {conditions:?}"
    );
    let mutations = mutating["mutations"].as_array().cloned().unwrap_or_default();
    assert!(!mutations.is_empty() && mutations.iter().all(|m| m["patchType"] == "JSONPatch"), "{mutations:?}");
    // the bindings bind their own policy
    assert_eq!(docs[1]["spec"]["policyName"], "podtailor");
    assert_eq!(docs[3]["spec"]["policyName"], "podtailor");
}

#[test]
fn policy_names_all_four_objects_after_name() {
    let (code, stdout, stderr) = output(&mut podtailor(&[
        "policy",
        "--template",
        "examples/template.yaml",
        "--overrides",
        "examples/overrides",
        "--name",
        "other",
    ]));
    assert_eq!(code, Some(0), "{stderr}");
    let docs = policy_documents(&stdout);
    assert_eq!(docs.len(), 4);
    for doc in &docs {
        assert_eq!(doc["metadata"]["name"], "other", "{doc}");
    }
    assert_eq!(docs[1]["spec"]["policyName"], "other");
    assert_eq!(docs[3]["spec"]["policyName"], "other");
}

/// A refusal: exit 1, one line on stderr (no backtrace, even when one is asked for), nothing on
/// stdout, naming what is refused.
fn assert_policy_refusal(out: (Option<i32>, String, String), wants: &[&str]) {
    let (code, stdout, stderr) = out;
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line expected: {stderr}");
    assert!(stderr.starts_with("podtailor policy: "), "{stderr}");
    assert!(!stderr.contains("panicked") && !stderr.contains("backtrace"), "{stderr}");
    for want in wants {
        assert!(stderr.contains(want), "{want:?} not in: {stderr}");
    }
    assert_eq!(stdout, "");
}

#[test]
fn policy_refuses_a_template_with_a_priority_class() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let template = dir.path().join("template.yaml");
    std::fs::write(
        &template,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: placeholder}\nspec: {priorityClassName: high, containers: [{name: base, image: i:1}]}\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let t = template.display().to_string();
    let out = output(podtailor(&["policy", "--template", &t]).env("RUST_BACKTRACE", "1"));
    assert_policy_refusal(out, &["podtailor policy: template: spec.priorityClassName: "]);
}

#[test]
fn policy_refuses_an_override_with_tolerations() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(
        dir.path().join("o.yaml"),
        over("{pod: {spec: {tolerations: [{key: dedicated, operator: Exists, effect: NoSchedule}]}}}"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let d = dir.path().display().to_string();
    let out = output(
        podtailor(&["policy", "--template", "examples/template.yaml", "--overrides", &d]).env("RUST_BACKTRACE", "1"),
    );
    assert_policy_refusal(out, &["PodOverride \"o\" in namespace \"ns\": spec.tolerations: "]);
}

#[test]
fn policy_names_a_template_it_cannot_read() {
    let out =
        output(&mut podtailor(&["policy", "--template", "examples/nope.yaml", "--overrides", "examples/overrides"]));
    assert_policy_refusal(out, &["--template examples/nope.yaml: No such file or directory"]);
    let out =
        output(&mut podtailor(&["policy", "--template", "examples/template.yaml", "--overrides", "examples/nope"]));
    assert_policy_refusal(out, &["--overrides examples/nope: No such file or directory"]);
    // without --template at all: a usage error naming the flag
    let (code, _, stderr) = output(&mut podtailor(&["policy", "--overrides", "examples/overrides"]));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--template <FILE>"), "{stderr}");
}

#[test]
fn policy_for_some_namespaces_compiles_their_overrides_and_matches_their_pods_alone() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    for (file, meta) in [
        ("a.yaml", "{name: mine, namespace: team-a}"),
        ("b.yaml", "{name: theirs, namespace: team-b}"),
        ("all.yaml", "{name: everyone}"),
    ] {
        let text = format!(
            "apiVersion: podtailor.dev/v1alpha1\nkind: PodOverride\nmetadata: {meta}\nspec: {{pod: {{spec: {{nodeSelector: {{pool: p}}}}}}}}\n"
        );
        std::fs::write(dir.path().join(file), text).unwrap_or_else(|e| panic!("{e}"));
    }
    let d = dir.path().display().to_string();
    let (code, stdout, stderr) = output(&mut podtailor(&[
        "policy",
        "--template",
        "examples/template.yaml",
        "--overrides",
        &d,
        "--namespace",
        "team-a",
    ]));
    assert_eq!(code, Some(0), "{stderr}");
    let docs = policy_documents(&stdout);
    let known = docs[2]["spec"]["validations"][0]["expression"].as_str().unwrap_or_default();
    assert!(known.contains("\"mine\"") && known.contains("\"everyone\""), "{known}");
    assert!(!known.contains("\"theirs\"") && !stdout.contains("team-b"), "team-b's override compiled: {known}");
    let only = json!({"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["team-a"]});
    for doc in [&docs[0], &docs[2]] {
        let selector = &doc["spec"]["matchConstraints"]["namespaceSelector"]["matchExpressions"];
        assert!(selector.as_array().is_some_and(|l| l.contains(&only)), "{selector}");
    }
    // without --namespace: every namespace's override, no In
    let (code, stdout, stderr) =
        output(&mut podtailor(&["policy", "--template", "examples/template.yaml", "--overrides", &d]));
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("theirs") && !stdout.contains("operator: In"), "{stdout}");
    // a name that cannot be a namespace is a usage error
    let (code, _, stderr) = output(&mut podtailor(&["policy", "--template", "examples/template.yaml", "-n", "Team_A"]));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("'Team_A'") && stderr.contains("not a namespace name"), "{stderr}");
}

#[test]
fn policy_cluster_without_a_cluster_says_so_and_takes_no_overrides_dir() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let missing = dir.path().join("no-kubeconfig");
    let out = output(
        podtailor(&["policy", "--template", "examples/template.yaml", "--cluster"])
            .env("KUBECONFIG", &missing)
            .env("HOME", dir.path())
            .env_remove("KUBERNETES_SERVICE_HOST"),
    );
    assert_policy_refusal(out, &["podtailor policy: --cluster: cannot configure a Kubernetes client"]);
    let (code, _, stderr) = output(&mut podtailor(&[
        "policy",
        "--template",
        "examples/template.yaml",
        "--cluster",
        "--overrides",
        "examples/overrides",
    ]));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("cannot be used with"), "{stderr}");
}
