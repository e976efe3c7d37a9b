//! podtailor fits worker pods to a platform's default template and per-task PodOverrides at
//! admission. See DESIGN.md for the semantics.

pub mod crd;
mod idle;
pub mod input;
pub mod launch;
pub mod merge;
pub mod mutate;
pub mod podschema;
pub mod policy;
pub mod render;
pub mod serve;
pub mod store;
pub mod tls;
pub mod validate;
pub mod webhook;
pub mod yaml;

use std::path::PathBuf;

/// What can go wrong outside the merge itself.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file that could not be read. The I/O error is part of the message, not a source
    /// (a chain of causes would print it twice).
    #[error("{}: {error}", path.display())]
    Read { path: PathBuf, error: std::io::Error },
    /// A file whose content is wrong: `message` names the object and the field.
    #[error("{}: {message}", path.display())]
    Config { path: PathBuf, message: String },
    /// An input (a pod or an AdmissionReview) that cannot be used.
    #[error("{source_name}: {message}")]
    Input { source_name: String, message: String },
    /// A problem with what a command-line flag names: the flag first (`--overrides DIR: ...`),
    /// so a newcomer knows which argument to change.
    #[error("{flag} {error}")]
    Flag { flag: &'static str, error: Box<Error> },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
