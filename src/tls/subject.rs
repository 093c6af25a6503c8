//! The subject of an X.509 certificate as an RFC 4514 string
//! (`CN=client,O=Example`): the one field of a client certificate the
//! gateway forwards. A small DER walk over the fields before the subject;
//! anything it does not understand yields `None`, never a panic.

/// Short names of the common attribute types (RFC 4514 §3, plus email).
const NAMES: [(&[u8], &str); 9] = [
    (&[0x55, 0x04, 0x03], "CN"),
    (&[0x55, 0x04, 0x06], "C"),
    (&[0x55, 0x04, 0x07], "L"),
    (&[0x55, 0x04, 0x08], "ST"),
    (&[0x55, 0x04, 0x09], "STREET"),
    (&[0x55, 0x04, 0x0A], "O"),
    (&[0x55, 0x04, 0x0B], "OU"),
    (
        &[0x09, 0x92, 0x26, 0x89, 0x93, 0xF2, 0x2C, 0x64, 0x01, 0x19],
        "DC",
    ),
    (
        &[0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x09, 0x01],
        "emailAddress",
    ),
];

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;

/// One DER element: its tag, its contents and what follows it.
fn element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7F);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let len = rest[..count]
            .iter()
            .fold(0usize, |len, b| (len << 8) | usize::from(*b));
        (len, &rest[count..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// The contents of the element with `tag` at the start of `input`, and
/// what follows it.
fn expect(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (found, contents, rest) = element(input)?;
    (found == tag).then_some((contents, rest))
}

/// The certificate's subject, RFC 4514 style (most specific RDN first).
pub fn subject(cert_der: &[u8]) -> Option<String> {
    let (certificate, _) = expect(cert_der, SEQUENCE)?;
    let (tbs, _) = expect(certificate, SEQUENCE)?;
    let mut fields = tbs;
    // [0] EXPLICIT version, optional.
    if let Some((0xA0, _, rest)) = element(fields) {
        fields = rest;
    }
    // serialNumber, signature, issuer, validity, then subject.
    for _ in 0..4 {
        fields = element(fields)?.2;
    }
    let (mut rdns, _) = expect(fields, SEQUENCE)?;
    let mut parts = Vec::new();
    while !rdns.is_empty() {
        let (mut set, rest) = expect(rdns, SET)?;
        rdns = rest;
        let mut attributes = Vec::new();
        while !set.is_empty() {
            let (attribute, rest) = expect(set, SEQUENCE)?;
            set = rest;
            let (oid, value) = expect(attribute, OID)?;
            let (value_tag, value, _) = element(value)?;
            attributes.push(format!(
                "{}={}",
                type_name(oid),
                value_text(value_tag, value)
            ));
        }
        parts.push(attributes.join("+"));
    }
    parts.reverse();
    Some(parts.join(","))
}

fn type_name(oid: &[u8]) -> String {
    if let Some((_, name)) = NAMES.iter().find(|(known, _)| *known == oid) {
        return (*name).to_owned();
    }
    // Dotted decimal.
    let mut arcs = Vec::new();
    let mut value = 0u64;
    for (i, byte) in oid.iter().enumerate() {
        value = (value << 7) | u64::from(byte & 0x7F);
        if byte & 0x80 == 0 {
            if arcs.is_empty() {
                let first = (value / 40).min(2);
                arcs.push(first);
                arcs.push(value - first * 40);
            } else {
                arcs.push(value);
            }
            value = 0;
        } else if i == oid.len() - 1 {
            return "?".to_owned();
        }
    }
    arcs.iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(".")
}

/// A string value with RFC 4514 escapes; other types as `#hex`.
fn value_text(tag: u8, value: &[u8]) -> String {
    // UTF8String, PrintableString, TeletexString, IA5String.
    let text = match tag {
        0x0C | 0x13 | 0x14 | 0x16 => std::str::from_utf8(value).ok(),
        _ => None,
    };
    let Some(text) = text else {
        return std::iter::once("#".to_owned())
            .chain(value.iter().map(|b| format!("{b:02x}")))
            .collect();
    };
    let mut out = String::with_capacity(text.len());
    for (i, c) in text.chars().enumerate() {
        let edge = i == 0 && (c == ' ' || c == '#') || i + 1 == text.chars().count() && c == ' ';
        if edge || matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';' | '=') {
            out.push('\\');
            out.push(c);
        } else if c.is_control() {
            // Header values cannot carry control characters.
            for byte in c.to_string().bytes() {
                out.push_str(&format!("\\{byte:02x}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_none_not_a_panic() {
        for input in [
            &[][..],
            &[0x30],
            &[0x30, 0x85, 1, 2, 3, 4, 5],
            &[0x30, 0x05, 0x30],
        ] {
            assert_eq!(subject(input), None);
        }
    }

    #[test]
    fn dotted_oids_and_escapes() {
        assert_eq!(type_name(&[0x2B, 0x06, 0x01]), "1.3.6.1");
        assert_eq!(value_text(0x0C, b"a,b"), "a\\,b");
        assert_eq!(value_text(0x04, &[1, 2]), "#0102");
    }
}
