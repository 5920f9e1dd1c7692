//! New `bytes` objects that native code fills with the GIL released.
//!
//! `PyBytes::new_with` zero-fills its buffer first, with the GIL held: a whole
//! extra pass over every output. These helpers hand out the uninitialised
//! buffer instead, and make sure every byte is written before the object
//! reaches Python.

use pyo3::exceptions::PyRuntimeError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::error::NativeResult;

/// A new, uninitialised `bytes` of `len` bytes and a mutable view of its memory.
///
/// SAFETY of the view: the object was just created, nothing else references it
/// yet, and the caller fills every byte before handing the object out (or drops
/// it on failure), which is how the C API's own `PyBytes_FromStringAndSize(NULL, n)`
/// is meant to be used.
pub fn new_bytes_for_writing(
    py: Python<'_>,
    len: usize,
) -> PyResult<(Bound<'_, PyBytes>, &mut [u8])> {
    unsafe {
        let ptr = ffi::PyBytes_FromStringAndSize(std::ptr::null(), len as ffi::Py_ssize_t);
        let obj = Bound::from_owned_ptr_or_err(py, ptr)?.cast_into_unchecked::<PyBytes>();
        let data = ffi::PyBytes_AsString(obj.as_ptr()).cast::<u8>();
        Ok((obj, std::slice::from_raw_parts_mut(data, len)))
    }
}

/// A new `bytes` of exactly `len` bytes, filled by `fill` with the GIL
/// released; `fill` returns how many bytes it wrote, which must be all of them.
pub fn bytes_filled_by<'py, F>(
    py: Python<'py>,
    len: usize,
    fill: F,
) -> NativeResult<Bound<'py, PyBytes>>
where
    F: FnOnce(&mut [u8]) -> fstore_core::Result<usize> + Send,
{
    let (obj, buffer) = new_bytes_for_writing(py, len)?;
    let written = py.detach(|| fill(buffer))?;
    if written != len {
        // A bug, never a property of the input: the object is dropped unseen.
        return Err(PyRuntimeError::new_err(format!(
            "internal error: {written} of {len} output bytes written"
        ))
        .into());
    }
    Ok(obj)
}
