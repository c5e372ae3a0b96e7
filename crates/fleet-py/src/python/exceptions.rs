//! The exception tree of the contract, and raising a [`Failure`] as one of them.

use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;

use crate::errors::{Failure, Kind};

create_exception!(
    blendfleet_py,
    FleetError,
    PyException,
    "Base of every error the module raises. `code` is the manager's error code or None."
);
create_exception!(
    blendfleet_py,
    ConnectionFailed,
    FleetError,
    "The manager cannot be reached: refused, timed out, or the TLS handshake failed."
);
create_exception!(
    blendfleet_py,
    PinMismatch,
    ConnectionFailed,
    "The manager's certificate does not chain to the pinned CA fingerprint."
);
create_exception!(
    blendfleet_py,
    AuthenticationFailed,
    FleetError,
    "The manager refused the user name or password (401)."
);
create_exception!(
    blendfleet_py,
    RateLimited,
    FleetError,
    "Too many failed attempts from this address (429); `retry_after` is in seconds or None."
);
create_exception!(
    blendfleet_py,
    NotFound,
    FleetError,
    "Unknown job, frame or agent (404)."
);
create_exception!(
    blendfleet_py,
    InvalidRequest,
    FleetError,
    "The request was refused as invalid (400 and other 4xx); the message is the manager's."
);
create_exception!(
    blendfleet_py,
    ServerError,
    FleetError,
    "Anything else from the manager: 5xx or an answer this module does not understand."
);

/// Adds the classes to the module, with `code = None` and `retry_after = None` as class
/// attributes so that every instance has them.
pub fn register(module: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = module.py();
    let base = py.get_type::<FleetError>();
    base.setattr("code", py.None())?;
    module.add("FleetError", base)?;
    module.add("ConnectionFailed", py.get_type::<ConnectionFailed>())?;
    module.add("PinMismatch", py.get_type::<PinMismatch>())?;
    module.add(
        "AuthenticationFailed",
        py.get_type::<AuthenticationFailed>(),
    )?;
    let limited = py.get_type::<RateLimited>();
    limited.setattr("retry_after", py.None())?;
    module.add("RateLimited", limited)?;
    module.add("NotFound", py.get_type::<NotFound>())?;
    module.add("InvalidRequest", py.get_type::<InvalidRequest>())?;
    module.add("ServerError", py.get_type::<ServerError>())?;
    Ok(())
}

/// The exception for `failure`, with `code` (and `retry_after`) set on the instance.
pub fn raise(py: Python<'_>, failure: &Failure) -> PyErr {
    let message = failure.message.clone();
    let error = match failure.kind {
        Kind::Fleet => FleetError::new_err(message),
        Kind::ConnectionFailed => ConnectionFailed::new_err(message),
        Kind::PinMismatch => PinMismatch::new_err(message),
        Kind::AuthenticationFailed => AuthenticationFailed::new_err(message),
        Kind::RateLimited => RateLimited::new_err(message),
        Kind::NotFound => NotFound::new_err(message),
        Kind::InvalidRequest => InvalidRequest::new_err(message),
        Kind::ServerError => ServerError::new_err(message),
    };
    let value = error.value(py);
    let attributes =
        value
            .setattr("code", failure.code.clone())
            .and_then(|()| match failure.retry_after {
                Some(seconds) => value.setattr("retry_after", seconds),
                None => Ok(()),
            });
    match attributes {
        Ok(()) => error,
        Err(other) => other,
    }
}

/// A [`FleetError`] for a failure of the module itself.
pub fn fleet_error(message: impl Into<String>) -> PyErr {
    FleetError::new_err(message.into())
}
