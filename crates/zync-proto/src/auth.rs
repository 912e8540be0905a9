//! The handshake's proofs: each side shows that it holds the shared token by answering the
//! other side's fresh nonce with an HMAC-SHA256 over both nonces, never by sending the token
//! (docs/ARCHITECTURE.md, invariant 8; docs/PROTOCOL.md, "Handshake").
//!
//! A proof is bound to one connection (both nonces), to one direction (a label per role, so a
//! daemon's proof can never be played back as a client's) and to the client id, so a recorded
//! handshake is worth nothing on any other connection.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Bytes in a nonce; on the wire it is lowercase hex, twice as many characters.
pub const NONCE_LEN: usize = 32;

/// Bytes in a proof (one HMAC-SHA256); lowercase hex on the wire.
pub const PROOF_LEN: usize = 32;

/// Which end a proof speaks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The daemon on E, answering the client's nonce in HELLO's reply.
    Daemon,
    /// The client on R, answering the daemon's nonce in AUTH.
    Client,
}

impl Role {
    /// A label per role and protocol, so proofs of one role never verify as the other's.
    fn label(self) -> &'static [u8] {
        match self {
            Role::Daemon => b"zync/2 daemon proof\0",
            Role::Client => b"zync/2 client proof\0",
        }
    }
}

/// A fresh random value that one side asks the other to prove against.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Nonce([u8; NONCE_LEN]);

impl std::fmt::Debug for Nonce {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Nonce({})", self.to_hex())
    }
}

impl Nonce {
    /// A nonce from the operating system's random source.
    ///
    /// # Errors
    /// When the random source cannot be read (a broken system; retrying will not help).
    pub fn generate() -> Result<Nonce, getrandom::Error> {
        let mut bytes = [0u8; NONCE_LEN];
        getrandom::fill(&mut bytes)?;
        Ok(Nonce(bytes))
    }

    /// The nonce as it travels: 64 lowercase hex characters.
    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }

    /// Parses a nonce from the wire.
    ///
    /// # Errors
    /// Anything but exactly 64 hex characters, with what was wrong.
    pub fn from_hex(text: &str) -> Result<Nonce, String> {
        Ok(Nonce(unhex(text, "nonce")?))
    }
}

/// The proof `role` gives for this connection: HMAC-SHA256 keyed with the token over the
/// role's label, both nonces and the client id, as 64 lowercase hex characters.
pub fn proof(token: &str, role: Role, client: &Nonce, daemon: &Nonce, client_id: &str) -> String {
    hex(&mac(token, role, client, daemon, client_id)
        .finalize()
        .into_bytes())
}

/// Whether `given` (hex from the wire) is the proof `role` must give for this connection.
/// Compared in constant time (`hmac`'s `verify_slice`, built on `subtle`), so the timing of a
/// refusal says nothing about how close a guess was.
pub fn verify(
    token: &str,
    role: Role,
    client: &Nonce,
    daemon: &Nonce,
    client_id: &str,
    given: &str,
) -> bool {
    let Ok(given) = unhex::<PROOF_LEN>(given, "proof") else {
        return false;
    };
    mac(token, role, client, daemon, client_id)
        .verify_slice(&given)
        .is_ok()
}

fn mac(token: &str, role: Role, client: &Nonce, daemon: &Nonce, client_id: &str) -> Hmac<Sha256> {
    // HMAC takes keys of any length; this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(token.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    mac.update(role.label());
    mac.update(&client.0);
    mac.update(&daemon.0);
    // Last and variable-length: the fixed-length fields before it keep the input unambiguous.
    mac.update(client_id.as_bytes());
    mac
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    out
}

fn unhex<const N: usize>(text: &str, what: &str) -> Result<[u8; N], String> {
    let digits = text.as_bytes();
    if digits.len() != N * 2 {
        return Err(format!(
            "a {what} is {} hex characters, not {}",
            N * 2,
            digits.len()
        ));
    }
    let mut out = [0u8; N];
    for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        let high = hex_value(pair[0]);
        let low = hex_value(pair[1]);
        match (high, low) {
            (Some(h), Some(l)) => *byte = h << 4 | l,
            _ => return Err(format!("a {what} is hex characters only (0-9, a-f)")),
        }
    }
    Ok(out)
}

fn hex_value(digit: u8) -> Option<u8> {
    char::from(digit)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nonces() -> (Nonce, Nonce) {
        (Nonce([1; NONCE_LEN]), Nonce([2; NONCE_LEN]))
    }

    #[test]
    fn a_proof_verifies_for_its_own_role_token_nonces_and_client_only() {
        let (c, d) = nonces();
        let p = proof("s3cret", Role::Client, &c, &d, "client-a");
        assert_eq!(p.len(), PROOF_LEN * 2);
        assert!(verify("s3cret", Role::Client, &c, &d, "client-a", &p));
        assert!(!verify("s3cres", Role::Client, &c, &d, "client-a", &p));
        assert!(
            !verify("s3cret", Role::Daemon, &c, &d, "client-a", &p),
            "a client's proof must never pass as the daemon's"
        );
        assert!(
            !verify("s3cret", Role::Client, &d, &c, "client-a", &p),
            "nonces swapped"
        );
        let fresh = Nonce([3; NONCE_LEN]);
        assert!(
            !verify("s3cret", Role::Client, &c, &fresh, "client-a", &p),
            "a proof recorded on one connection must fail against a fresh daemon nonce"
        );
        assert!(!verify("s3cret", Role::Client, &c, &d, "client-b", &p));
    }

    #[test]
    fn a_known_answer_pins_the_construction() {
        // HMAC-SHA256(key "token", "zync/2 daemon proof\0" || 32 x 0x01 || 32 x 0x02 || "id"),
        // computed independently with Python's hmac module.
        let (c, d) = nonces();
        assert_eq!(
            proof("token", Role::Daemon, &c, &d, "id"),
            "79dac5323396861e1260cd054ccf96b01daa73520eaaa1f679829dc1d7077816"
        );
    }

    #[test]
    fn malformed_proofs_and_nonces_are_refused() {
        let (c, d) = nonces();
        let p = proof("t", Role::Daemon, &c, &d, "x");
        let verifies = |given: &str| verify("t", Role::Daemon, &c, &d, "x", given);
        assert!(verifies(&p));
        for bad in [&p[..62], "", &format!("{}zz", &p[..62]), &format!("{p}00")] {
            assert!(!verifies(bad), "{bad:?} verified");
        }
        assert!(Nonce::from_hex("ab").is_err());
        assert!(Nonce::from_hex(&"g".repeat(64)).is_err());
        let n = Nonce::generate().expect("random");
        assert_eq!(Nonce::from_hex(&n.to_hex()), Ok(n));
        assert_ne!(Nonce::generate().expect("random"), n);
    }
}
