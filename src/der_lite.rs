//! Minimal DER writing and reading for the few structures whose exact bytes matter
//! (SpcIndirectDataContent). ITU-T X.690 §8.1 (identifier and length octets), DER rules §10.

/// Encode one TLV with a definite, minimal-length length (X.690 §8.1.3, §10.1).
pub fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + 6);
    out.push(tag);
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

/// Encode a SEQUENCE of already-encoded elements.
pub fn seq(parts: &[&[u8]]) -> Vec<u8> {
    tlv(0x30, &parts.concat())
}

/// Encode an OBJECT IDENTIFIER.
pub fn oid(o: &const_oid::ObjectIdentifier) -> Vec<u8> {
    tlv(0x06, o.as_bytes())
}

/// One decoded TLV: its tag, its content, and the bytes after it.
#[derive(Debug, Clone, Copy)]
pub struct Tlv<'a> {
    /// Identifier octet (single-byte tags only).
    pub tag: u8,
    /// Content octets.
    pub content: &'a [u8],
    /// Everything after this TLV.
    pub rest: &'a [u8],
}

/// Read one TLV with a single-byte tag and a definite length. `None` on any malformation.
pub fn read(buf: &[u8]) -> Option<Tlv<'_>> {
    let (&tag, rest) = buf.split_first()?;
    if tag & 0x1f == 0x1f {
        return None; // multi-byte tags are not used in the structures we read
    }
    let (&l0, rest) = rest.split_first()?;
    let (len, rest) = if l0 < 0x80 {
        (usize::from(l0), rest)
    } else {
        let n = usize::from(l0 & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some(Tlv {
        tag,
        content: &rest[..len],
        rest: &rest[len..],
    })
}

/// Read one TLV and require its tag.
pub fn expect(buf: &[u8], tag: u8) -> Option<Tlv<'_>> {
    read(buf).filter(|t| t.tag == tag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_lengths() {
        for n in [0usize, 1, 127, 128, 255, 256, 65535, 65536] {
            let c = vec![7u8; n];
            let e = tlv(0x04, &c);
            let t = read(&e).unwrap();
            assert_eq!(t.tag, 0x04);
            assert_eq!(t.content.len(), n);
            assert!(t.rest.is_empty());
        }
        assert!(read(&[0x30, 0x85, 1, 1, 1, 1, 1]).is_none());
        assert!(read(&[0x30, 0x05, 1]).is_none());
        assert!(read(&[]).is_none());
    }
}
