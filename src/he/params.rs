//! The GLWE parameter set hefl encrypts under, read from tfhe's vetted constant.
//!
//! hefl uses only the GLWE part of tfhe's 128-bit parameter set
//! [`V1_8_PARAM_MESSAGE_2_CARRY_2_KS_PBS_TUNIFORM_2M128`](TFHE_PARAMETER_SET): GLWE dimension
//! k = 1, polynomial size N = 2048, native modulus q = 2^64, a binary secret key and
//! TUniform(17) noise. Nothing here is typed by hand: every value is taken from the constant
//! at compile time, so a different tfhe constant cannot silently pair with the wrong name.

use tfhe::core_crypto::commons::math::random::{DynamicDistribution, TUniform};
use tfhe::core_crypto::prelude::{
    CiphertextModulus, GlweCiphertextCount, GlweCiphertextList, GlweDimension, GlweSize,
    PlaintextList, PolynomialSize, glwe_ciphertext_size,
};
use tfhe::shortint::parameters::v1_8::V1_8_PARAM_MESSAGE_2_CARRY_2_KS_PBS_TUNIFORM_2M128 as TFHE_PARAMETER_SET;

/// The GLWE parameters of one named tfhe parameter set.
///
/// Only [`PARAMS`] exists today; the type keeps the parameters named and together.
///
/// ```
/// use hefl::he::params::PARAMS;
///
/// assert_eq!(PARAMS.name(), "V1_8_PARAM_MESSAGE_2_CARRY_2_KS_PBS_TUNIFORM_2M128");
/// assert_eq!(PARAMS.polynomial_size().0, 2048);
/// assert_eq!(PARAMS.glwe_dimension().0, 1);
/// assert_eq!(PARAMS.noise_bound_log2(), 17);
/// ```
#[derive(Clone, Copy, Debug)]
pub struct GlweParams {
    name: &'static str,
    glwe_dimension: GlweDimension,
    polynomial_size: PolynomialSize,
    noise: TUniform<u64>,
    ciphertext_modulus: CiphertextModulus<u64>,
}

/// The parameter set every hefl key and ciphertext uses: the GLWE part of tfhe's
/// `V1_8_PARAM_MESSAGE_2_CARRY_2_KS_PBS_TUNIFORM_2M128`.
///
/// ```
/// use hefl::he::params::PARAMS;
///
/// // One ciphertext packs N values and weighs (k + 1) * N * 8 bytes.
/// assert_eq!(PARAMS.values_per_ciphertext(), 2048);
/// assert_eq!(PARAMS.ciphertext_bytes(), 32 * 1024);
/// ```
pub const PARAMS: GlweParams = GlweParams::from_tfhe(
    "V1_8_PARAM_MESSAGE_2_CARRY_2_KS_PBS_TUNIFORM_2M128",
    TFHE_PARAMETER_SET.glwe_dimension,
    TFHE_PARAMETER_SET.polynomial_size,
    TFHE_PARAMETER_SET.glwe_noise_distribution,
    TFHE_PARAMETER_SET.ciphertext_modulus,
);

impl GlweParams {
    /// Compile-time checked construction from the fields of a tfhe parameter constant:
    /// the noise must be TUniform (its bound is what the headroom checks rely on) and the
    /// modulus must be the native 2^64 (the fast path computes with wrapping u64 arithmetic).
    const fn from_tfhe(
        name: &'static str,
        glwe_dimension: GlweDimension,
        polynomial_size: PolynomialSize,
        noise: DynamicDistribution<u64>,
        ciphertext_modulus: CiphertextModulus<u64>,
    ) -> Self {
        let noise = match noise {
            DynamicDistribution::TUniform(noise) => noise,
            DynamicDistribution::Gaussian(_) => panic!("hefl needs TUniform GLWE noise"),
        };
        assert!(
            ciphertext_modulus.is_native_modulus(),
            "hefl needs the native modulus 2^64"
        );
        Self {
            name,
            glwe_dimension,
            polynomial_size,
            noise,
            ciphertext_modulus,
        }
    }

    /// The tfhe name of the parameter set, written in key files and ciphertext headers.
    ///
    /// ```
    /// assert!(hefl::he::params::PARAMS.name().starts_with("V1_8_"));
    /// ```
    pub const fn name(&self) -> &'static str {
        self.name
    }

    /// GLWE dimension k (number of mask polynomials per ciphertext).
    ///
    /// ```
    /// assert_eq!(hefl::he::params::PARAMS.glwe_dimension().0, 1);
    /// ```
    pub const fn glwe_dimension(&self) -> GlweDimension {
        self.glwe_dimension
    }

    /// GLWE size k + 1 (mask polynomials plus the body).
    ///
    /// ```
    /// assert_eq!(hefl::he::params::PARAMS.glwe_size().0, 2);
    /// ```
    pub const fn glwe_size(&self) -> GlweSize {
        GlweSize(self.glwe_dimension.0 + 1)
    }

    /// Polynomial size N: the number of values one ciphertext packs.
    ///
    /// ```
    /// assert_eq!(hefl::he::params::PARAMS.polynomial_size().0, 2048);
    /// ```
    pub const fn polynomial_size(&self) -> PolynomialSize {
        self.polynomial_size
    }

    /// The fresh-encryption noise distribution, TUniform(b): integers in [-2^b, 2^b].
    ///
    /// ```
    /// assert_eq!(hefl::he::params::PARAMS.noise().bound_log2(), 17);
    /// ```
    pub const fn noise(&self) -> TUniform<u64> {
        self.noise
    }

    /// log2 of the noise bound b: one fresh ciphertext carries noise |e| <= 2^b, a sum of
    /// P fresh ciphertexts |E| <= P * 2^b.
    ///
    /// ```
    /// assert_eq!(hefl::he::params::PARAMS.noise_bound_log2(), 17);
    /// ```
    pub const fn noise_bound_log2(&self) -> u32 {
        self.noise.bound_log2()
    }

    /// The ciphertext modulus (native, 2^64).
    ///
    /// ```
    /// assert!(hefl::he::params::PARAMS.ciphertext_modulus().is_native_modulus());
    /// ```
    pub const fn ciphertext_modulus(&self) -> CiphertextModulus<u64> {
        self.ciphertext_modulus
    }

    /// Values packed per ciphertext (= N, one per coefficient).
    ///
    /// ```
    /// assert_eq!(hefl::he::params::PARAMS.values_per_ciphertext(), 2048);
    /// ```
    pub const fn values_per_ciphertext(&self) -> usize {
        self.polynomial_size.0
    }

    /// u64 words in one ciphertext: (k + 1) * N.
    ///
    /// ```
    /// assert_eq!(hefl::he::params::PARAMS.ciphertext_words(), 4096);
    /// ```
    pub fn ciphertext_words(&self) -> usize {
        glwe_ciphertext_size(self.glwe_size(), self.polynomial_size)
    }

    /// Bytes of one ciphertext on the wire: (k + 1) * N * 8.
    ///
    /// ```
    /// assert_eq!(hefl::he::params::PARAMS.ciphertext_bytes(), 32768);
    /// ```
    pub fn ciphertext_bytes(&self) -> usize {
        self.ciphertext_words() * size_of::<u64>()
    }

    /// Number of ciphertexts needed to pack `len` values: ceil(len / N).
    ///
    /// ```
    /// use hefl::he::params::PARAMS;
    ///
    /// assert_eq!(PARAMS.ciphertexts_for(1), 1);
    /// assert_eq!(PARAMS.ciphertexts_for(2048), 1);
    /// assert_eq!(PARAMS.ciphertexts_for(2049), 2);
    /// assert_eq!(PARAMS.ciphertexts_for(101_770), 50);
    /// ```
    pub const fn ciphertexts_for(&self, len: usize) -> usize {
        len.div_ceil(self.polynomial_size.0)
    }

    /// `values` zero-padded to whole ciphertexts, as tfhe's `encrypt_glwe_ciphertext_list`
    /// takes them; with [`GlweParams::zeroed_glwe_list`], for running tfhe's own list
    /// encryption on the vectors hefl encrypts (interop tests, baselines).
    ///
    /// ```
    /// use hefl::he::params::PARAMS;
    ///
    /// let plaintext = PARAMS.padded_plaintext_list(&[7; 3000]);
    /// assert_eq!(plaintext.plaintext_count().0, 4096);
    /// let list = PARAMS.zeroed_glwe_list(PARAMS.ciphertexts_for(3000));
    /// assert_eq!(list.glwe_ciphertext_count().0, 2);
    /// ```
    pub fn padded_plaintext_list(&self, values: &[u64]) -> PlaintextList<Vec<u64>> {
        let mut padded = values.to_vec();
        padded.resize(
            self.ciphertexts_for(values.len()) * self.polynomial_size.0,
            0,
        );
        PlaintextList::from_container(padded)
    }

    /// A zeroed tfhe list of `count` ciphertexts of these parameters.
    pub fn zeroed_glwe_list(&self, count: usize) -> GlweCiphertextList<Vec<u64>> {
        GlweCiphertextList::new(
            0u64,
            self.glwe_size(),
            self.polynomial_size,
            GlweCiphertextCount(count),
            self.ciphertext_modulus,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tfhe::shortint::parameters::v1_8::VEC_ALL_CLASSIC_PBS_PARAMETERS;

    #[test]
    fn name_is_tfhe_name_of_the_constant() {
        let (_, tfhe_name) = VEC_ALL_CLASSIC_PBS_PARAMETERS
            .iter()
            .find(|(p, _)| **p == TFHE_PARAMETER_SET)
            .expect("constant listed by tfhe");
        assert_eq!(*tfhe_name, PARAMS.name());
    }

    #[test]
    fn parameters_match_the_design() {
        assert_eq!(PARAMS.glwe_dimension(), GlweDimension(1));
        assert_eq!(PARAMS.polynomial_size(), PolynomialSize(2048));
        assert_eq!(PARAMS.noise_bound_log2(), 17);
        assert!(PARAMS.ciphertext_modulus().is_native_modulus());
    }
}
