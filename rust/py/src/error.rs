//! Maps the core's one error type onto the exception hierarchy defined in
//! Python (`fstore/errors.py`), so Python callers see a single hierarchy.

use std::io;
use std::path::Path;

use fstore_core::Error as CoreError;
use pyo3::PyErr;
use pyo3::exceptions::{PyFileNotFoundError, PyIsADirectoryError, PyOSError, PyPermissionError};

pyo3::import_exception!(fstore.errors, FstoreError);
pyo3::import_exception!(fstore.errors, InvalidArgumentError);
pyo3::import_exception!(fstore.errors, AlreadyFinalizedError);
pyo3::import_exception!(fstore.errors, WrongKeyError);
pyo3::import_exception!(fstore.errors, TamperedError);
pyo3::import_exception!(fstore.errors, TruncatedError);
pyo3::import_exception!(fstore.errors, TrailingDataError);
pyo3::import_exception!(fstore.errors, AddressMismatchError);
pyo3::import_exception!(fstore.errors, FileMismatchError);

/// The error of every binding: a core error, or an error already in Python form.
/// (A local type, because the orphan rule forbids `From<CoreError> for PyErr`.)
pub enum NativeError {
    Core(CoreError),
    Py(PyErr),
}

pub type NativeResult<T> = Result<T, NativeError>;

impl From<CoreError> for NativeError {
    fn from(e: CoreError) -> Self {
        NativeError::Core(e)
    }
}

impl From<PyErr> for NativeError {
    fn from(e: PyErr) -> Self {
        NativeError::Py(e)
    }
}

impl From<NativeError> for PyErr {
    fn from(e: NativeError) -> PyErr {
        let e = match e {
            NativeError::Py(e) => return e,
            NativeError::Core(e) => e,
        };
        let msg = e.to_string();
        match e {
            CoreError::InvalidArgument(_) | CoreError::MessageTooLarge => {
                InvalidArgumentError::new_err(msg)
            }
            CoreError::AlreadyFinalized(_) => AlreadyFinalizedError::new_err(msg),
            CoreError::WrongKey => WrongKeyError::new_err(msg),
            CoreError::Tampered { .. } => TamperedError::new_err(msg),
            CoreError::Truncated(_) => TruncatedError::new_err(msg),
            CoreError::TrailingData { .. } => TrailingDataError::new_err(msg),
            CoreError::AddressMismatch { .. } => AddressMismatchError::new_err(msg),
            CoreError::FileMismatch(_) => FileMismatchError::new_err(msg),
            CoreError::Io(io) => PyErr::from(io),
        }
    }
}

/// An `OSError` subclass that names the file, as Python's own `open` does.
pub fn os_error(e: CoreError, path: &Path) -> NativeError {
    let CoreError::Io(io) = e else {
        return NativeError::Core(e);
    };
    let args = (
        io.raw_os_error().unwrap_or(0),
        io.to_string(),
        path.display().to_string(),
    );
    NativeError::Py(match io.kind() {
        io::ErrorKind::NotFound => PyFileNotFoundError::new_err(args),
        io::ErrorKind::PermissionDenied => PyPermissionError::new_err(args),
        io::ErrorKind::IsADirectory => PyIsADirectoryError::new_err(args),
        _ => PyOSError::new_err(args),
    })
}

pub fn not_finished(what: &str) -> NativeError {
    NativeError::Py(FstoreError::new_err(format!(
        "{what} is known only after finish()"
    )))
}
