//! The versioned envelope around every binary file cuenv writes into the cache directory.
//!
//! Layout: 4 magic bytes naming the kind of file, a little-endian `u16` format version, two
//! reserved bytes, a `u64` payload length and the blake3 checksum of the payload, then the
//! payload. A reader that finds anything else (another kind, a future version, a truncated or
//! flipped file) gets an error it can turn into a cache miss; it never decodes garbage.

/// Bytes before the payload.
pub const HEADER_LEN: usize = 4 + 2 + 2 + 8 + 32;

/// Why an envelope could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// Shorter than its header or its declared length.
    #[error("truncated: {found} bytes, expected {expected}")]
    Truncated {
        /// Bytes present.
        found: usize,
        /// Bytes the header promises.
        expected: usize,
    },
    /// Not a file of the expected kind.
    #[error("bad magic bytes {found:?}, expected {expected:?}")]
    BadMagic {
        /// The magic found.
        found: [u8; 4],
        /// The magic expected.
        expected: [u8; 4],
    },
    /// A format this build does not read.
    #[error("unknown format version {found}, this build reads version {expected}")]
    UnknownVersion {
        /// The version found.
        found: u16,
        /// The version this build reads.
        expected: u16,
    },
    /// The payload does not match its checksum.
    #[error("checksum mismatch")]
    Checksum,
}

/// Wraps `payload` in an envelope of kind `magic` and `version`.
pub fn seal(magic: [u8; 4], version: u16, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&magic);
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(blake3::hash(payload).as_bytes());
    out.extend_from_slice(payload);
    out
}

/// Checks the envelope around `bytes` and returns its payload.
pub fn open(magic: [u8; 4], version: u16, bytes: &[u8]) -> Result<&[u8], EnvelopeError> {
    if bytes.len() < HEADER_LEN {
        return Err(EnvelopeError::Truncated { found: bytes.len(), expected: HEADER_LEN });
    }
    let found_magic: [u8; 4] = bytes[0..4].try_into().unwrap_or_default();
    if found_magic != magic {
        return Err(EnvelopeError::BadMagic { found: found_magic, expected: magic });
    }
    let found_version = u16::from_le_bytes([bytes[4], bytes[5]]);
    // The reserved bytes are zero in this version; anything else is a future format.
    if found_version != version || bytes[6..8] != [0, 0] {
        return Err(EnvelopeError::UnknownVersion { found: found_version, expected: version });
    }
    let mut length = [0u8; 8];
    length.copy_from_slice(&bytes[8..16]);
    let length = usize::try_from(u64::from_le_bytes(length)).unwrap_or(usize::MAX);
    let expected = HEADER_LEN.saturating_add(length);
    if bytes.len() != expected {
        return Err(EnvelopeError::Truncated { found: bytes.len(), expected });
    }
    let payload = &bytes[HEADER_LEN..];
    if blake3::hash(payload).as_bytes()[..] != bytes[16..48] {
        return Err(EnvelopeError::Checksum);
    }
    Ok(payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAGIC: [u8; 4] = *b"TEST";

    #[test]
    fn round_trip() {
        let sealed = seal(MAGIC, 3, b"payload");
        assert_eq!(open(MAGIC, 3, &sealed), Ok(&b"payload"[..]));
    }

    #[test]
    fn every_kind_of_damage_is_detected() {
        let sealed = seal(MAGIC, 3, b"payload");
        assert!(matches!(open(*b"ELSE", 3, &sealed), Err(EnvelopeError::BadMagic { .. })));
        assert_eq!(
            open(MAGIC, 4, &sealed),
            Err(EnvelopeError::UnknownVersion { found: 3, expected: 4 })
        );
        assert!(matches!(open(MAGIC, 3, &sealed[..10]), Err(EnvelopeError::Truncated { .. })));
        assert!(matches!(
            open(MAGIC, 3, &sealed[..sealed.len() - 1]),
            Err(EnvelopeError::Truncated { .. })
        ));
        for index in 0..sealed.len() {
            let mut flipped = sealed.clone();
            flipped[index] ^= 0x20;
            assert!(open(MAGIC, 3, &flipped).is_err(), "flip at {index} went unnoticed");
        }
    }
}
