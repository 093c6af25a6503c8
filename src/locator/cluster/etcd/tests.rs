use super::*;

#[test]
fn base64_round_trips() {
    for (raw, encoded) in [
        ("", ""),
        ("f", "Zg=="),
        ("fo", "Zm8="),
        ("foo", "Zm9v"),
        ("foob", "Zm9vYg=="),
        ("/rpcgate/groups/canary", "L3JwY2dhdGUvZ3JvdXBzL2NhbmFyeQ=="),
    ] {
        assert_eq!(b64(raw.as_bytes()), encoded);
        assert_eq!(unb64(encoded).unwrap(), raw.as_bytes());
    }
    let all: Vec<u8> = (0..=255).collect();
    assert_eq!(unb64(&b64(&all)).unwrap(), all);
    assert_eq!(unb64("not base64!"), None);
}

#[test]
fn prefix_ends_and_authorities() {
    assert_eq!(prefix_end(b"/a"), b"/b");
    assert_eq!(prefix_end(b"a\xff"), b"b");
    assert_eq!(prefix_end(b""), b"\0");
    let plain = endpoint("http://127.0.0.1:2379").unwrap();
    assert_eq!(plain.authority, "127.0.0.1:2379");
    assert!(plain.tls_name.is_none());
    assert_eq!(endpoint("http://etcd").unwrap().authority, "etcd:2379");
    let secure = endpoint("https://[::1]").unwrap();
    assert_eq!(secure.authority, "[::1]:2379");
    assert!(secure.tls_name.is_some());
    assert!(endpoint("etcd:2379").is_err());
    assert!(endpoint("ftp://etcd:2379").is_err());
    assert!(is_loopback("127.0.0.2:2379"));
    assert!(is_loopback("[::1]:2379"));
    assert!(is_loopback("LOCALHOST:1"));
    assert!(!is_loopback("10.0.0.1:2379"));
    assert!(!is_loopback("etcd:2379"));
}
