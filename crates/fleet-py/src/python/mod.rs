//! The Python module itself.

mod client;
mod convert;
mod exceptions;
mod runtime;

use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::errors::Failure;
use client::{Client, UploadReport};

/// The content hash of a file, `sha256:<hex>`. Reads the file without holding the GIL.
#[pyfunction]
fn hash_file(py: Python<'_>, path: std::path::PathBuf) -> PyResult<String> {
    let hash = py
        .detach(move || fleet_client::hash_file(&path))
        .map_err(|error| exceptions::raise(py, &Failure::from(&error)))?;
    Ok(format!("sha256:{hash}"))
}

/// `{"url", "user", "ca_fingerprint"}` of a connection string
/// (`https://USER@HOST:PORT/#ca=sha256:…`).
#[pyfunction]
fn parse_connection_string<'py>(py: Python<'py>, text: &str) -> PyResult<Bound<'py, PyDict>> {
    let settings = client::parse_connection_string(text)
        .map_err(|error| exceptions::raise(py, &Failure::from(&error)))?;
    let dict = PyDict::new(py);
    dict.set_item("url", settings.url)?;
    dict.set_item("user", settings.user)?;
    dict.set_item("ca_fingerprint", settings.ca_fingerprint.to_string())?;
    Ok(dict)
}

#[pymodule]
fn blendfleet_py(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add("__version__", env!("CARGO_PKG_VERSION"))?;
    exceptions::register(module)?;
    module.add_class::<Client>()?;
    module.add_class::<UploadReport>()?;
    module.add_function(wrap_pyfunction!(hash_file, module)?)?;
    module.add_function(wrap_pyfunction!(parse_connection_string, module)?)?;
    Ok(())
}
