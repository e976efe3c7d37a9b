//! The YAML podtailor prints: `render -o yaml`, `launch --dry-run`, `crd`.
//!
//! Its readers include YAML 1.1 ones (PyYAML, which Airflow uses; Go's yaml.v2), which take a
//! plain `2026-11-24` for a date, `yes`/`no`/`on`/`off`/`y`/`n` for booleans, `0755` for an
//! octal number and `12:30` for a base-60 one. serde-saphyr quotes every such string (its
//! default, `yaml_12: false`), in keys as in values, so each one reads back as the string it is.

use serde::Serialize;

/// `value` as one YAML document.
pub fn to_string<T: Serialize>(value: &T) -> Result<String, serde_saphyr::SerializeError> {
    let options = serde_saphyr::ser_options! {
        // a long single-line string stays on its line (no folded `>` block)
        folded_wrap_chars: usize::MAX,
    };
    serde_saphyr::to_string_with_options(value, options)
}

#[cfg(test)]
mod tests {
    use rstest::rstest;
    use serde_json::{Value, json};

    use super::to_string;

    /// Strings a YAML 1.1 reader resolves to another type when they are written plain.
    #[rstest]
    #[case::date("2026-11-24")]
    #[case::timestamp("2026-11-24T10:00:00Z")]
    #[case::yes("yes")]
    #[case::no("No")]
    #[case::on("on")]
    #[case::off("OFF")]
    #[case::y("y")]
    #[case::n("n")]
    #[case::octal("0755")]
    #[case::exponent("1e3")]
    #[case::hex("0x1F")]
    #[case::underscores("1_000")]
    #[case::tilde("~")]
    #[case::null("null")]
    #[case::inf(".inf")]
    #[case::nan(".NaN")]
    #[case::sexagesimal("12:30")]
    #[case::sexagesimal_float("190:20:30.15")]
    #[case::true_("True")]
    #[case::integer("42")]
    #[case::float("0.5")]
    #[case::merge("<<")]
    #[case::value("=")]
    #[case::empty("")]
    fn a_string_a_yaml_1_1_reader_would_retype_is_quoted(#[case] s: &str) {
        let text = to_string(&json!({"k": s, s: "v", "list": [s]})).unwrap_or_else(|e| panic!("{e}"));
        let quoted = [format!("\"{s}\""), format!("'{s}'")];
        for line in text.lines() {
            if line.contains(s) && !s.is_empty() {
                assert!(quoted.iter().any(|q| line.contains(q.as_str())), "{s:?} plain in {line:?}:\n{text}");
            }
        }
        let back: Value = serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, json!({"k": s, s: "v", "list": [s]}), "{text}");
    }

    #[test]
    fn plain_strings_stay_plain_and_long_lines_are_not_folded() {
        let long = "x ".repeat(60);
        let pod = json!({"metadata": {"name": "task-1", "labels": {"app.kubernetes.io/name": "worker"}},
            "spec": {"containers": [{"name": "base", "image": "apache/airflow:3.0.2",
                "args": ["airflow", "tasks", "run", long.trim_end()],
                "resources": {"requests": {"cpu": "500m", "memory": "1024Mi"}}, "ports": [{"containerPort": 8080}]}]}});
        let text = to_string(&pod).unwrap_or_else(|e| panic!("{e}"));
        for plain in [
            "name: task-1",
            "app.kubernetes.io/name: worker",
            "image: apache/airflow:3.0.2",
            "cpu: 500m",
            "memory: 1024Mi",
            "containerPort: 8080",
            "- airflow",
        ] {
            assert!(text.contains(plain), "{plain:?} not in:\n{text}");
        }
        assert!(text.contains(&format!("- {}\n", long.trim_end())), "{text}");
    }
}
