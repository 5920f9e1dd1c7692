//! Cobblestone-128 bindings: one-shot and streaming.

use fstore_core::seal;
use pyo3::buffer::PyBuffer;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::buf;
use crate::error::NativeResult;
use crate::out::bytes_filled_by;

#[pyfunction]
pub fn generate_key(py: Python<'_>) -> Bound<'_, PyBytes> {
    PyBytes::new(py, &seal::generate_key())
}

#[pyfunction]
pub fn sealed_length(plain_length: u64) -> u64 {
    seal::sealed_len(plain_length)
}

#[pyfunction]
#[pyo3(name = "seal")]
pub fn seal_py<'py>(
    py: Python<'py>,
    key: PyBuffer<u8>,
    context: PyBuffer<u8>,
    data: PyBuffer<u8>,
) -> NativeResult<Bound<'py, PyBytes>> {
    let (key, context, data) = (buf::read(&key)?, buf::read(&context)?, buf::read(&data)?);
    let len = seal::sealed_len(data.len() as u64) as usize;
    bytes_filled_by(py, len, |out| {
        seal::seal_into(key, context, data, out).map(|()| out.len())
    })
}

#[pyfunction]
#[pyo3(name = "open")]
pub fn open_sealed<'py>(
    py: Python<'py>,
    key: PyBuffer<u8>,
    context: PyBuffer<u8>,
    data: PyBuffer<u8>,
) -> NativeResult<Bound<'py, PyBytes>> {
    let (key, context, data) = (buf::read(&key)?, buf::read(&context)?, buf::read(&data)?);
    let len = seal::plain_len_upper_bound(data.len());
    // On success the plaintext is exactly `len` bytes; on failure the error is raised.
    bytes_filled_by(py, len, |out| seal::open_into(key, context, data, out))
}

/// A Python class over a streaming core type (`seal::Sealer` or `seal::Opener`,
/// which share their method names): both expose `update`, `update_into` and
/// `finalize`, with output written straight into new `bytes` or the caller's buffer.
macro_rules! stream_class {
    ($(#[$doc:meta])* $name:ident, $core:ty) => {
        $(#[$doc])*
        #[pyclass(module = "fstore._native")]
        pub struct $name {
            inner: $core,
        }

        #[pymethods]
        impl $name {
            #[new]
            #[pyo3(signature = (key, context = None))]
            fn new(key: PyBuffer<u8>, context: Option<PyBuffer<u8>>) -> NativeResult<Self> {
                let context = match &context {
                    Some(c) => buf::read(c)?,
                    None => &[],
                };
                Ok($name {
                    inner: <$core>::new(buf::read(&key)?, context)?,
                })
            }

            fn update<'py>(
                &mut self,
                py: Python<'py>,
                data: PyBuffer<u8>,
            ) -> NativeResult<Bound<'py, PyBytes>> {
                let data = buf::read(&data)?;
                let inner = &mut self.inner;
                let len = inner.update_len(data.len());
                bytes_filled_by(py, len, |out| inner.update_into(data, out))
            }

            fn update_into(
                &mut self,
                py: Python<'_>,
                data: PyBuffer<u8>,
                mut buf: PyBuffer<u8>,
            ) -> NativeResult<usize> {
                let data = buf::read(&data)?;
                let out = buf::write(&mut buf)?;
                let inner = &mut self.inner;
                Ok(py.detach(|| inner.update_into(data, out))?)
            }

            fn finalize<'py>(&mut self, py: Python<'py>) -> NativeResult<Bound<'py, PyBytes>> {
                let inner = &mut self.inner;
                let len = inner.finalize_len();
                bytes_filled_by(py, len, |out| inner.finalize_into(out))
            }
        }
    };
}

stream_class!(
    /// Streaming Cobblestone-128 encryption.
    Sealer,
    seal::Sealer
);

stream_class!(
    /// Streaming Cobblestone-128 decryption.
    Opener,
    seal::Opener
);
