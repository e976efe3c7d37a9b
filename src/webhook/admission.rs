//! AdmissionReview v1 on the wire, and the answer to one review.
//!
//! The request's object is kept as raw JSON: the merge engine works on values, never on
//! typed structs that would drop fields they do not know. It is read into a value only when
//! the review is one the webhook decides on, and only when it nests no deeper than
//! [`MAX_DEPTH`]: a parsed value costs about 400 bytes an object, so a 3 MiB body of small
//! deeply nested objects would cost far more memory than its size. The response is written as the API
//! server documents it: `patch` is a base64 string (kube-core's `AdmissionResponse` writes an
//! array of numbers instead, kube-rs issue 1781).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::merge::Want;
use crate::mutate::{Decision, decide};
use crate::store::Config;

pub const API_VERSION: &str = "admission.k8s.io/v1";

/// How deep a request's object may nest objects and arrays. The deepest a Pod or PodOverride
/// goes is about 15 (a managed field's `fieldsV1` of an env var's `secretKeyRef`); an object
/// deeper than this is refused before it is read.
pub const MAX_DEPTH: usize = 32;

/// The part of an incoming AdmissionReview that the webhook reads.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReviewIn {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    pub request: Option<RequestIn>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestIn {
    pub uid: String,
    #[serde(default)]
    pub kind: GroupVersionKind,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub operation: String,
    #[serde(default)]
    pub object: Option<Box<RawValue>>,
    #[serde(default)]
    pub dry_run: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
pub struct GroupVersionKind {
    #[serde(default)]
    pub group: String,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub kind: String,
}

/// An AdmissionReview answer.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ReviewOut {
    pub api_version: String,
    pub kind: String,
    pub response: ResponseOut,
}

#[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ResponseOut {
    pub uid: String,
    pub allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    /// The JSON patch, base64-encoded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patch: Option<EncodedPatch>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patch_type: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub audit_annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// A JSON patch as the answer carries it: the RFC 6902 text, written base64-encoded. The
/// answer's writer encodes it straight into the answer's bytes: no copy, and no scan for
/// characters to escape (base64 has none).
#[derive(Debug, PartialEq)]
pub struct EncodedPatch(Vec<u8>);

impl EncodedPatch {
    /// Holds `patch` (RFC 6902 JSON).
    pub fn new(patch: Vec<u8>) -> EncodedPatch {
        EncodedPatch(patch)
    }

    /// The patch's JSON text.
    pub fn json(&self) -> &[u8] {
        &self.0
    }

    /// The base64 text, as the answer carries it.
    pub fn base64(&self) -> String {
        base64_simd::STANDARD.encode_to_string(&self.0)
    }
}

impl Serialize for EncodedPatch {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.base64())
    }
}

impl<'de> Deserialize<'de> for EncodedPatch {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        base64_simd::STANDARD.decode_to_vec(text).map(EncodedPatch).map_err(serde::de::Error::custom)
    }
}

impl ReviewOut {
    /// The answer as JSON: the bytes serde_json writes for it, the patch encoded straight in.
    pub fn to_json(&self) -> Vec<u8> {
        super::json::answer(self)
    }
}

/// A `metav1.Status`, as much as a denial needs.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    pub status: String,
    pub code: u16,
    pub reason: String,
    pub message: String,
}

/// How a review ended, for metrics and logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Allowed with a patch.
    Patched,
    /// Allowed, nothing to change (not opted in, another kind or operation, already as desired).
    Unchanged,
    /// A pod that opted in and cannot be admitted.
    Denied,
    /// A request that cannot be read.
    Invalid,
    /// The webhook failed while answering (a panic, caught): not allowed.
    Failed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Patched => "patched",
            Outcome::Unchanged => "unchanged",
            Outcome::Denied => "denied",
            Outcome::Invalid => "invalid",
            Outcome::Failed => "error",
        }
    }
}

/// What the handler logs about a review.
#[derive(Debug, Default)]
pub struct Facts {
    pub uid: String,
    pub namespace: String,
    pub pod: String,
    pub operation: String,
    pub dry_run: bool,
}

/// An answer given before any decision (boxed: the rare path).
type Early = Box<(Outcome, ReviewOut)>;

/// The request of a review and its object, once the review is known to be one the webhook
/// decides on; otherwise the answer to give at once. `ours` says which kinds and operations
/// are the webhook's: the others are allowed untouched.
fn open(review: ReviewIn, facts: &mut Facts, ours: impl Fn(&RequestIn) -> bool) -> Result<(RequestIn, Value), Early> {
    let Some(mut request) = review.request else {
        return Err(Box::new((Outcome::Invalid, invalid(String::new(), 400, "the AdmissionReview has no request"))));
    };
    facts.uid = request.uid.clone();
    facts.operation = request.operation.clone();
    facts.dry_run = request.dry_run.unwrap_or(false);
    if review.api_version != API_VERSION || review.kind != "AdmissionReview" {
        let message = format!(
            "expected apiVersion {API_VERSION} kind AdmissionReview, got {:?} {:?}",
            review.api_version, review.kind
        );
        return Err(Box::new((Outcome::Invalid, invalid(request.uid, 400, &message))));
    }
    if !ours(&request) {
        return Err(Box::new((Outcome::Unchanged, allowed(request.uid))));
    }
    let Some(raw) = request.object.take() else {
        return Err(Box::new((Outcome::Invalid, invalid(request.uid, 400, "the request has no object"))));
    };
    if deeper_than(raw.get().as_bytes(), MAX_DEPTH) {
        let message = format!(
            "the object nests objects and arrays more than {MAX_DEPTH} deep, which no Pod or PodOverride does (refused unread)"
        );
        return Err(Box::new((Outcome::Invalid, invalid(request.uid, 400, &message))));
    }
    match serde_json::from_str::<Value>(raw.get()) {
        Ok(object) if object.is_object() => Ok((request, object)),
        _ => Err(Box::new((Outcome::Invalid, invalid(request.uid, 400, "the request has no object")))),
    }
}

/// Whether the JSON text `json` (already known to be valid) nests objects and arrays more
/// than `limit` deep: one pass over its bytes, jumping over the contents of strings with
/// memchr (most of a pod's bytes are in strings; byte by byte, this pass was a tenth of a
/// served review's instructions).
fn deeper_than(json: &[u8], limit: usize) -> bool {
    let (mut depth, mut at) = (0usize, 0usize);
    while let Some(&byte) = json.get(at) {
        match byte {
            b'"' => loop {
                // the next quote or backslash inside the string; a backslash skips what it escapes
                match memchr::memchr2(b'"', b'\\', json.get(at + 1..).unwrap_or_default()) {
                    Some(offset) if json[at + 1 + offset] == b'\\' => at += offset + 2,
                    Some(offset) => {
                        at += offset + 1;
                        break;
                    }
                    None => return false,
                }
            },
            b'{' | b'[' => {
                depth += 1;
                if depth > limit {
                    return true;
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
        at += 1;
    }
    false
}

/// The answer for a review that parsed (the mutating webhook).
pub fn review(config: &Config, review: ReviewIn, facts: &mut Facts) -> (Outcome, ReviewOut) {
    let is_pod_create = |r: &RequestIn| r.kind.group.is_empty() && r.kind.kind == "Pod" && r.operation == "CREATE";
    let (request, pod) = match open(review, facts, is_pod_create) {
        Ok(opened) => opened,
        Err(answer) => return *answer,
    };
    let meta = pod.get("metadata");
    let namespace = request
        .namespace
        .filter(|ns| !ns.is_empty())
        .or_else(|| meta.and_then(|m| m.get("namespace")).and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_else(|| "default".to_owned());
    facts.pod = request
        .name
        .filter(|n| !n.is_empty())
        .or_else(|| meta.and_then(|m| m.get("name")).and_then(Value::as_str).map(str::to_owned))
        .or_else(|| meta.and_then(|m| m.get("generateName")).and_then(Value::as_str).map(|g| format!("{g}*")))
        .unwrap_or_default();
    facts.namespace.clone_from(&namespace);
    let mut response = allowed(request.uid);
    let outcome = match decide(config, &namespace, &pod, Want::Json) {
        Ok(Decision::NotOptedIn) => Outcome::Unchanged,
        Ok(Decision::Mutated { outcome, overrides }) => {
            let applied = if overrides.is_empty() { "(template only)".to_owned() } else { overrides.join(",") };
            response.response.audit_annotations.insert("overrides".to_owned(), applied);
            response.response.warnings = outcome.warnings;
            match outcome.patch_json {
                Some(patch) if patch != b"[]" => {
                    response.response.patch = Some(EncodedPatch::new(patch));
                    response.response.patch_type = Some("JSONPatch".to_owned());
                    Outcome::Patched
                }
                _ => Outcome::Unchanged,
            }
        }
        Err(denial) => {
            response = refused(response.response.uid, 403, "Forbidden", denial.message);
            Outcome::Denied
        }
    };
    (outcome, response)
}

/// The answer for a review of a PodOverride (the validating webhook): a create or update of
/// an override that would fail at pod admission is denied, naming the field.
pub fn validate(review: ReviewIn, facts: &mut Facts) -> (Outcome, ReviewOut) {
    let is_override_write = |r: &RequestIn| {
        r.kind.group == "podtailor.dev"
            && r.kind.kind == "PodOverride"
            && matches!(r.operation.as_str(), "CREATE" | "UPDATE")
    };
    let (request, object) = match open(review, facts, is_override_write) {
        Ok(opened) => opened,
        Err(answer) => return *answer,
    };
    facts.namespace = request.namespace.unwrap_or_default();
    facts.pod = request.name.unwrap_or_default();
    let origin = format!("{}/{}", facts.namespace, facts.pod);
    match crate::store::files::parse_override(object, &origin) {
        Ok(loaded) => {
            let mut answer = allowed(request.uid);
            answer.response.warnings = crate::validate::override_warnings(loaded.r#override.spec())
                .into_iter()
                .map(|w| format!("podtailor: {w}"))
                .collect();
            (Outcome::Unchanged, answer)
        }
        Err(reason) => (Outcome::Denied, refused(request.uid, 422, "Invalid", format!("podtailor: {reason}"))),
    }
}

fn allowed(uid: String) -> ReviewOut {
    ReviewOut {
        api_version: API_VERSION.to_owned(),
        kind: "AdmissionReview".to_owned(),
        response: ResponseOut { uid, allowed: true, ..Default::default() },
    }
}

/// A refusal: not allowed, with a `metav1.Status` failure.
fn refused(uid: String, code: u16, reason: &str, message: String) -> ReviewOut {
    let mut out = allowed(uid);
    out.response.allowed = false;
    out.response.status = Some(Status { status: "Failure".into(), code, reason: reason.into(), message });
    out
}

/// The answer to a request that cannot be read: not allowed, with the HTTP status `code`, the
/// reason and the uid, when there is one.
pub fn invalid(uid: String, code: u16, message: &str) -> ReviewOut {
    let reason = match code {
        413 => "RequestEntityTooLarge",
        415 => "UnsupportedMediaType",
        500 => "InternalError",
        _ => "BadRequest",
    };
    refused(uid, code, reason, format!("podtailor: {message}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use serde_json::json;

    #[test]
    fn depth_counts_objects_and_arrays_but_not_what_strings_hold() {
        assert!(!deeper_than(br#"{"a":[{"b":1}]}"#, 3));
        assert!(deeper_than(br#"{"a":[{"b":[]}]}"#, 3));
        // closed levels are not counted again
        assert!(!deeper_than(br#"{"a":[1],"b":{"c":{}},"d":[[]]}"#, 3));
        // brackets, quotes and backslashes inside strings
        assert!(!deeper_than(br#"{"a":"{[{[\"{[","b\\":"\\"}"#, 1));
        assert!(deeper_than(br#"{"a\\":{"\"":{}}}"#, 2));
        assert!(!deeper_than(b"\"{{{{\"", 0));
        // an escaped backslash ends no string and escapes no quote
        assert!(deeper_than(br#"{"a":"x\\","b":[[]]}"#, 2));
        assert!(!deeper_than(br#"{"a":"x\\","b":[[]]}"#, 3));
        // a string that ends the text, and one cut short after a backslash
        assert!(!deeper_than(br#"[["a"]]"#, 2));
        assert!(!deeper_than(br#"["a\"#, 1));
        assert!(!deeper_than(br#"["a\"[["#, 1));
    }

    #[test]
    fn an_encoded_patch_is_a_base64_json_string_and_reads_back() {
        let bytes = br#"[{"op":"add","path":"/a","value":1}]"#;
        let encoded = EncodedPatch::new(bytes.to_vec());
        let expected = base64::engine::general_purpose::STANDARD.encode(bytes);
        assert_eq!(encoded.base64(), expected);
        let written = serde_json::to_string(&encoded).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(written, format!("\"{expected}\""));
        let read: EncodedPatch = serde_json::from_str(&written).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(read, encoded);
        assert!(serde_json::from_str::<EncodedPatch>("\"not base64!\"").is_err());
        // inside an answer, as the API server reads it
        let mut out = allowed("u".into());
        out.response.patch = Some(encoded);
        let answer: Value = serde_json::from_slice(&out.to_json()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(answer["response"]["patch"], json!(expected));
    }

    #[test]
    fn the_encoding_is_standard_base64_at_every_length() {
        // SIMD blocks and every remainder, padding included
        let bytes: Vec<u8> = (0..600u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        for len in 0..bytes.len() {
            let mut out = allowed("u".into());
            out.response.patch = Some(EncodedPatch::new(bytes[..len].to_vec()));
            let answer: Value = serde_json::from_slice(&out.to_json()).unwrap_or_else(|e| panic!("{e}"));
            let expected = base64::engine::general_purpose::STANDARD.encode(&bytes[..len]);
            assert_eq!(answer["response"]["patch"], json!(expected), "length {len}");
            assert_eq!(out.response.patch.map(|p| p.base64()), Some(expected), "length {len}");
        }
    }

    #[test]
    fn answers_are_written_as_serde_json_writes_them() {
        let odd = "quote \" backslash \\ newline \n tab \t bell \u{7} nul \u{0} del \u{7f} é ✓ 🦀";
        let mut patched = allowed("b7a3c1f0-5d2e-4c8a-9f61-2e4b7d9a1c33".into());
        patched.response.patch = Some(EncodedPatch::new(br#"[{"op":"add","path":"/x","value":"\u0007"}]"#.to_vec()));
        patched.response.patch_type = Some("JSONPatch".into());
        patched.response.audit_annotations.insert("overrides".into(), "a,b".into());
        patched.response.audit_annotations.insert(odd.into(), odd.into());
        patched.response.warnings = vec!["one".into(), odd.into()];
        let answers = [
            allowed(String::new()),
            allowed(odd.into()),
            patched,
            invalid(String::new(), 400, "the AdmissionReview has no request"),
            invalid("u".into(), 413, odd),
            refused("u".into(), 403, "Forbidden", format!("podtailor: {odd}")),
            ReviewOut { api_version: odd.into(), kind: String::new(), response: ResponseOut::default() },
        ];
        for answer in &answers {
            let expected = serde_json::to_vec(answer).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(String::from_utf8_lossy(&answer.to_json()), String::from_utf8_lossy(&expected), "{answer:?}");
            let read: ReviewOut = serde_json::from_slice(&answer.to_json()).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(&read, answer);
        }
    }
}
