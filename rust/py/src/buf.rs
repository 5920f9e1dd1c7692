//! Borrowing the memory of Python buffer objects without copying it.
//!
//! The slices stay valid while the `PyBuffer` lives: an exported buffer cannot
//! be resized or freed. Another thread could still write into a writable
//! buffer while the GIL is released; like hashlib and blake3-py, we accept
//! that such a caller gets garbage out, never memory unsafety in Rust's own
//! allocations.

use pyo3::buffer::PyBuffer;

use crate::error::{InvalidArgumentError, NativeResult};

/// Inputs at least this large are processed with the GIL released.
pub const DETACH_THRESHOLD: usize = 16 * 1024;

fn check_contiguous(buf: &PyBuffer<u8>) -> NativeResult<()> {
    if !buf.is_c_contiguous() {
        return Err(InvalidArgumentError::new_err("buffer must be C-contiguous").into());
    }
    Ok(())
}

pub fn read(buf: &PyBuffer<u8>) -> NativeResult<&[u8]> {
    check_contiguous(buf)?;
    let len = buf.len_bytes();
    if len == 0 {
        return Ok(&[]);
    }
    // SAFETY: the buffer is C-contiguous, `len` bytes long, and exported for
    // as long as `buf` (and so the returned borrow) lives.
    Ok(unsafe { std::slice::from_raw_parts(buf.buf_ptr() as *const u8, len) })
}

pub fn write(buf: &mut PyBuffer<u8>) -> NativeResult<&mut [u8]> {
    check_contiguous(buf)?;
    if buf.readonly() {
        return Err(InvalidArgumentError::new_err("output buffer must be writable").into());
    }
    let len = buf.len_bytes();
    if len == 0 {
        return Ok(&mut []);
    }
    // SAFETY: as in `read`, and the exporter declared the memory writable.
    Ok(unsafe { std::slice::from_raw_parts_mut(buf.buf_ptr() as *mut u8, len) })
}
