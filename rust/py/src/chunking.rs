//! FastCDC binding.

use fstore_core::chunker::{
    ChunkBuffer, ChunkerParams, DEFAULT_AVG_SIZE, DEFAULT_MAX_SIZE, DEFAULT_MIN_SIZE,
};
use pyo3::buffer::PyBuffer;
use pyo3::prelude::*;

use crate::buf;
use crate::error::NativeResult;

/// Push-style FastCDC (2020) chunker returning chunk end offsets.
#[pyclass(module = "fstore._native")]
pub struct Chunker {
    inner: ChunkBuffer,
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
    fn drain(&mut self) -> Vec<u64> {
        let mut ends = Vec::new();
        while let Some((span, _)) = self.inner.next_chunk() {
            ends.push(span.offset + span.len as u64);
        }
        ends
    }
}

#[pymethods]
impl Chunker {
    #[new]
    #[pyo3(signature = (min_size = DEFAULT_MIN_SIZE as i64, avg_size = DEFAULT_AVG_SIZE as i64, max_size = DEFAULT_MAX_SIZE as i64))]
    fn new(min_size: i64, avg_size: i64, max_size: i64) -> NativeResult<Self> {
        let params = chunker_params(min_size, avg_size, max_size)?;
        Ok(Chunker {
            inner: ChunkBuffer::new(params),
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
        Ok(py.detach(|| {
            self.inner.push(data)?;
            Ok::<_, fstore_core::Error>(self.drain())
        })?)
    }

    fn finish(&mut self, py: Python<'_>) -> Vec<u64> {
        py.detach(|| {
            self.inner.finish();
            self.drain()
        })
    }
}
