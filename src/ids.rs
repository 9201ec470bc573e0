//! Connection, request and message ids in API Gateway's format.
//!
//! API Gateway ids are 16 characters: 11 random bytes encoded as URL-safe base64 with `=`
//! padding (`Tq3mxb7WNjMCFhA=`). Handlers treat them as opaque strings, but AWS rejects ids of
//! any other shape with `400 Invalid connectionId`, and so does this gateway.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE;

/// Length of an id in characters.
pub(crate) const ID_LEN: usize = 16;

/// URL-safe base64's alphabet, in value order.
const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Each byte's value in [`ALPHABET`] (0 for bytes outside it, which no id holds).
const LEAD: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut i = 0;
    while i < 64 {
        table[ALPHABET[i] as usize] = i as u8;
        i += 1;
    }
    table
};

/// An API Gateway id: 16 ASCII characters, stored inline.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Id([u8; ID_LEN]);

impl Id {
    /// A new random id.
    pub fn random() -> Self {
        let raw: [u8; 11] = rand::random();
        let mut out = [0u8; ID_LEN];
        let written = URL_SAFE
            .encode_slice(raw, &mut out)
            .expect("11 bytes encode to 16 characters");
        debug_assert_eq!(written, ID_LEN);
        Id(out)
    }

    /// A new random id whose first character's value is `lead` (below 64): the first
    /// character carries six random bits of the id, so any value keeps the id well formed.
    /// How a worker makes ids that name it ([`crate::workers`]).
    pub(crate) fn random_with_lead(lead: u8) -> Self {
        let mut id = Id::random();
        id.0[0] = ALPHABET[usize::from(lead & 63)];
        id
    }

    /// The value (0 to 63) of the id's first character.
    pub(crate) fn lead(&self) -> u8 {
        LEAD[usize::from(self.0[0])]
    }

    /// Parses an id, accepting only the exact AWS shape.
    pub fn parse(s: &str) -> Option<Self> {
        let bytes = s.as_bytes();
        if bytes.len() != ID_LEN || bytes[15] != b'=' {
            return None;
        }
        // Decoding checks the alphabet and that the unused low bits of the 15th character are 0.
        let mut raw = [0u8; 12];
        match URL_SAFE.decode_slice(bytes, &mut raw) {
            Ok(11) => {}
            _ => return None,
        }
        let mut out = [0u8; ID_LEN];
        out.copy_from_slice(bytes);
        Some(Id(out))
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        // Only ever built from base64 output or from a validated &str.
        std::str::from_utf8(&self.0).expect("ids are ASCII")
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Id({})", self.as_str())
    }
}

impl serde::Serialize for Id {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl std::str::FromStr for Id {
    type Err = InvalidId;
    fn from_str(s: &str) -> Result<Self, InvalidId> {
        Id::parse(s).ok_or(InvalidId)
    }
}

/// The string is not an id of API Gateway's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid id")]
pub struct InvalidId;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_made_with_a_lead_keeps_it_and_the_aws_shape() {
        for lead in 0..64 {
            let id = Id::random_with_lead(lead);
            assert_eq!(id.lead(), lead);
            assert_eq!(Id::parse(id.as_str()), Some(id));
        }
    }

    #[test]
    fn random_ids_have_the_aws_shape() {
        for _ in 0..1000 {
            let id = Id::random();
            let s = id.as_str();
            assert_eq!(s.len(), 16);
            assert!(s.ends_with('='));
            assert!("AEIMQUYcgkosw048".contains(&s[14..15]), "{s}");
            assert!(
                s[..15]
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            );
            assert_eq!(Id::parse(s), Some(id));
        }
    }

    #[test]
    fn parse_accepts_real_ids_and_rejects_others() {
        assert!(Id::parse("Tq3mxb7WNjMCFhA=").is_some());
        assert!(Id::parse("Mx_4gfpqPHcCIVA=").is_some());
        assert!(Id::parse("Tq3mxb7WNjMCFhA").is_none());
        assert!(Id::parse("Tq3mxb7WNjMCFhB=").is_none(), "low bits set");
        assert!(Id::parse("Tq3mxb7WNjMCF+A=").is_none(), "not url-safe");
        assert!(Id::parse("6c1c4b0f-5d1e-4f3a-9c1e-3b2f1a0e9d8c").is_none());
        assert!(Id::parse("").is_none());
        assert!(Id::parse("Tq3mxb7WNjMCFhA=x").is_none());
    }

    #[test]
    fn ids_are_distinct() {
        let ids: std::collections::HashSet<_> = (0..10_000).map(|_| Id::random()).collect();
        assert_eq!(ids.len(), 10_000);
    }
}
