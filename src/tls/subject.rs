//! The subject of an X.509 certificate as an RFC 4514 string
//! (`CN=client,O=Example`): the one field of a client certificate the
//! gateway forwards. The certificate is read by x509-parser; anything it
//! does not understand yields `None`, never a panic.

use x509_parser::asn1_rs::Oid;

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

/// The certificate's subject, RFC 4514 style (most specific RDN first);
/// `None` if `cert_der` is not a certificate x509-parser reads.
pub fn subject(cert_der: &[u8]) -> Option<String> {
    let (_, certificate) = x509_parser::parse_x509_certificate(cert_der).ok()?;
    let mut parts: Vec<String> = certificate
        .subject()
        .iter_rdn()
        .map(|rdn| {
            rdn.iter()
                .map(|attribute| {
                    let value = attribute.attr_value();
                    format!(
                        "{}={}",
                        type_name(attribute.attr_type()),
                        value_text(value.tag().0, value.data)
                    )
                })
                .collect::<Vec<_>>()
                .join("+")
        })
        .collect();
    parts.reverse();
    Some(parts.join(","))
}

/// The attribute type's short name, else its dotted decimal OID.
fn type_name(oid: &Oid<'_>) -> String {
    if let Some((_, name)) = NAMES.iter().find(|(known, _)| *known == oid.as_bytes()) {
        return (*name).to_owned();
    }
    oid.to_id_string()
}

/// A string value with RFC 4514 escapes; other types as `#hex`.
fn value_text(tag: u32, value: &[u8]) -> String {
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
    fn a_certificate_s_subject_most_specific_first_with_escapes() {
        let mut params =
            rcgen::CertificateParams::new(Vec::<String>::new()).unwrap_or_else(|_| unreachable!());
        let mut name = rcgen::DistinguishedName::new();
        name.push(rcgen::DnType::CountryName, "NL");
        name.push(rcgen::DnType::OrganizationName, "Example, Inc.");
        name.push(rcgen::DnType::CommonName, " client+1");
        params.distinguished_name = name;
        let key = rcgen::KeyPair::generate().unwrap_or_else(|_| unreachable!());
        let cert = params.self_signed(&key).unwrap_or_else(|_| unreachable!());
        assert_eq!(
            subject(cert.der()).as_deref(),
            Some("CN=\\ client\\+1,O=Example\\, Inc.,C=NL")
        );
    }

    #[test]
    fn dotted_oids_and_escapes() {
        let oid = Oid::new(std::borrow::Cow::Borrowed(&[0x2B, 0x06, 0x01]));
        assert_eq!(type_name(&oid), "1.3.6.1");
        let cn = Oid::new(std::borrow::Cow::Borrowed(&[0x55, 0x04, 0x03]));
        assert_eq!(type_name(&cn), "CN");
        assert_eq!(value_text(0x0C, b"a,b"), "a\\,b");
        assert_eq!(value_text(0x04, &[1, 2]), "#0102");
    }
}
