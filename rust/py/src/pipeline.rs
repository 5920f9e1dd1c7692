//! Store and restore pipeline bindings, plus the namespace key derivations.

use fstore_core::chunker::{DEFAULT_AVG_SIZE, DEFAULT_MAX_SIZE, DEFAULT_MIN_SIZE};
use fstore_core::keys::NamespaceKeys;
use fstore_core::pipeline;
use pyo3::buffer::PyBuffer;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::buf;
use crate::chunking::chunker_params;
use crate::error::{NativeResult, not_finished};
use crate::out::{bytes_filled_by, new_bytes_for_writing};

#[pyfunction]
pub fn chunk_id_key<'py>(
    py: Python<'py>,
    namespace_secret: PyBuffer<u8>,
) -> NativeResult<Bound<'py, PyBytes>> {
    let keys = NamespaceKeys::new(buf::read(&namespace_secret)?)?;
    Ok(PyBytes::new(py, keys.chunk_id_key()))
}

#[pyfunction]
pub fn chunk_id<'py>(
    py: Python<'py>,
    namespace_secret: PyBuffer<u8>,
    data: PyBuffer<u8>,
) -> NativeResult<Bound<'py, PyBytes>> {
    let keys = NamespaceKeys::new(buf::read(&namespace_secret)?)?;
    let data = buf::read(&data)?;
    let id = py.detach(|| keys.chunk_id(data, true));
    Ok(PyBytes::new(py, &id))
}

#[pyfunction]
pub fn chunk_key<'py>(
    py: Python<'py>,
    namespace_secret: PyBuffer<u8>,
    chunk_id: PyBuffer<u8>,
) -> NativeResult<Bound<'py, PyBytes>> {
    let keys = NamespaceKeys::new(buf::read(&namespace_secret)?)?;
    let id: &[u8; 32] = buf::read(&chunk_id)?
        .try_into()
        .map_err(|_| fstore_core::Error::InvalidArgument("a chunk id must be 32 bytes".into()))?;
    Ok(PyBytes::new(py, &keys.chunk_key(id)))
}

/// One chunk of a stored file, ready to go on the network as a blob.
#[pyclass(module = "fstore._native", frozen, get_all)]
pub struct SealedChunk {
    chunk_id: Py<PyBytes>,
    address: Py<PyBytes>,
    key: Py<PyBytes>,
    sealed: Py<PyBytes>,
    plain_length: usize,
    offset: u64,
}

#[pymethods]
impl SealedChunk {
    fn __repr__(&self) -> String {
        format!(
            "SealedChunk(offset={}, plain_length={}, sealed_length=…)",
            self.offset, self.plain_length
        )
    }
}

#[pyclass(module = "fstore._native")]
pub struct StorePipeline {
    inner: pipeline::StorePipeline,
}

impl StorePipeline {
    /// Take one piece (the last if `last`): cut its chunks with the GIL
    /// released, allocate a `bytes` object for each sealed chunk, then seal
    /// straight into them with the GIL released again.
    fn take(&mut self, py: Python<'_>, piece: &[u8], last: bool) -> NativeResult<Vec<SealedChunk>> {
        let inner = &mut self.inner;
        let plan = py.detach(|| inner.plan(piece, last))?;
        let mut objects = Vec::new();
        let mut views = Vec::new();
        for len in plan.sealed_lens() {
            let (obj, view) = new_bytes_for_writing(py, len)?;
            objects.push(obj);
            views.push(view);
        }
        let metas = py.detach(|| inner.seal(piece, plan, &mut views))?;
        Ok(metas
            .into_iter()
            .zip(objects)
            .map(|(meta, sealed)| SealedChunk {
                chunk_id: PyBytes::new(py, &meta.chunk_id).unbind(),
                address: PyBytes::new(py, &meta.address).unbind(),
                key: PyBytes::new(py, &meta.key).unbind(),
                sealed: sealed.unbind(),
                plain_length: meta.span.len,
                offset: meta.span.offset,
            })
            .collect())
    }
}

#[pymethods]
impl StorePipeline {
    #[new]
    #[pyo3(signature = (
        namespace_secret,
        *,
        min_size = DEFAULT_MIN_SIZE as i64,
        avg_size = DEFAULT_AVG_SIZE as i64,
        max_size = DEFAULT_MAX_SIZE as i64,
        parallel = true,
    ))]
    fn new(
        namespace_secret: PyBuffer<u8>,
        min_size: i64,
        avg_size: i64,
        max_size: i64,
        parallel: bool,
    ) -> NativeResult<Self> {
        let keys = NamespaceKeys::new(buf::read(&namespace_secret)?)?;
        let params = chunker_params(min_size, avg_size, max_size)?;
        Ok(StorePipeline {
            inner: pipeline::StorePipeline::new(keys, params, parallel),
        })
    }

    fn feed(&mut self, py: Python<'_>, data: PyBuffer<u8>) -> NativeResult<Vec<SealedChunk>> {
        self.take(py, buf::read(&data)?, false)
    }

    fn finish(&mut self, py: Python<'_>) -> NativeResult<Vec<SealedChunk>> {
        self.take(py, &[], true)
    }

    #[getter]
    fn size(&self) -> u64 {
        self.inner.size()
    }

    #[getter]
    fn blake3<'py>(&self, py: Python<'py>) -> NativeResult<Bound<'py, PyBytes>> {
        match self.inner.blake3() {
            Some(digest) => Ok(PyBytes::new(py, &digest)),
            None => Err(not_finished("the whole-file BLAKE3")),
        }
    }
}

/// A new `bytes` of `plain_length` bytes filled by `open`, with the GIL
/// released. The blob's length is checked first (and, if wrong, its address),
/// so nothing is allocated for a length the blob cannot have.
fn opened_into_bytes<'py, F>(
    py: Python<'py>,
    address: &[u8],
    sealed: &[u8],
    plain_length: u64,
    open: F,
) -> NativeResult<Bound<'py, PyBytes>>
where
    F: FnOnce(&mut [u8]) -> fstore_core::Result<()> + Send,
{
    py.detach(|| pipeline::verify_length(address, sealed, plain_length))?;
    bytes_filled_by(py, plain_length as usize, |out| {
        open(out).map(|()| out.len())
    })
}

#[pyfunction]
pub fn open_blob<'py>(
    py: Python<'py>,
    address: PyBuffer<u8>,
    key: PyBuffer<u8>,
    sealed: PyBuffer<u8>,
    plain_length: u64,
) -> NativeResult<Bound<'py, PyBytes>> {
    let (address, key, sealed) = (buf::read(&address)?, buf::read(&key)?, buf::read(&sealed)?);
    opened_into_bytes(py, address, sealed, plain_length, |out| {
        pipeline::open_blob(address, key, sealed, out)
    })
}

#[pyclass(module = "fstore._native")]
pub struct RestorePipeline {
    inner: pipeline::RestorePipeline,
}

#[pymethods]
impl RestorePipeline {
    #[new]
    #[pyo3(signature = (*, parallel = true))]
    fn new(parallel: bool) -> Self {
        RestorePipeline {
            inner: pipeline::RestorePipeline::new(parallel),
        }
    }

    fn open_chunk<'py>(
        &mut self,
        py: Python<'py>,
        address: PyBuffer<u8>,
        key: PyBuffer<u8>,
        sealed: PyBuffer<u8>,
        plain_length: u64,
    ) -> NativeResult<Bound<'py, PyBytes>> {
        let (address, key, sealed) = (buf::read(&address)?, buf::read(&key)?, buf::read(&sealed)?);
        self.inner.check_active()?;
        let inner = &mut self.inner;
        opened_into_bytes(py, address, sealed, plain_length, |out| {
            inner.open_chunk(address, key, sealed, out)
        })
    }

    fn add_opened(&mut self, py: Python<'_>, plain: PyBuffer<u8>) -> NativeResult<()> {
        let plain = buf::read(&plain)?;
        let inner = &mut self.inner;
        Ok(py.detach(|| inner.add_opened(plain))?)
    }

    fn finish(&mut self, expected_size: u64, expected_blake3: PyBuffer<u8>) -> NativeResult<()> {
        Ok(self
            .inner
            .finish(expected_size, buf::read(&expected_blake3)?)?)
    }

    #[getter]
    fn size(&self) -> u64 {
        self.inner.size()
    }
}
