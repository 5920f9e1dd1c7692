//! `fstore._native`: thin PyO3 bindings over `fstore-core`. Every bulk
//! operation takes its input through the buffer protocol without copying and
//! runs with the GIL released.

mod buf;
mod chunking;
mod error;
mod hashing;
mod out;
mod pipeline;
mod sealing;

use fstore_core::{chunker, hash, keys, seal};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;

    m.add("HASH_LEN", hash::HASH_LEN)?;
    m.add_function(wrap_pyfunction!(hashing::hash_py, m)?)?;
    m.add_function(wrap_pyfunction!(hashing::keyed_hash, m)?)?;
    m.add_function(wrap_pyfunction!(hashing::derive_key, m)?)?;
    m.add_function(wrap_pyfunction!(hashing::hash_file, m)?)?;
    m.add_class::<hashing::Hasher>()?;

    m.add("DEFAULT_MIN_SIZE", chunker::DEFAULT_MIN_SIZE)?;
    m.add("DEFAULT_AVG_SIZE", chunker::DEFAULT_AVG_SIZE)?;
    m.add("DEFAULT_MAX_SIZE", chunker::DEFAULT_MAX_SIZE)?;
    m.add_class::<chunking::Chunker>()?;

    m.add("KEY_LEN", seal::KEY_LEN)?;
    m.add("RECORD_SIZE", seal::RECORD_SIZE)?;
    m.add("HEADER_LEN", seal::HEADER_LEN)?;
    m.add("TAG_LEN", seal::TAG_LEN)?;
    m.add_function(wrap_pyfunction!(sealing::generate_key, m)?)?;
    m.add_function(wrap_pyfunction!(sealing::sealed_length, m)?)?;
    m.add_function(wrap_pyfunction!(sealing::seal_py, m)?)?;
    m.add_function(wrap_pyfunction!(sealing::open_sealed, m)?)?;
    m.add_class::<sealing::Sealer>()?;
    m.add_class::<sealing::Opener>()?;

    m.add("CHUNK_CONTEXT", PyBytes::new(py, keys::CHUNK_CONTEXT))?;
    m.add_function(wrap_pyfunction!(pipeline::chunk_id_key, m)?)?;
    m.add_function(wrap_pyfunction!(pipeline::chunk_id, m)?)?;
    m.add_function(wrap_pyfunction!(pipeline::chunk_key, m)?)?;
    m.add_class::<pipeline::SealedChunk>()?;
    m.add_class::<pipeline::StorePipeline>()?;
    m.add_function(wrap_pyfunction!(pipeline::open_blob, m)?)?;
    m.add_class::<pipeline::RestorePipeline>()?;
    Ok(())
}
