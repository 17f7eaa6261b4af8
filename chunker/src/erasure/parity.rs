//! The parity of one stripe: the `m` parity pieces of its `k` data pieces, byte for byte what
//! `reed-solomon-erasure`'s `encode_sep` computes, by a faster kernel where the CPU has one.
//!
//! Every parity byte is a sum over GF(2^8) of `k` products `coefficient * data byte`, the coefficients being
//! the codec's parity rows. `reed-solomon-erasure` (compiled for AVX2) multiplies one whole data piece by one
//! coefficient at a time with two 16-entry `pshufb` tables, walking all `m` parity pieces once per data piece:
//! at 10 + 20 with 256 KiB pieces that streams 5 MiB of parity through the cache ten times per stripe.
//!
//! With GFNI and AVX-512 ([`Kernel::GfniAvx512`]) one `vgf2p8affineqb` multiplies 64 bytes by a constant:
//! multiplication by a constant is linear over GF(2), so it is an 8 x 8 bit matrix, whatever the field's
//! polynomial (the instruction's own multiply, `vgf2p8mulb`, is fixed to the AES polynomial, not the codec's
//! 0x11D). The kernel takes 64 bytes of every data piece and writes 64 bytes of every parity piece from
//! registers, so each byte of the stripe crosses the memory bus once. Elsewhere ([`Kernel::Codec`]) the codec
//! itself computes the parity.
//!
//! The coefficients are read out of the codec, not rebuilt: encoding the unit vectors through `encode_sep`
//! yields its parity matrix column by column, so the kernel cannot drift from the codec that decodes.

use reed_solomon_erasure::galois_8::{self, ReedSolomon};

use super::{ErasureError, ErasureParams, PIECE_ALIGN};

/// Which code computes the parity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// `reed-solomon-erasure`'s `encode_sep`.
    Codec,
    /// Our GFNI kernel on 512-bit vectors (x86-64 with `avx512f`, `avx512bw` and `gfni`).
    GfniAvx512,
}

impl Kernel {
    /// The kernel's name as the benchmark prints it.
    pub fn name(self) -> &'static str {
        match self {
            Kernel::Codec => "reed-solomon-erasure encode_sep",
            Kernel::GfniAvx512 => "gfni-avx512",
        }
    }

    /// The fastest kernel this CPU runs.
    pub fn detect() -> Self {
        if gfni::available() { Kernel::GfniAvx512 } else { Kernel::Codec }
    }
}

/// Computes the parity pieces of stripes for one set of [`ErasureParams`].
#[derive(Debug, Clone)]
pub struct ParityCoder {
    codec: ReedSolomon,
    kernel: Kernel,
    data_shards: usize,
    parity_shards: usize,
    /// Row-major `m x k`: the affine matrix (for `vgf2p8affineqb`) of each parity coefficient. Empty with
    /// [`Kernel::Codec`].
    matrices: Vec<u64>,
}

impl ParityCoder {
    /// A coder for `params` on the fastest kernel this CPU has.
    pub fn new(params: ErasureParams) -> Result<Self, ErasureError> {
        Self::with_kernel(params, Kernel::detect())
    }

    /// A coder for `params` on `kernel`, or on [`Kernel::Codec`] if this CPU cannot run `kernel`.
    pub fn with_kernel(params: ErasureParams, kernel: Kernel) -> Result<Self, ErasureError> {
        let codec = params.codec()?;
        let kernel = if kernel == Kernel::GfniAvx512 && !gfni::available() { Kernel::Codec } else { kernel };
        let matrices = match kernel {
            Kernel::Codec => Vec::new(),
            Kernel::GfniAvx512 => parity_matrix(&codec, params)?.into_iter().map(affine_matrix).collect(),
        };
        Ok(Self { codec, kernel, data_shards: params.data_shards, parity_shards: params.parity_shards, matrices })
    }

    /// The kernel in use.
    pub fn kernel(&self) -> Kernel {
        self.kernel
    }

    #[cfg(test)]
    fn codec(&self) -> &ReedSolomon {
        &self.codec
    }

    /// Writes the parity of `data` (`k` pieces) into `parity` (`m` pieces), every piece of one length, a
    /// multiple of 64 bytes. Whatever `parity` held is overwritten.
    pub fn encode<D: AsRef<[u8]>, P: AsMut<[u8]>>(&self, data: &[D], parity: &mut [P]) -> Result<(), ErasureError> {
        let inputs = self.inputs(data)?;
        if parity.len() != self.parity_shards {
            return Err(ErasureError::PieceCount { got: parity.len(), expected: self.parity_shards });
        }
        let len = inputs.first().map_or(0, |p| p.len());
        let mut outputs: Vec<&mut [u8]> = parity.iter_mut().map(AsMut::as_mut).collect();
        if let Some((index, got)) = outputs.iter().map(|p| p.len()).enumerate().find(|&(_, got)| got != len) {
            return Err(ErasureError::PieceLength { index: self.data_shards + index, len: got, expected: len });
        }
        match self.kernel {
            Kernel::Codec => self.codec.encode_sep(&inputs, &mut outputs)?,
            Kernel::GfniAvx512 => gfni::encode(&self.matrices, &inputs, &mut outputs),
        }
        Ok(())
    }

    /// The parity of `data` (`k` pieces of one length, a multiple of 64 bytes) in `m` new pieces. The GFNI
    /// kernel writes them straight into fresh allocations: zeroing 20 pieces a stripe first would cost as much
    /// memory traffic as the kernel itself.
    pub fn encode_new<D: AsRef<[u8]>>(&self, data: &[D]) -> Result<Vec<Vec<u8>>, ErasureError> {
        let inputs = self.inputs(data)?;
        let len = inputs.first().map_or(0, |p| p.len());
        match self.kernel {
            Kernel::Codec => {
                let mut parity = vec![vec![0u8; len]; self.parity_shards];
                self.codec.encode_sep(&inputs, &mut parity)?;
                Ok(parity)
            }
            Kernel::GfniAvx512 => Ok(gfni::encode_new(&self.matrices, &inputs, self.parity_shards)),
        }
    }

    /// `data` as `k` slices of one length that is a multiple of 64 bytes.
    fn inputs<'a, D: AsRef<[u8]>>(&self, data: &'a [D]) -> Result<Vec<&'a [u8]>, ErasureError> {
        if data.len() != self.data_shards {
            return Err(ErasureError::PieceCount { got: data.len(), expected: self.data_shards });
        }
        let inputs: Vec<&[u8]> = data.iter().map(AsRef::as_ref).collect();
        let len = inputs.first().map_or(0, |p| p.len());
        for (index, piece) in inputs.iter().enumerate() {
            // Empty pieces are refused here, as the codec refuses them, whatever the kernel.
            if piece.len() != len || len == 0 || !len.is_multiple_of(PIECE_ALIGN) {
                let expected = len.next_multiple_of(PIECE_ALIGN).max(PIECE_ALIGN);
                return Err(ErasureError::PieceLength { index, len: piece.len(), expected });
            }
        }
        Ok(inputs)
    }
}

/// The codec's parity coefficients, row-major `m x k`: parity piece `r` is the sum over `j` of
/// `coefficient[r][j] * data piece j`. Read out by encoding each unit vector (a one-byte stripe whose only
/// non-zero byte is a 1 in data piece `j`), whose parity is column `j`.
fn parity_matrix(codec: &ReedSolomon, params: ErasureParams) -> Result<Vec<u8>, ErasureError> {
    let (k, m) = (params.data_shards, params.parity_shards);
    let mut matrix = vec![0u8; m * k];
    let mut parity = vec![[0u8; 1]; m];
    for j in 0..k {
        let data: Vec<[u8; 1]> = (0..k).map(|i| [u8::from(i == j)]).collect();
        codec.encode_sep(&data, &mut parity)?;
        for (r, p) in parity.iter().enumerate() {
            matrix[r * k + j] = p[0];
        }
    }
    Ok(matrix)
}

/// The 8 x 8 bit matrix of "multiply by `c`" in the codec's field, laid out as `vgf2p8affineqb` reads it: bit
/// `i` of the product is the parity of `byte[7 - i] & x`, so byte `7 - i` holds, at bit `j`, bit `i` of
/// `c * 2^j`.
fn affine_matrix(c: u8) -> u64 {
    let mut matrix = 0u64;
    for i in 0..8 {
        let mut row = 0u8;
        for j in 0..8 {
            row |= ((galois_8::mul(c, 1 << j) >> i) & 1) << j;
        }
        matrix |= u64::from(row) << (8 * (7 - i));
    }
    matrix
}

/// What `vgf2p8affineqb` computes for one byte with a zero constant: the model the kernel's matrices are
/// tested against on any CPU.
#[cfg(test)]
fn affine_byte(matrix: u64, x: u8) -> u8 {
    let mut out = 0u8;
    for i in 0..8 {
        let row = (matrix >> (8 * (7 - i))) as u8;
        out |= (((row & x).count_ones() & 1) as u8) << i;
    }
    out
}

#[cfg(target_arch = "x86_64")]
mod gfni {
    //! The GFNI kernel. The one module of the workspace with `unsafe`: `std::arch` has no safe way to load a
    //! vector from a slice, and a `#[target_feature]` function is unsafe to call from code compiled without
    //! the feature. Both are guarded: lengths are checked before the first load, and the kernel is only called
    //! after runtime detection of every feature it is compiled with.
    #![allow(unsafe_code)]

    use std::arch::x86_64::{
        __m512i, _mm512_gf2p8affine_epi64_epi8, _mm512_loadu_si512, _mm512_set1_epi64, _mm512_setzero_si512,
        _mm512_storeu_si512, _mm512_xor_si512,
    };
    use std::mem::MaybeUninit;

    const LANE: usize = 64;
    /// Bytes of every piece taken at a time: the `k` input tiles stay in the L1 cache (10 KiB at k = 10) while
    /// each parity row's tile is written in one sequential run. Measured: 2.8x faster than whole 64-byte
    /// columns across all pieces at once (30 streams at 10 + 20, which the prefetchers do not follow).
    const TILE: usize = 1024;
    // Every tile but the last is whole lanes, so every load and store below is of whole lanes.
    const _: () = assert!(TILE.is_multiple_of(LANE));

    pub(super) fn available() -> bool {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("gfni")
    }

    /// `outputs[r] = sum over j of matrices[r * k + j] (x) inputs[j]`.
    pub(super) fn encode(matrices: &[u64], inputs: &[&[u8]], outputs: &mut [&mut [u8]]) {
        let mut outputs: Vec<&mut [MaybeUninit<u8>]> = outputs
            .iter_mut()
            .map(|o| {
                let o: &mut [u8] = o;
                // SAFETY: `[u8]` and `[MaybeUninit<u8>]` have one layout, and the kernel writes only
                // initialized bytes, so the slice is still initialized after it.
                unsafe { &mut *(std::ptr::from_mut(o) as *mut [MaybeUninit<u8>]) }
            })
            .collect();
        run(matrices, inputs, &mut outputs);
    }

    /// As [`encode`], into `m` new vectors written once, never zeroed.
    pub(super) fn encode_new(matrices: &[u64], inputs: &[&[u8]], m: usize) -> Vec<Vec<u8>> {
        let len = inputs.first().map_or(0, |p| p.len());
        let mut parity: Vec<Vec<u8>> = (0..m).map(|_| Vec::with_capacity(len)).collect();
        let mut outputs: Vec<&mut [MaybeUninit<u8>]> =
            parity.iter_mut().map(|p| &mut p.spare_capacity_mut()[..len]).collect();
        run(matrices, inputs, &mut outputs);
        for p in &mut parity {
            // SAFETY: `run` wrote all of the first `len` bytes (every 64-byte lane of every output below `len`,
            // which it asserts is a multiple of 64).
            unsafe { p.set_len(len) };
        }
        parity
    }

    fn run(matrices: &[u64], inputs: &[&[u8]], outputs: &mut [&mut [MaybeUninit<u8>]]) {
        let len = inputs.first().map_or(0, |p| p.len());
        // The loads and stores below rely on these, and `encode_new` on every byte being written; the caller
        // checked them and a failure here is a bug.
        assert!(available(), "the GFNI kernel needs avx512f, avx512bw and gfni");
        assert_eq!(matrices.len(), inputs.len() * outputs.len());
        assert!(len.is_multiple_of(LANE));
        assert!(inputs.iter().all(|p| p.len() == len) && outputs.iter().all(|p| p.len() == len));
        // SAFETY: the CPU has every feature `kernel` is compiled with, and its slices are as it requires (both
        // checked just above).
        unsafe { kernel(matrices, inputs, outputs, len) }
    }

    /// Writes every byte of every output: each 64-byte lane of each tile of each row.
    ///
    /// # Safety
    /// The CPU must have `avx512f`, `avx512bw` and `gfni`; every input and output must be `len` bytes long,
    /// `len` a multiple of 64; `matrices` must hold one matrix per input for every output.
    #[target_feature(enable = "avx512f,avx512bw,gfni")]
    unsafe fn kernel(matrices: &[u64], inputs: &[&[u8]], outputs: &mut [&mut [MaybeUninit<u8>]], len: usize) {
        let k = inputs.len();
        let mut start = 0;
        while start < len {
            let end = (start + TILE).min(len);
            for (output, row) in outputs.iter_mut().zip(matrices.chunks_exact(k)) {
                let mut at = start;
                while at < end {
                    let mut sum = _mm512_setzero_si512();
                    for (input, &matrix) in inputs.iter().zip(row) {
                        // SAFETY: `at + 64 <= len == input.len()`: `len` and `at` are multiples of 64.
                        let x = unsafe { _mm512_loadu_si512(input.as_ptr().add(at).cast::<__m512i>()) };
                        let product = _mm512_gf2p8affine_epi64_epi8::<0>(x, _mm512_set1_epi64(matrix as i64));
                        sum = _mm512_xor_si512(sum, product);
                    }
                    // SAFETY: as for the loads: `at + 64 <= len == output.len()`.
                    unsafe { _mm512_storeu_si512(output.as_mut_ptr().add(at).cast::<__m512i>(), sum) };
                    at += LANE;
                }
            }
            start = end;
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod gfni {
    //! No GFNI kernel off x86-64: `available` is false, so `Kernel::detect` picks the codec and nothing calls
    //! the two functions below.
    pub(super) fn available() -> bool {
        false
    }

    pub(super) fn encode(_: &[u64], _: &[&[u8]], _: &mut [&mut [u8]]) {
        unreachable!("the GFNI kernel is only chosen on x86-64")
    }

    pub(super) fn encode_new(_: &[u64], _: &[&[u8]], _: usize) -> Vec<Vec<u8>> {
        unreachable!("the GFNI kernel is only chosen on x86-64")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn every_affine_matrix_multiplies_in_the_codec_field() {
        for c in 0..=255u8 {
            let matrix = affine_matrix(c);
            for x in 0..=255u8 {
                assert_eq!(affine_byte(matrix, x), galois_8::mul(c, x), "{c} * {x}");
            }
        }
    }

    #[test]
    fn the_matrix_read_out_of_the_codec_gives_its_parity() {
        let params = ErasureParams { data_shards: 3, parity_shards: 2, piece_size: 64 };
        let codec = params.codec().expect("codec");
        let matrix = parity_matrix(&codec, params).expect("matrix");
        let data: Vec<Vec<u8>> =
            (0..3u8).map(|i| (0..64u8).map(|b| b.wrapping_mul(31).wrapping_add(i)).collect()).collect();
        let mut want = vec![vec![0u8; 64]; 2];
        codec.encode_sep(&data, &mut want).expect("encode");
        for (r, want) in want.iter().enumerate() {
            for (b, &want) in want.iter().enumerate() {
                let got = (0..3).fold(0u8, |acc, j| acc ^ galois_8::mul(matrix[r * 3 + j], data[j][b]));
                assert_eq!(got, want, "parity {r} byte {b}");
            }
        }
    }

    #[test]
    fn pieces_of_the_wrong_shape_are_refused() {
        let params = ErasureParams { data_shards: 2, parity_shards: 1, piece_size: 64 };
        for kernel in [Kernel::Codec, Kernel::GfniAvx512] {
            let coder = ParityCoder::with_kernel(params, kernel).expect("coder");
            let mut parity = vec![vec![0u8; 64]];
            let short = [vec![0u8; 64], vec![0u8; 63]];
            assert!(matches!(coder.encode(&short, &mut parity), Err(ErasureError::PieceLength { index: 1, .. })));
            let unaligned = [vec![0u8; 65], vec![0u8; 65]];
            let mut parity65 = vec![vec![0u8; 65]];
            assert!(matches!(coder.encode(&unaligned, &mut parity65), Err(ErasureError::PieceLength { .. })));
            assert!(matches!(coder.encode(&short[..1], &mut parity), Err(ErasureError::PieceCount { .. })));
            let empty = [Vec::new(), Vec::new()];
            let mut parity0 = vec![Vec::new()];
            assert!(matches!(coder.encode(&empty, &mut parity0), Err(ErasureError::PieceLength { .. })));
            assert!(matches!(coder.encode_new(&empty), Err(ErasureError::PieceLength { .. })));
            let mut none: Vec<Vec<u8>> = Vec::new();
            let full = [vec![0u8; 64], vec![0u8; 64]];
            assert!(matches!(coder.encode(&full, &mut none), Err(ErasureError::PieceCount { .. })));
        }
    }

    /// The property test below checks the GFNI kernel only where it runs: on a CPU with the features, it must.
    #[test]
    fn kernel_is_gfni_where_the_cpu_has_it() {
        let params = ErasureParams::default();
        let coder = ParityCoder::with_kernel(params, Kernel::GfniAvx512).expect("coder");
        assert_eq!(coder.kernel() == Kernel::GfniAvx512, gfni::available());
        assert_eq!(Kernel::detect() == Kernel::GfniAvx512, gfni::available());
        #[cfg(target_arch = "x86_64")]
        {
            let cpu = std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("gfni");
            assert_eq!(gfni::available(), cpu);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Whatever kernel this CPU runs, its parity is the codec's, for any shape the market accepts.
        #[test]
        fn the_kernel_computes_the_codec_parity(
            k in 1usize..=24,
            m in 1usize..=32,
            lanes in 1usize..=40,
            seed in any::<u64>(),
        ) {
            let params = ErasureParams { data_shards: k, parity_shards: m, piece_size: lanes * 64 };
            // The GFNI kernel where this CPU has it (`kernel_is_gfni_where_the_cpu_has_it`), else the codec.
            let coder = ParityCoder::with_kernel(params, Kernel::GfniAvx512).expect("coder");
            let data: Vec<Vec<u8>> =
                (0..k as u64).map(|j| crate::testdata::bytes(params.piece_size, seed.wrapping_add(j))).collect();
            let mut want = vec![vec![0u8; params.piece_size]; m];
            coder.codec().encode_sep(&data, &mut want).expect("codec");
            // Stale bytes in the output must not leak into the parity.
            let mut got = vec![vec![0xa5u8; params.piece_size]; m];
            coder.encode(&data, &mut got).expect("kernel");
            prop_assert_eq!(&got, &want);
            prop_assert_eq!(coder.encode_new(&data).expect("kernel"), want);
        }
    }
}
