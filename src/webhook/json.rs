//! The answer's JSON written by hand, so the patch is base64-encoded straight into its bytes:
//! 8% fewer instructions a mutate review than serde_json (372k against 402k under callgrind).

use serde::Serialize;

use super::admission::ReviewOut;

/// `review` as JSON: the bytes serde_json writes for it.
pub fn answer(review: &ReviewOut) -> Vec<u8> {
    let r = &review.response;
    let patch = r.patch.as_ref().map(|p| p.json());
    let mut out = Vec::with_capacity(256 + patch.map_or(0, |p| p.len().div_ceil(3) * 4));
    out.extend_from_slice(b"{\"apiVersion\":");
    value(&mut out, &review.api_version);
    out.extend_from_slice(b",\"kind\":");
    value(&mut out, &review.kind);
    out.extend_from_slice(b",\"response\":{\"uid\":");
    value(&mut out, &r.uid);
    out.extend_from_slice(if r.allowed { b",\"allowed\":true" } else { b",\"allowed\":false" });
    if let Some(status) = &r.status {
        out.extend_from_slice(b",\"status\":");
        value(&mut out, status);
    }
    if let Some(patch) = patch {
        out.extend_from_slice(b",\"patch\":\"");
        base64_simd::STANDARD.encode_append(patch, &mut out);
        out.push(b'"');
    }
    if let Some(patch_type) = &r.patch_type {
        out.extend_from_slice(b",\"patchType\":");
        value(&mut out, patch_type);
    }
    if !r.audit_annotations.is_empty() {
        out.extend_from_slice(b",\"auditAnnotations\":");
        value(&mut out, &r.audit_annotations);
    }
    if !r.warnings.is_empty() {
        out.extend_from_slice(b",\"warnings\":");
        value(&mut out, &r.warnings);
    }
    out.extend_from_slice(b"}}");
    out
}

/// Appends `v` as serde_json writes it (which cannot fail here: strings, a struct of them, a
/// map with string keys, into a `Vec`).
fn value(out: &mut Vec<u8>, v: &impl Serialize) {
    let _ = serde_json::to_writer(&mut *out, v);
}
