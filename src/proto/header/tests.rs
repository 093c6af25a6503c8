use super::*;
use bytes::BytesMut;

fn decode(bytes: &[u8], table: &mut HeaderTable) -> Result<Headers, HeaderError> {
    let buf = Bytes::copy_from_slice(bytes);
    Headers::decode(&mut Reader::new(&buf), table)
}

const TRACE: [u8; 8] = [0xef, 0xcd, 0xab, 0x89, 0x67, 0x45, 0x23, 0x01];

#[test]
fn bare_cf_uint64_index_refers_to_the_static_table() {
    // Old runtimes: a full match as a fixed 9-byte uint64 index (§2.1).
    let mut table = HeaderTable::new();
    let list = decode(b"\x92\xcf\x00\x00\x00\x00\x00\x00\x00\x50\x02", &mut table).unwrap();
    let got: Vec<_> = list.iter().cloned().collect();
    assert_eq!(got[0].name, "trace_id");
    assert_eq!(got[0].value, Bytes::from_static(&[0; 8]));
    assert_eq!(
        (got[1].name.as_ref(), got[1].value.as_ref()),
        (&b":method"[..], &b"GET"[..])
    );
    assert_eq!(list.trace_id(), Some(0));
}

#[test]
fn store_true_entries_are_referenced_later() {
    // Python's `[true, 80, u64le(..)]` stores trace_id; a later bare index 83
    // (the newest dynamic entry) refers to it.
    let mut table = HeaderTable::new();
    let mut first = vec![0x91, 0x93, 0xc3, 0x50, 0xa8];
    first.extend_from_slice(&TRACE);
    let list = decode(&first, &mut table).unwrap();
    assert_eq!(list.trace_id(), Some(0x0123_4567_89ab_cdef));
    assert_eq!(table.len(), 1);
    assert_eq!(table.size(), 8 + 8 + 32);

    // [true, "x-custom", "1"] then index 83 (x-custom) and 84 (trace_id).
    let second = b"\x93\x93\xc3\xa8x-custom\xa11\xcc\x53\xcd\x00\x54";
    let list = decode(second, &mut table).unwrap();
    let got: Vec<_> = list.iter().cloned().collect();
    assert_eq!(got[1].name, "x-custom");
    assert_eq!(got[2].name, "trace_id");
    assert_eq!(got[2].value, Bytes::copy_from_slice(&TRACE));
}

#[test]
fn name_index_form_takes_the_name_from_the_table() {
    let mut table = HeaderTable::new();
    // [false, 23, "OAuth abc"]: authorization, not stored.
    let list = decode(b"\x91\x93\xc2\x17\xa9OAuth abc", &mut table).unwrap();
    assert_eq!(
        list.get(b"authorization").map(|v| &v[..]),
        Some(&b"OAuth abc"[..])
    );
    assert!(table.is_empty());
}

#[test]
fn bin_and_str_forms_decode_alike() {
    let mut table = HeaderTable::new();
    let list = decode(
        b"\x92\x93\xc2\xc4\x01a\xc4\x01b\x93\xc2\xa1a\xd9\x01b",
        &mut table,
    )
    .unwrap();
    let got: Vec<_> = list.iter().cloned().collect();
    assert_eq!(got[0], got[1]);
}

#[test]
fn bad_references_are_errors() {
    let mut table = HeaderTable::new();
    assert_eq!(
        decode(b"\x91\x00", &mut table),
        Err(HeaderError::BadIndex(0))
    );
    assert_eq!(
        decode(b"\x91\x53", &mut table),
        Err(HeaderError::BadIndex(83))
    );
    assert_eq!(
        decode(b"\x91\x93\xc2\x60\xa1x", &mut table),
        Err(HeaderError::BadIndex(96))
    );
    assert!(matches!(
        decode(b"\x91\x92\xc2\xa1x", &mut table),
        Err(HeaderError::Malformed(_))
    ));
    assert!(matches!(
        decode(b"\x91\xc0", &mut table),
        Err(HeaderError::Malformed(_))
    ));
}

#[test]
fn typed_setters_emit_the_spec_bytes() {
    // §2.3: request_timeout = 5000 ms and trace_bit = on, runtime (str) form.
    let mut headers = Headers::new();
    headers.set_request_timeout(Duration::from_millis(5000));
    headers.set_trace_bit(true);
    let mut buf = BytesMut::new();
    headers.encode(&mut buf);
    let mut expected = vec![0x92, 0x93, 0xc2, 0xaf];
    expected.extend_from_slice(b"request_timeout");
    expected.extend_from_slice(&[0xa8, 0x88, 0x13, 0, 0, 0, 0, 0, 0]);
    expected.extend_from_slice(&[0x93, 0xc2, 0xa9]);
    expected.extend_from_slice(b"trace_bit\xa11");
    assert_eq!(&buf[..], &expected[..]);
    assert_eq!(headers.encoded_len(), expected.len());
    assert_eq!(headers.request_timeout(), Some(Duration::from_millis(5000)));
    assert_eq!(headers.trace_bit(), Some(true));
}

#[test]
fn invalid_reserved_headers_cannot_be_inserted() {
    let mut headers = Headers::new();
    for (name, value) in [
        (&b"trace_id"[..], &b"1234567"[..]),
        (b"span_id", b"123456789"),
        (b"parent_id", b""),
        (b"request_timeout", b"5000"),
        (b"trace_bit", b"true"),
        (b"trace_bit", b""),
    ] {
        let err = headers
            .insert(Bytes::copy_from_slice(name), Bytes::copy_from_slice(value))
            .unwrap_err();
        assert_eq!(err.name, name);
    }
    assert!(headers.is_empty());
    headers.insert("trace_bit", "0").unwrap();
    headers
        .insert("authorization", &b"anything \xff goes"[..])
        .unwrap();
    assert_eq!(headers.len(), 2);
}

#[test]
fn decoded_invalid_headers_fail_validation() {
    let mut table = HeaderTable::new();
    let list = decode(b"\x91\x93\xc2\xa8trace_id\xa3abc", &mut table).unwrap();
    assert_eq!(list.trace_id(), None);
    assert!(list.validate().is_err());
}

#[test]
fn set_trace_replaces_and_reads_back() {
    let mut headers = Headers::new();
    let trace = TraceContext {
        trace_id: 0x4d2,
        span_id: 0x9e37_79b9_7f4a_7c15,
        parent_id: 0x4d2,
    };
    headers.set_trace(TraceContext::default());
    headers.set_trace(trace);
    assert_eq!(headers.len(), 3);
    assert_eq!(headers.trace(), Some(trace));
    headers.validate().unwrap();
}
