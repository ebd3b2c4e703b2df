//! Client errors as the exception classes of `nabustore.errors` (defined in Python, so they
//! can also be `FileNotFoundError`, `ValueError`, `TimeoutError` … and fsspec-based tools
//! handle them as they handle any filesystem's).

use nabu_client::ClientError;
use nabu_proto::ErrorCode;
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::PyType;

/// The `nabustore.errors` class for `error`.
fn class_name(error: &ClientError) -> &'static str {
    match error {
        ClientError::NotFound(_) => "NotFound",
        ClientError::Remote { code, .. } if *code == ErrorCode::NOT_FOUND => "NotFound",
        ClientError::Unavailable { .. }
        | ClientError::MetadataUnavailable { .. }
        | ClientError::Connection { .. } => "Unavailable",
        ClientError::Timeout { .. } => "Timeout",
        ClientError::NotDurable { .. } => "NotDurable",
        ClientError::Corrupt { .. } | ClientError::Format { .. } => "Corrupt",
        ClientError::InvalidArgument(_) => "InvalidArgument",
        ClientError::Remote { .. } | ClientError::Protocol { .. } | ClientError::Io { .. } => {
            "NabuError"
        }
    }
}

/// `error` as a Python exception carrying the client's message.
pub(crate) fn to_py(py: Python<'_>, error: &ClientError) -> PyErr {
    let message = error.to_string();
    let class = py
        .import("nabustore.errors")
        .and_then(|module| module.getattr(class_name(error)))
        .and_then(|class| Ok(class.cast_into::<PyType>()?));
    match class {
        Ok(class) => PyErr::from_type(class, message),
        // Only when the package is broken: still say what failed.
        Err(_) => PyRuntimeError::new_err(message),
    }
}

/// `nabustore.InvalidArgument` (a `ValueError`) saying `message`.
pub(crate) fn invalid_argument(message: impl Into<String>) -> PyErr {
    Python::attach(|py| to_py(py, &ClientError::InvalidArgument(message.into())))
}
