//! FastCDC binding.

use fstore_core::chunker::{
    ChunkStream, ChunkerParams, DEFAULT_AVG_SIZE, DEFAULT_MAX_SIZE, DEFAULT_MIN_SIZE,
};
use pyo3::buffer::PyBuffer;
use pyo3::prelude::*;

use crate::buf;
use crate::error::NativeResult;

/// Push-style FastCDC (2020) chunker returning chunk end offsets.
#[pyclass(module = "fstore._native")]
pub struct Chunker {
    inner: ChunkStream,
}

/// Validated sizes; negative ones are an `InvalidArgumentError` like any other bad size.
pub fn chunker_params(min_size: i64, avg_size: i64, max_size: i64) -> NativeResult<ChunkerParams> {
    let size = |name: &str, value: i64| {
        usize::try_from(value).map_err(|_| {
            fstore_core::Error::InvalidArgument(format!(
                "chunker {name} must be a positive power of two, not {value}"
            ))
        })
    };
    Ok(ChunkerParams::new(
        size("min_size", min_size)?,
        size("avg_size", avg_size)?,
        size("max_size", max_size)?,
    )?)
}

impl Chunker {
    /// End offsets of the chunks `data` completes (with `last`, of all the
    /// rest); only the start of an unfinished chunk is copied.
    fn cut(&mut self, data: &[u8], last: bool) -> fstore_core::Result<Vec<u64>> {
        let cuts = self.inner.cut(data, last)?;
        let ends = self
            .inner
            .chunks(data, &cuts)
            .iter()
            .map(|chunk| chunk.span.offset + chunk.span.len as u64)
            .collect();
        self.inner.commit(data, cuts);
        Ok(ends)
    }
}

#[pymethods]
impl Chunker {
    #[new]
    #[pyo3(signature = (min_size = DEFAULT_MIN_SIZE as i64, avg_size = DEFAULT_AVG_SIZE as i64, max_size = DEFAULT_MAX_SIZE as i64))]
    fn new(min_size: i64, avg_size: i64, max_size: i64) -> NativeResult<Self> {
        let params = chunker_params(min_size, avg_size, max_size)?;
        Ok(Chunker {
            inner: ChunkStream::new(params),
        })
    }

    #[getter]
    fn min_size(&self) -> usize {
        self.inner.params().min_size()
    }

    #[getter]
    fn avg_size(&self) -> usize {
        self.inner.params().avg_size()
    }

    #[getter]
    fn max_size(&self) -> usize {
        self.inner.params().max_size()
    }

    fn update(&mut self, py: Python<'_>, data: PyBuffer<u8>) -> NativeResult<Vec<u64>> {
        let data = buf::read(&data)?;
        Ok(py.detach(|| self.cut(data, false))?)
    }

    fn finish(&mut self, py: Python<'_>) -> NativeResult<Vec<u64>> {
        if self.inner.is_finished() {
            return Ok(Vec::new());
        }
        Ok(py.detach(|| self.cut(&[], true))?)
    }
}
