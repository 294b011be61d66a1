//! A bounded look at DER before the `der` crate decodes it (ITU-T X.690 §8.1: identifier and
//! length octets). Structures are decoded by `der` (derive types, `cms`, `x509-cert`); this
//! module only (a) finds where the first element of a buffer ends — osslsigncode counts its
//! zero padding in a signature's length — and (b) checks the shape of untrusted input first:
//! `der` sorts every SET OF it decodes (quadratic in its element count) and recurses without a
//! depth limit, so a hostile signature with thousands of certificates, or deep nesting, would
//! cost far more than its size. `der` has no option for either bound.

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

/// Why a DER structure was refused before decoding.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DerShapeError {
    /// Larger than the caller's limit.
    #[error("{len} bytes of DER, more than the {max}-byte limit")]
    TooLong {
        /// The length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Not a sequence of definite-length, single-byte-tag TLVs.
    #[error("malformed DER at offset {offset}")]
    Malformed {
        /// Offset of the bad TLV.
        offset: usize,
    },
    /// Nested deeper than 48 levels.
    #[error("DER nested deeper than {max} levels at offset {offset}")]
    TooDeep {
        /// Offset of the element.
        offset: usize,
        /// The limit.
        max: usize,
    },
    /// A `SET OF` (or an implicitly tagged one, such as CMS `certificates [0]`) with more
    /// elements than 64.
    #[error("DER SET at offset {offset} has more than {max} elements")]
    SetTooLarge {
        /// Offset of the SET.
        offset: usize,
        /// The limit.
        max: usize,
    },
}

/// Most elements accepted in one `SET OF`. The `der` crate sorts a decoded `SET OF` by
/// insertion sort, re-encoding both elements for every comparison (X.690 §11.6 order), so
/// its cost grows with the square of the count. Authenticode signatures carry a handful of
/// certificates; an RDN has one or two attributes.
pub const MAX_SET_ELEMENTS: usize = 64;
/// Deepest nesting accepted (a certificate is about 8 levels deep, a PKCS#7 with a
/// countersignature about 20).
pub const MAX_DEPTH: usize = 48;

/// Check, in time linear in `buf.len()`, that `buf` is a well-formed run of DER TLVs no longer
/// than `max_len`, nested at most [`MAX_DEPTH`] deep, with no `SET` or context-specific
/// constructed element holding more than [`MAX_SET_ELEMENTS`] elements. Run before handing
/// untrusted bytes to a decoder whose cost is not linear.
pub fn check_shape(buf: &[u8], max_len: usize) -> Result<(), DerShapeError> {
    if buf.len() > max_len {
        return Err(DerShapeError::TooLong {
            len: buf.len(),
            max: max_len,
        });
    }
    walk(buf, 0, 0, None)
}

fn walk(
    mut buf: &[u8],
    base: usize,
    depth: usize,
    set_at: Option<usize>,
) -> Result<(), DerShapeError> {
    let mut pos = base;
    let mut count = 0usize;
    while !buf.is_empty() {
        let t = read(buf).ok_or(DerShapeError::Malformed { offset: pos })?;
        count += 1;
        if let Some(offset) = set_at {
            if count > MAX_SET_ELEMENTS {
                return Err(DerShapeError::SetTooLarge {
                    offset,
                    max: MAX_SET_ELEMENTS,
                });
            }
        }
        let header = buf.len() - t.rest.len() - t.content.len();
        if t.tag & 0x20 != 0 {
            if depth >= MAX_DEPTH {
                return Err(DerShapeError::TooDeep {
                    offset: pos,
                    max: MAX_DEPTH,
                });
            }
            // SET (0x31) and context-specific constructed tags ([n] IMPLICIT SET OF, as CMS
            // certificates and attributes) are the ones the decoder sorts.
            let counted = t.tag == 0x31 || t.tag & 0xe0 == 0xa0;
            walk(t.content, pos + header, depth + 1, counted.then_some(pos))?;
        }
        pos += header + t.content.len();
        buf = t.rest;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One TLV with a minimal definite length (X.690 §8.1.3), to build test inputs.
    fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
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

    fn seq(parts: &[&[u8]]) -> Vec<u8> {
        tlv(0x30, &parts.concat())
    }

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

    #[test]
    fn shape_limits() {
        let cert_like = seq(&[&tlv(0x31, &tlv(0x02, &[1])), &tlv(0x04, b"x")]);
        assert_eq!(check_shape(&cert_like, 1 << 20), Ok(()));
        assert!(matches!(
            check_shape(&cert_like, 4),
            Err(DerShapeError::TooLong { .. })
        ));
        let elems: Vec<Vec<u8>> = (0..=MAX_SET_ELEMENTS as u8)
            .map(|i| tlv(0x02, &[i]))
            .collect();
        let refs: Vec<&[u8]> = elems.iter().map(Vec::as_slice).collect();
        let big = tlv(0xa0, &refs.concat());
        assert!(matches!(
            check_shape(&big, 1 << 20),
            Err(DerShapeError::SetTooLarge { offset: 0, .. })
        ));
        let ok = tlv(0xa0, &refs[1..].concat());
        assert_eq!(check_shape(&ok, 1 << 20), Ok(()));
        let mut deep = tlv(0x05, &[]);
        for _ in 0..=MAX_DEPTH {
            deep = seq(&[&deep]);
        }
        assert!(matches!(
            check_shape(&deep, 1 << 20),
            Err(DerShapeError::TooDeep { .. })
        ));
        assert!(matches!(
            check_shape(&[0x30, 0x05, 0x02], 1 << 20),
            Err(DerShapeError::Malformed { offset: 0 })
        ));
    }
}
