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
    #[pyo3(signature = (min_size = DEFAULT_MIN_SIZE, avg_size = DEFAULT_AVG_SIZE, max_size = DEFAULT_MAX_SIZE))]
    fn new(min_size: usize, avg_size: usize, max_size: usize) -> NativeResult<Self> {
        let params = ChunkerParams::new(min_size, avg_size, max_size)?;
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
