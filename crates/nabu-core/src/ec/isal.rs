//! ISA-L's erasure-code functions, loaded at run time.
//!
//! Linking `libisal` at build time would make it a hard dependency of every binary; loading it
//! with `libloading` on first use lets the same binary run (on the portable codec) where the
//! library is missing. The library stays loaded for the life of the process, so the function
//! pointers taken from it never dangle.

use std::ffi::c_int;
use std::fmt;
use std::sync::OnceLock;

use libloading::Library;

use super::gf::TABLE_BYTES;

/// Library names tried in order: the Debian runtime package's soname, then the dev symlink.
const LIBRARY_NAMES: [&str; 2] = ["libisal.so.2", "libisal.so"];

/// The longest run `ec_encode_data` is given at once: its length argument is a C `int`.
const CALL_BYTES_MAX: usize = 1 << 30;

type GenMatrixFn = unsafe extern "C" fn(a: *mut u8, m: c_int, k: c_int);
type InitTablesFn = unsafe extern "C" fn(k: c_int, rows: c_int, a: *mut u8, gftbls: *mut u8);
type EncodeDataFn = unsafe extern "C" fn(
    len: c_int,
    k: c_int,
    rows: c_int,
    gftbls: *mut u8,
    data: *mut *mut u8,
    coding: *mut *mut u8,
);
type InvertMatrixFn = unsafe extern "C" fn(input: *mut u8, output: *mut u8, n: c_int) -> c_int;
type MulFn = unsafe extern "C" fn(a: u8, b: u8) -> u8;

/// The loaded library and the functions the codec uses, wrapped in safe methods.
pub(crate) struct IsaLibrary {
    gen_cauchy1_matrix: GenMatrixFn,
    init_tables: InitTablesFn,
    encode_data: EncodeDataFn,
    invert_matrix: InvertMatrixFn,
    mul: MulFn,
    /// Keeps the code behind the pointers above mapped; never dropped (it lives in a static).
    _library: Library,
}

impl fmt::Debug for IsaLibrary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IsaLibrary").finish_non_exhaustive()
    }
}

/// The process-wide ISA-L, loaded on first call; `None` if it is not installed.
pub(crate) fn library() -> Option<&'static IsaLibrary> {
    static LIBRARY: OnceLock<Option<IsaLibrary>> = OnceLock::new();
    LIBRARY.get_or_init(load).as_ref()
}

fn load() -> Option<IsaLibrary> {
    LIBRARY_NAMES.iter().find_map(|&name| {
        // SAFETY: loading runs ISA-L's initialisers, which only set up its CPU dispatch.
        let library = unsafe { Library::new(name) }.ok()?;
        // SAFETY: each symbol is declared with its signature from isa-l/erasure_code.h.
        unsafe {
            Some(IsaLibrary {
                gen_cauchy1_matrix: *library.get::<GenMatrixFn>(b"gf_gen_cauchy1_matrix").ok()?,
                init_tables: *library.get::<InitTablesFn>(b"ec_init_tables").ok()?,
                encode_data: *library.get::<EncodeDataFn>(b"ec_encode_data").ok()?,
                invert_matrix: *library.get::<InvertMatrixFn>(b"gf_invert_matrix").ok()?,
                mul: *library.get::<MulFn>(b"gf_mul").ok()?,
                _library: library,
            })
        }
    })
}

/// Converts a shard count or length already bounded by the caller to a C `int`.
fn c_int_of(n: usize) -> c_int {
    c_int::try_from(n).expect("value bounded by the caller fits in a C int")
}

impl IsaLibrary {
    /// `gf_gen_cauchy1_matrix`: the (K+M)×K generator. Caller guarantees K + M <= 255.
    pub(crate) fn cauchy_matrix(&self, data_shards: usize, parity_shards: usize) -> Vec<u8> {
        let rows = data_shards + parity_shards;
        let mut matrix = vec![0u8; rows * data_shards];
        // SAFETY: `matrix` has room for the rows × k bytes the function writes.
        unsafe {
            (self.gen_cauchy1_matrix)(matrix.as_mut_ptr(), c_int_of(rows), c_int_of(data_shards))
        };
        matrix
    }

    /// `gf_invert_matrix`: the inverse of the n×n `matrix`, or `None` if it is singular.
    pub(crate) fn invert(&self, mut matrix: Vec<u8>, n: usize) -> Option<Vec<u8>> {
        assert_eq!(matrix.len(), n * n, "invert: matrix is not {n}x{n}");
        let mut inverse = vec![0u8; n * n];
        // SAFETY: both buffers hold n × n bytes; the function reads and clobbers the first
        // and writes the second.
        let status =
            unsafe { (self.invert_matrix)(matrix.as_mut_ptr(), inverse.as_mut_ptr(), c_int_of(n)) };
        (status == 0).then_some(inverse)
    }

    /// `gf_mul`.
    pub(crate) fn mul(&self, a: u8, b: u8) -> u8 {
        // SAFETY: a pure function of two bytes.
        unsafe { (self.mul)(a, b) }
    }

    /// `ec_init_tables` for a rows×k coefficient matrix (row-major).
    pub(crate) fn init_tables(&self, k: usize, rows: usize, coefficients: &[u8]) -> Vec<u8> {
        assert_eq!(coefficients.len(), k * rows, "init_tables: coefficients");
        let mut tables = vec![0u8; coefficients.len() * TABLE_BYTES];
        // SAFETY: the function reads k × rows coefficients (it does not write through the
        // pointer despite its `unsigned char *` type) and writes 32 × k × rows table bytes.
        unsafe {
            (self.init_tables)(
                c_int_of(k),
                c_int_of(rows),
                coefficients.as_ptr().cast_mut(),
                tables.as_mut_ptr(),
            )
        };
        tables
    }

    /// `ec_encode_data`: each output becomes the dot product of its table row with the inputs.
    ///
    /// # Panics
    /// If the slices disagree in length or `tables` does not fit them (a caller bug).
    pub(crate) fn dot_products(&self, tables: &[u8], inputs: &[&[u8]], outputs: &mut [&mut [u8]]) {
        let (k, rows) = (inputs.len(), outputs.len());
        assert_eq!(tables.len(), k * rows * TABLE_BYTES, "dot_products: tables");
        let len = inputs.first().map_or(0, |input| input.len());
        assert!(inputs.iter().all(|input| input.len() == len), "inputs");
        assert!(outputs.iter().all(|output| output.len() == len), "outputs");
        if rows == 0 || len == 0 {
            return;
        }
        let mut input_ptrs: Vec<*mut u8> = inputs.iter().map(|s| s.as_ptr().cast_mut()).collect();
        let mut output_ptrs: Vec<*mut u8> = outputs.iter_mut().map(|s| s.as_mut_ptr()).collect();
        for start in (0..len).step_by(CALL_BYTES_MAX) {
            let call_bytes = (len - start).min(CALL_BYTES_MAX);
            // SAFETY: every input and output pointer is valid for `len` bytes (asserted
            // above) and the outputs do not alias the inputs (`&mut` borrows); the tables hold
            // k × rows entries. ISA-L only reads the inputs and tables.
            unsafe {
                (self.encode_data)(
                    c_int_of(call_bytes),
                    c_int_of(k),
                    c_int_of(rows),
                    tables.as_ptr().cast_mut(),
                    input_ptrs.as_mut_ptr(),
                    output_ptrs.as_mut_ptr(),
                );
            }
            advance(&mut input_ptrs, call_bytes);
            advance(&mut output_ptrs, call_bytes);
        }
    }
}

/// Moves every pointer `bytes` further into its shard (only used while still inside it).
fn advance(pointers: &mut [*mut u8], bytes: usize) {
    for pointer in pointers {
        *pointer = pointer.wrapping_add(bytes);
    }
}
