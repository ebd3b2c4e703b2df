//! GF(2^8) arithmetic and the matrix algebra of the Cauchy Reed–Solomon code, in pure Rust.
//!
//! Everything here mirrors ISA-L's `ec_base.c` (polynomial 0x11d, generator 2, the Cauchy
//! matrix of `gf_gen_cauchy1_matrix`, the 32-byte tables of `ec_init_tables`), so the portable
//! codec's bytes equal ISA-L's. The tests compare each function with ISA-L's where it loads.

/// The field's reduction polynomial, x^8 + x^4 + x^3 + x^2 + 1.
const POLYNOMIAL: u16 = 0x11d;

/// Bytes of multiply table per coefficient: 16 products of the low nibble, 16 of the high.
pub(crate) const TABLE_BYTES: usize = 32;

/// `EXP[i]` = 2^i, doubled so `EXP[log a + log b]` needs no reduction mod 255.
static EXP: [u8; 512] = exp_table();

/// `LOG[a]` = log2(a) for a != 0 (`LOG[0]` is unused).
static LOG: [u8; 256] = log_table();

const fn exp_table() -> [u8; 512] {
    let mut exp = [0u8; 512];
    let mut x: u16 = 1;
    let mut i = 0;
    while i < 255 {
        exp[i] = x as u8;
        exp[i + 255] = x as u8;
        x <<= 1;
        if x & 0x100 != 0 {
            x ^= POLYNOMIAL;
        }
        i += 1;
    }
    exp
}

const fn log_table() -> [u8; 256] {
    let exp = exp_table();
    let mut log = [0u8; 256];
    let mut i = 0;
    while i < 255 {
        log[exp[i] as usize] = i as u8;
        i += 1;
    }
    log
}

/// The product of `a` and `b` in GF(2^8).
pub(crate) fn mul(a: u8, b: u8) -> u8 {
    if a == 0 || b == 0 {
        return 0;
    }
    EXP[usize::from(LOG[usize::from(a)]) + usize::from(LOG[usize::from(b)])]
}

/// The multiplicative inverse of `a`; 0 for 0, as ISA-L's `gf_inv`.
pub(crate) fn inv(a: u8) -> u8 {
    if a == 0 {
        return 0;
    }
    EXP[255 - usize::from(LOG[usize::from(a)])]
}

/// The (K+M)×K generator, row-major: identity on top, then `1 / (i XOR j)` for row i in
/// K..K+M and column j in 0..K. Caller guarantees K + M <= 255, so `i XOR j` is a nonzero byte.
pub(crate) fn cauchy_matrix(data_shards: usize, parity_shards: usize) -> Vec<u8> {
    let k = data_shards;
    let rows = k + parity_shards;
    let mut matrix = vec![0u8; rows * k];
    for i in 0..k {
        matrix[i * k + i] = 1;
    }
    for i in k..rows {
        for j in 0..k {
            matrix[i * k + j] = inv((i ^ j) as u8);
        }
    }
    matrix
}

/// Inverts the n×n row-major `matrix` by Gauss–Jordan elimination, consuming it (as ISA-L's
/// `gf_invert_matrix`). `None` if it is singular.
pub(crate) fn invert(mut matrix: Vec<u8>, n: usize) -> Option<Vec<u8>> {
    assert_eq!(matrix.len(), n * n, "invert: matrix is not {n}x{n}");
    let mut inverse = vec![0u8; n * n];
    for i in 0..n {
        inverse[i * n + i] = 1;
    }
    for col in 0..n {
        let pivot_row = (col..n).find(|&row| matrix[row * n + col] != 0)?;
        if pivot_row != col {
            swap_rows(&mut matrix, n, pivot_row, col);
            swap_rows(&mut inverse, n, pivot_row, col);
        }
        let scale = inv(matrix[col * n + col]);
        scale_row(&mut matrix[col * n..][..n], scale);
        scale_row(&mut inverse[col * n..][..n], scale);
        for row in (0..n).filter(|&row| row != col) {
            let factor = matrix[row * n + col];
            if factor != 0 {
                eliminate(&mut matrix, n, row, col, factor);
                eliminate(&mut inverse, n, row, col, factor);
            }
        }
    }
    Some(inverse)
}

fn swap_rows(matrix: &mut [u8], n: usize, a: usize, b: usize) {
    for col in 0..n {
        matrix.swap(a * n + col, b * n + col);
    }
}

fn scale_row(row: &mut [u8], scale: u8) {
    for value in row {
        *value = mul(*value, scale);
    }
}

/// `matrix[row] -= factor * matrix[pivot]` (subtraction is XOR).
fn eliminate(matrix: &mut [u8], n: usize, row: usize, pivot: usize, factor: u8) {
    for col in 0..n {
        let product = mul(factor, matrix[pivot * n + col]);
        matrix[row * n + col] ^= product;
    }
}

/// The split-nibble multiply tables of ISA-L's `ec_init_tables`: for each coefficient of the
/// rows×k `coefficients` (row-major), 16 bytes `c·x` for x in 0..16, then 16 bytes `c·(x<<4)`.
pub(crate) fn mul_tables(coefficients: &[u8]) -> Vec<u8> {
    let mut tables = Vec::with_capacity(coefficients.len() * TABLE_BYTES);
    for &c in coefficients {
        tables.extend((0..16u8).map(|x| mul(c, x)));
        tables.extend((0..16u8).map(|x| mul(c, x << 4)));
    }
    tables
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_nonzero_element_has_an_inverse() {
        for a in 1..=255u8 {
            assert_eq!(mul(a, inv(a)), 1, "a = {a}");
        }
        assert_eq!(inv(0), 0);
    }

    #[test]
    fn multiplication_distributes_over_xor() {
        for a in [0u8, 1, 2, 0x1d, 0x80, 0xff] {
            for b in 0..=255u8 {
                for c in [0u8, 3, 0x55, 0xfe] {
                    assert_eq!(mul(a, b ^ c), mul(a, b) ^ mul(a, c));
                }
            }
        }
    }

    #[test]
    fn inverting_twice_gives_the_matrix_back() {
        let generator = cauchy_matrix(5, 3);
        // Rows 1, 3, 5, 6, 7: three data rows and two parity rows.
        let square: Vec<u8> = [1, 3, 5, 6, 7]
            .iter()
            .flat_map(|&row| generator[row * 5..][..5].to_vec())
            .collect();
        let inverse = invert(square.clone(), 5).expect("cauchy submatrix is invertible");
        assert_eq!(invert(inverse, 5), Some(square));
        assert_eq!(invert(vec![1, 2, 2, 4], 2), None);
    }
}
