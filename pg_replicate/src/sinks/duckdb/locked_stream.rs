//! An Arrow C stream (the C stream interface) whose callbacks take a lock.
//!
//! DuckDB calls the stream of a streamed copy from its own threads, and a
//! query of the view reading it (from any connection of the instance) would
//! call it too; Arrow's own stream assumes one caller at a time.

use std::ffi::{c_char, c_int, c_void};
use std::sync::{Mutex, PoisonError};

use arrow::ffi::{FFI_ArrowArray, FFI_ArrowSchema};
use arrow::ffi_stream::FFI_ArrowArrayStream;
use arrow::record_batch::RecordBatchReader;

/// `EINVAL`: the stream was released, or has no such callback.
const INVALID: c_int = 22;

/// A stream of `reader`'s batches that any thread may call.
pub(crate) fn locked_stream(reader: Box<dyn RecordBatchReader + Send>) -> FFI_ArrowArrayStream {
    let inner = Box::new(Mutex::new(FFI_ArrowArrayStream::new(reader)));
    // SAFETY: the callbacks below implement the C stream interface over
    // `inner`, which `release` frees exactly once.
    unsafe {
        FFI_ArrowArrayStream::new_unchecked(
            Some(get_schema),
            Some(get_next),
            Some(get_last_error),
            Some(release),
            Box::into_raw(inner).cast(),
        )
    }
}

/// Runs `f` on the wrapped stream, under its lock.
///
/// # Safety
///
/// `stream` is a stream made by [`locked_stream`], not yet released.
unsafe fn with_inner<T>(
    stream: *mut FFI_ArrowArrayStream,
    f: impl FnOnce(&mut FFI_ArrowArrayStream) -> T,
) -> Option<T> {
    // SAFETY: by the contract, `stream` is valid and its private data is
    // the boxed mutex made by `locked_stream`.
    let private = unsafe { stream.as_ref()?.private_data() as *const Mutex<FFI_ArrowArrayStream> };
    let mutex = unsafe { private.as_ref()? };
    let mut inner = mutex.lock().unwrap_or_else(PoisonError::into_inner);
    Some(f(&mut inner))
}

unsafe extern "C" fn get_schema(
    stream: *mut FFI_ArrowArrayStream,
    out: *mut FFI_ArrowSchema,
) -> c_int {
    // SAFETY: DuckDB passes the stream it was given; the wrapped callback
    // gets the stream it was read from.
    unsafe {
        with_inner(stream, |inner| match inner.get_schema() {
            Some(callback) => callback(inner, out),
            None => INVALID,
        })
    }
    .unwrap_or(INVALID)
}

unsafe extern "C" fn get_next(
    stream: *mut FFI_ArrowArrayStream,
    out: *mut FFI_ArrowArray,
) -> c_int {
    // SAFETY: as above.
    unsafe {
        with_inner(stream, |inner| match inner.get_next() {
            Some(callback) => callback(inner, out),
            None => INVALID,
        })
    }
    .unwrap_or(INVALID)
}

unsafe extern "C" fn get_last_error(stream: *mut FFI_ArrowArrayStream) -> *const c_char {
    // SAFETY: as above. The message stays in the wrapped stream until its
    // next call, which is how the interface defines its lifetime.
    unsafe {
        with_inner(stream, |inner| match inner.get_last_error() {
            Some(callback) => callback(inner),
            None => std::ptr::null(),
        })
    }
    .unwrap_or(std::ptr::null())
}

unsafe extern "C" fn release(stream: *mut FFI_ArrowArrayStream) {
    // SAFETY: called once, by the owner, with the stream `locked_stream`
    // made; afterwards the stream is marked released (all callbacks unset).
    unsafe {
        let Some(stream) = stream.as_mut() else {
            return;
        };
        let private: *mut c_void = stream.private_data();
        if !private.is_null() {
            drop(Box::from_raw(private.cast::<Mutex<FFI_ArrowArrayStream>>()));
        }
        std::ptr::write(stream, FFI_ArrowArrayStream::empty());
    }
}
