use super::*;
use bytes::BytesMut;

fn encoded(f: impl FnOnce(&mut BytesMut)) -> Vec<u8> {
    let mut buf = BytesMut::new();
    f(&mut buf);
    buf.to_vec()
}

#[test]
fn strings_use_v4_forms_only() {
    assert_eq!(encoded(|b| put_str(b, b"echo")), b"\xa4echo");
    let s31 = [b'x'; 31];
    assert_eq!(encoded(|b| put_str(b, &s31))[0], 0xbf);
    let s32 = [b'x'; 32];
    assert_eq!(encoded(|b| put_str(b, &s32))[..3], [0xda, 0x00, 0x20]);
    let s255 = [b'x'; 255];
    assert_eq!(encoded(|b| put_str(b, &s255))[..3], [0xda, 0x00, 0xff]);
    let big = vec![b'x'; 0x1_0000];
    assert_eq!(
        encoded(|b| put_str(b, &big))[..5],
        [0xdb, 0x00, 0x01, 0x00, 0x00]
    );
    assert_eq!(str_header_len(32), 3);
}

#[test]
fn integers_use_smallest_forms() {
    assert_eq!(encoded(|b| put_uint(b, 1)), [0x01]);
    assert_eq!(encoded(|b| put_uint(b, 200)), [0xcc, 0xc8]);
    assert_eq!(encoded(|b| put_uint(b, 0x52ff)), [0xcd, 0x52, 0xff]);
    assert_eq!(encoded(|b| put_uint(b, 1 << 32))[0], 0xcf);
    assert_eq!(encoded(|b| put_int(b, -1)), [0xff]);
    assert_eq!(encoded(|b| put_int(b, -200)), [0xd1, 0xff, 0x38]);
    for v in [0, 0x7f, 0x80, 0xff, 0x100, 0xffff, 0x1_0000, u64::MAX] {
        assert_eq!(encoded(|b| put_uint(b, v)).len(), uint_len(v));
    }
}

#[test]
fn reader_accepts_every_integer_width() {
    for (bytes, value) in [
        (&[0x05][..], 5i128),
        (&[0xcc, 0x05], 5),
        (&[0xcd, 0x00, 0x05], 5),
        (&[0xce, 0, 0, 0, 0x05], 5),
        (&[0xcf, 0, 0, 0, 0, 0, 0, 0, 0x05], 5),
        (&[0xd0, 0x05], 5),
        (&[0xd3, 0, 0, 0, 0, 0, 0, 0, 0x05], 5),
        (&[0xd0, 0xfb], -5),
        (&[0xfb], -5),
    ] {
        let buf = Bytes::copy_from_slice(bytes);
        assert_eq!(Reader::new(&buf).read_integer(), Ok(value), "{bytes:x?}");
    }
    let neg = Bytes::from_static(&[0xff]);
    assert_eq!(
        Reader::new(&neg).read_uint(),
        Err(MsgpackError::OutOfRange("u64"))
    );
}

#[test]
fn reader_accepts_str_and_bin_alike_without_utf8() {
    for bytes in [
        &b"\xa2\xff\xfe"[..],
        b"\xd9\x02\xff\xfe",
        b"\xda\x00\x02\xff\xfe",
        b"\xc4\x02\xff\xfe",
        b"\xc6\x00\x00\x00\x02\xff\xfe",
    ] {
        let buf = Bytes::copy_from_slice(bytes);
        assert_eq!(
            Reader::new(&buf).read_bytes().as_deref(),
            Ok(&b"\xff\xfe"[..])
        );
    }
}

#[test]
fn scanner_finds_ends_and_asks_for_more() {
    let frame = b"\x94\x01\x00\x91\xa4echo\x90";
    assert_eq!(scan_value(frame, 1024), Ok(Scan::Complete(frame.len())));
    for cut in 0..frame.len() {
        assert!(matches!(
            scan_value(&frame[..cut], 1024),
            Ok(Scan::Incomplete { min_len }) if min_len > cut && min_len <= frame.len()
        ));
    }
    assert_eq!(scan_value(b"\xc1", 1024), Err(ScanError::Reserved));
    // A str32 declaring 1 GiB is refused before any byte of it arrives.
    assert_eq!(
        scan_value(b"\xdb\x40\x00\x00\x00", 1 << 20),
        Err(ScanError::TooLong)
    );
    // So is an array claiming more elements than could ever fit.
    assert_eq!(
        scan_value(b"\xdd\xff\xff\xff\xff", 1 << 20),
        Err(ScanError::TooLong)
    );
}

#[test]
fn values_round_trip() {
    let value = Value::Map(vec![
        (Value::Bytes(Bytes::from_static(b"k")), Value::Int(-7)),
        (
            Value::Int(1),
            Value::Array(vec![Value::Nil, Value::Bool(true), Value::Float(1.5)]),
        ),
    ]);
    let buf = Bytes::from(encoded(|b| value.encode(b)));
    assert_eq!(Reader::new(&buf).read_value(), Ok(value));
}

#[test]
fn deep_nesting_is_refused_not_overflowed() {
    let buf = Bytes::from(vec![0x91; 10_000]);
    assert!(Reader::new(&buf).read_value().is_err());
}
