//! The cryptographic primitives of one round: X25519 agreement, HKDF-SHA256 derivations,
//! ChaCha20-Poly1305 share encryption and Ed25519 signatures on advertised keys.

use ring::{aead, hkdf, signature};
use x25519_dalek::{PublicKey, StaticSecret};

use super::error::SecAggError;
use super::ClientId;

/// Length of an X25519 public key, a derived seed and a round context hash.
pub const KEY_LEN: usize = 32;
/// Length of an Ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;
/// Length of the AEAD tag appended to every share ciphertext.
pub const TAG_LEN: usize = 16;

const ADVERT_DOMAIN: &[u8] = b"fedmmkt/secagg/v1/advertise";
const MASK_INFO: &[u8] = b"fedmmkt/secagg/v1/pairwise-mask";
const SHARE_INFO: &[u8] = b"fedmmkt/secagg/v1/share-encryption";

/// A fresh X25519 key pair drawn from the caller's RNG.
pub fn generate<R: rand::CryptoRng + ?Sized>(rng: &mut R) -> (StaticSecret, [u8; KEY_LEN]) {
    let mut bytes = [0u8; KEY_LEN];
    rng.fill_bytes(&mut bytes);
    let secret = StaticSecret::from(bytes);
    let public = PublicKey::from(&secret).to_bytes();
    (secret, public)
}

/// The X25519 shared secret with `peer`'s public key; rejects low-order (non-contributory) keys.
pub fn agree(
    secret: &StaticSecret,
    peer: ClientId,
    peer_public: &[u8; KEY_LEN],
) -> Result<[u8; KEY_LEN], SecAggError> {
    let shared = secret.diffie_hellman(&PublicKey::from(*peer_public));
    if !shared.was_contributory() {
        return Err(SecAggError::NonContributoryKey(peer));
    }
    Ok(shared.to_bytes())
}

/// The unordered pair (a, b) as little-endian bytes, low id first.
fn pair_info(label: &[u8], a: ClientId, b: ClientId) -> Vec<u8> {
    let (lo, hi) = if a < b { (a, b) } else { (b, a) };
    [label, &lo.to_le_bytes(), &hi.to_le_bytes()].concat()
}

/// The pseudo-random key for this round's context and a shared secret.
fn prk(context: &[u8; KEY_LEN], shared: &[u8; KEY_LEN]) -> hkdf::Prk {
    hkdf::Salt::new(hkdf::HKDF_SHA256, context).extract(shared)
}

/// The 256-bit seed of the pairwise mask between `a` and `b` (the same on both sides).
pub fn pairwise_seed(
    context: &[u8; KEY_LEN],
    shared: &[u8; KEY_LEN],
    a: ClientId,
    b: ClientId,
) -> Result<[u8; KEY_LEN], SecAggError> {
    let info = pair_info(MASK_INFO, a, b);
    let mut out = [0u8; KEY_LEN];
    prk(context, shared)
        .expand(&[&info], hkdf::HKDF_SHA256)
        .and_then(|okm| okm.fill(&mut out))
        .map_err(|_| SecAggError::Crypto("HKDF expand of the pairwise seed"))?;
    Ok(out)
}

/// The AEAD key protecting shares between `a` and `b` (both directions, told apart by the nonce).
pub fn share_key(
    context: &[u8; KEY_LEN],
    shared: &[u8; KEY_LEN],
    a: ClientId,
    b: ClientId,
) -> Result<aead::LessSafeKey, SecAggError> {
    let info = pair_info(SHARE_INFO, a, b);
    let prk = prk(context, shared);
    let info = [info.as_slice()];
    let okm = prk
        .expand(&info, &aead::CHACHA20_POLY1305)
        .map_err(|_| SecAggError::Crypto("HKDF expand of the share key"))?;
    Ok(aead::LessSafeKey::new(aead::UnboundKey::from(okm)))
}

/// Nonce (sender, receiver, 0): each key encrypts one message per direction per round.
fn nonce(sender: ClientId, receiver: ClientId) -> aead::Nonce {
    let mut n = [0u8; aead::NONCE_LEN];
    n[..4].copy_from_slice(&sender.to_le_bytes());
    n[4..8].copy_from_slice(&receiver.to_le_bytes());
    aead::Nonce::assume_unique_for_key(n)
}

/// Associated data binding a ciphertext to the round and the direction.
fn aad(context: &[u8; KEY_LEN], sender: ClientId, receiver: ClientId) -> Vec<u8> {
    [
        context.as_slice(),
        &sender.to_le_bytes(),
        &receiver.to_le_bytes(),
    ]
    .concat()
}

/// Encrypts `plaintext` from `sender` to `receiver`.
pub fn seal(
    key: &aead::LessSafeKey,
    context: &[u8; KEY_LEN],
    sender: ClientId,
    receiver: ClientId,
    plaintext: &[u8],
) -> Result<Vec<u8>, SecAggError> {
    let mut buf = plaintext.to_vec();
    key.seal_in_place_append_tag(
        nonce(sender, receiver),
        aead::Aad::from(aad(context, sender, receiver)),
        &mut buf,
    )
    .map_err(|_| SecAggError::Crypto("AEAD seal"))?;
    Ok(buf)
}

/// Decrypts and authenticates a ciphertext from `sender` to `receiver`.
pub fn open(
    key: &aead::LessSafeKey,
    context: &[u8; KEY_LEN],
    sender: ClientId,
    receiver: ClientId,
    ciphertext: &[u8],
) -> Result<Vec<u8>, SecAggError> {
    let mut buf = ciphertext.to_vec();
    let plain = key
        .open_in_place(
            nonce(sender, receiver),
            aead::Aad::from(aad(context, sender, receiver)),
            &mut buf,
        )
        .map_err(|_| SecAggError::DecryptionFailed { sender, receiver })?;
    Ok(plain.to_vec())
}

/// The bytes a client signs to vouch for its two advertised keys in this round.
pub fn advert_message(
    context: &[u8; KEY_LEN],
    client: ClientId,
    enc_public: &[u8; KEY_LEN],
    mask_public: &[u8; KEY_LEN],
) -> Vec<u8> {
    [
        ADVERT_DOMAIN,
        context,
        &client.to_le_bytes(),
        enc_public,
        mask_public,
    ]
    .concat()
}

/// Signs the advertised keys with the client's node identity key.
pub fn sign_advert(
    identity: &signature::Ed25519KeyPair,
    context: &[u8; KEY_LEN],
    client: ClientId,
    enc_public: &[u8; KEY_LEN],
    mask_public: &[u8; KEY_LEN],
) -> [u8; SIGNATURE_LEN] {
    let sig = identity.sign(&advert_message(context, client, enc_public, mask_public));
    let mut out = [0u8; SIGNATURE_LEN];
    out.copy_from_slice(sig.as_ref());
    out
}

/// Verifies advertised keys against the member's Ed25519 identity public key.
pub fn verify_advert(
    identity_public: &[u8; KEY_LEN],
    context: &[u8; KEY_LEN],
    client: ClientId,
    enc_public: &[u8; KEY_LEN],
    mask_public: &[u8; KEY_LEN],
    sig: &[u8; SIGNATURE_LEN],
) -> Result<(), SecAggError> {
    signature::UnparsedPublicKey::new(&signature::ED25519, identity_public)
        .verify(
            &advert_message(context, client, enc_public, mask_public),
            sig,
        )
        .map_err(|_| SecAggError::BadSignature(client))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    #[test]
    fn agreement_and_derivations_are_symmetric() {
        let mut rng = ChaCha20Rng::seed_from_u64(5);
        let (sa, pa) = generate(&mut rng);
        let (sb, pb) = generate(&mut rng);
        let ctx = [3u8; 32];
        let ab = agree(&sa, 1, &pb).unwrap();
        let ba = agree(&sb, 0, &pa).unwrap();
        assert_eq!(ab, ba);
        assert_eq!(
            pairwise_seed(&ctx, &ab, 0, 1).unwrap(),
            pairwise_seed(&ctx, &ba, 1, 0).unwrap()
        );
        assert_ne!(
            pairwise_seed(&ctx, &ab, 0, 1).unwrap(),
            pairwise_seed(&[4u8; 32], &ab, 0, 1).unwrap()
        );
        let ka = share_key(&ctx, &ab, 0, 1).unwrap();
        let kb = share_key(&ctx, &ba, 1, 0).unwrap();
        let ct = seal(&ka, &ctx, 0, 1, b"hello").unwrap();
        assert_eq!(ct.len(), 5 + TAG_LEN);
        assert_eq!(open(&kb, &ctx, 0, 1, &ct).unwrap(), b"hello");
        // Wrong direction, wrong round or a flipped bit all fail authentication.
        assert!(open(&kb, &ctx, 1, 0, &ct).is_err());
        assert!(open(&kb, &[9u8; 32], 0, 1, &ct).is_err());
        let mut bad = ct.clone();
        bad[0] ^= 1;
        assert!(open(&kb, &ctx, 0, 1, &bad).is_err());
    }

    #[test]
    fn low_order_keys_are_rejected() {
        let mut rng = ChaCha20Rng::seed_from_u64(6);
        let (s, _) = generate(&mut rng);
        assert_eq!(
            agree(&s, 7, &[0u8; 32]),
            Err(SecAggError::NonContributoryKey(7))
        );
    }

    #[test]
    fn signatures_bind_keys_round_and_client() {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let id = signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        let mut pk = [0u8; 32];
        pk.copy_from_slice(signature::KeyPair::public_key(&id).as_ref());
        let ctx = [1u8; 32];
        let sig = sign_advert(&id, &ctx, 4, &[2; 32], &[3; 32]);
        assert!(verify_advert(&pk, &ctx, 4, &[2; 32], &[3; 32], &sig).is_ok());
        assert!(verify_advert(&pk, &ctx, 5, &[2; 32], &[3; 32], &sig).is_err());
        assert!(verify_advert(&pk, &[0; 32], 4, &[2; 32], &[3; 32], &sig).is_err());
        assert!(verify_advert(&pk, &ctx, 4, &[3; 32], &[2; 32], &sig).is_err());
    }
}
