//! BLAKE3 bindings.

use std::path::PathBuf;

use fstore_core::hash;
use pyo3::buffer::PyBuffer;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::buf::{self, DETACH_THRESHOLD};
use crate::error::{InvalidArgumentError, NativeResult, os_error};

fn bytes(py: Python<'_>, data: Vec<u8>) -> Bound<'_, PyBytes> {
    PyBytes::new(py, &data)
}

#[pyfunction]
#[pyo3(name = "hash", signature = (data, length = 32, *, parallel = true))]
pub fn hash_py<'py>(
    py: Python<'py>,
    data: PyBuffer<u8>,
    length: usize,
    parallel: bool,
) -> NativeResult<Bound<'py, PyBytes>> {
    let data = buf::read(&data)?;
    let out = if data.len() >= DETACH_THRESHOLD {
        py.detach(|| hash::hash(data, length, parallel))
    } else {
        hash::hash(data, length, false)
    };
    Ok(bytes(py, out))
}

#[pyfunction]
#[pyo3(signature = (key, data, length = 32, *, parallel = true))]
pub fn keyed_hash<'py>(
    py: Python<'py>,
    key: PyBuffer<u8>,
    data: PyBuffer<u8>,
    length: usize,
    parallel: bool,
) -> NativeResult<Bound<'py, PyBytes>> {
    let key = buf::read(&key)?;
    let data = buf::read(&data)?;
    let out = py.detach(|| hash::keyed_hash(key, data, length, parallel))?;
    Ok(bytes(py, out))
}

#[pyfunction]
#[pyo3(signature = (context, key_material, length = 32))]
pub fn derive_key<'py>(
    py: Python<'py>,
    context: &str,
    key_material: PyBuffer<u8>,
    length: usize,
) -> NativeResult<Bound<'py, PyBytes>> {
    let material = buf::read(&key_material)?;
    Ok(bytes(py, hash::derive_key(context, material, length)))
}

#[pyfunction]
#[pyo3(signature = (path, length = 32, *, parallel = true))]
pub fn hash_file(
    py: Python<'_>,
    path: PathBuf,
    length: usize,
    parallel: bool,
) -> NativeResult<Bound<'_, PyBytes>> {
    let out = py
        .detach(|| hash::hash_file(&path, length, parallel))
        .map_err(|e| os_error(e, &path))?;
    Ok(bytes(py, out))
}

/// Streaming BLAKE3.
#[pyclass(module = "fstore._native")]
pub struct Hasher {
    inner: blake3::Hasher,
}

#[pymethods]
impl Hasher {
    #[new]
    #[pyo3(signature = (data = None, *, key = None, derive_key_context = None))]
    fn new(
        py: Python<'_>,
        data: Option<PyBuffer<u8>>,
        key: Option<PyBuffer<u8>>,
        derive_key_context: Option<&str>,
    ) -> NativeResult<Self> {
        let inner = match (key, derive_key_context) {
            (None, None) => blake3::Hasher::new(),
            (Some(key), None) => hash::keyed_hasher(buf::read(&key)?)?,
            (None, Some(context)) => blake3::Hasher::new_derive_key(context),
            (Some(_), Some(_)) => {
                return Err(InvalidArgumentError::new_err(
                    "give either key or derive_key_context, not both",
                )
                .into());
            }
        };
        let mut hasher = Hasher { inner };
        if let Some(data) = data {
            hasher.update(py, data, true)?;
        }
        Ok(hasher)
    }

    #[pyo3(signature = (data, *, parallel = true))]
    fn update(&mut self, py: Python<'_>, data: PyBuffer<u8>, parallel: bool) -> NativeResult<()> {
        let data = buf::read(&data)?;
        let inner = &mut self.inner;
        if data.len() >= DETACH_THRESHOLD {
            py.detach(|| hash::update(inner, data, parallel));
        } else {
            inner.update(data);
        }
        Ok(())
    }

    #[pyo3(signature = (length = 32))]
    fn finalize<'py>(&self, py: Python<'py>, length: usize) -> Bound<'py, PyBytes> {
        bytes(py, hash::finalize_len(&self.inner, length))
    }

    #[pyo3(signature = (length = 32))]
    fn hexdigest(&self, length: usize) -> String {
        fstore_core::pipeline::to_hex(&hash::finalize_len(&self.inner, length))
    }

    fn copy(&self) -> Hasher {
        Hasher {
            inner: self.inner.clone(),
        }
    }
}
