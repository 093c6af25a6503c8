//! The header table: owns the static table of §2.1 and the per-connection,
//! receive-side dynamic table with its HPACK-style size accounting.

use std::collections::VecDeque;

use bytes::Bytes;

use super::Header;

/// Index 0 is reserved; 1–61 are RFC 7541's static table; 62–79 are empty
/// placeholders; 80–82 are the trace headers with 8 zero bytes each.
pub const STATIC_TABLE_LEN: u64 = 83;

/// The dynamic table's capacity in bytes, fixed by the runtime (§2.1).
pub const DYNAMIC_TABLE_CAPACITY: usize = 4096;

/// Per-entry overhead in the size accounting, as in RFC 7541 §4.1.
pub const ENTRY_OVERHEAD: usize = 32;

const ZERO_U64: &[u8] = &[0; 8];

/// RFC 7541 Appendix A, entries 1–61, in order.
const RFC7541: [(&str, &str); 61] = [
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
];

/// The static table entry at `index` (1..=82), or `None` for 0 and beyond.
pub fn static_entry(index: u64) -> Option<Header> {
    let (name, value): (&'static [u8], &'static [u8]) = match index {
        1..=61 => {
            let (n, v) = RFC7541[(index - 1) as usize];
            (n.as_bytes(), v.as_bytes())
        }
        // Placeholders "reserved for http2 extensions": empty name and value,
        // as in the runtime's static_table.hpp.
        62..=79 => (b"", b""),
        80 => (b"trace_id", ZERO_U64),
        81 => (b"span_id", ZERO_U64),
        82 => (b"parent_id", ZERO_U64),
        _ => return None,
    };
    Some(Header {
        name: Bytes::from_static(name),
        value: Bytes::from_static(value),
    })
}

/// The receive-side header table of one connection: the static table plus a
/// dynamic table of [`DYNAMIC_TABLE_CAPACITY`] bytes. A new connection
/// starts with a new (empty) one, which is how the table "resets".
#[derive(Debug, Clone, Default)]
pub struct HeaderTable {
    /// Newest first: index `STATIC_TABLE_LEN + k` is `dynamic[k]`.
    dynamic: VecDeque<Header>,
    size: usize,
}

impl HeaderTable {
    /// An empty dynamic table.
    pub fn new() -> Self {
        Self::default()
    }

    /// The entry at `index`, static or dynamic.
    pub fn get(&self, index: u64) -> Option<Header> {
        if index < STATIC_TABLE_LEN {
            return static_entry(index);
        }
        let k = usize::try_from(index - STATIC_TABLE_LEN).ok()?;
        self.dynamic.get(k).cloned()
    }

    /// Adds an entry at the front, evicting the oldest entries until it fits.
    /// An entry larger than the whole capacity empties the table and is not
    /// inserted (§2.1). Entries are copied so that a stored header never pins
    /// the (possibly large) frame buffer it arrived in.
    pub fn insert(&mut self, header: &Header) {
        let entry_size = entry_size(header);
        if entry_size > DYNAMIC_TABLE_CAPACITY {
            self.dynamic.clear();
            self.size = 0;
            return;
        }
        while self.size + entry_size > DYNAMIC_TABLE_CAPACITY {
            match self.dynamic.pop_back() {
                Some(evicted) => self.size -= entry_size_of(&evicted),
                None => break,
            }
        }
        self.dynamic.push_front(Header {
            name: Bytes::copy_from_slice(&header.name),
            value: Bytes::copy_from_slice(&header.value),
        });
        self.size += entry_size;
    }

    /// The accounted size of the dynamic table in bytes.
    pub fn size(&self) -> usize {
        self.size
    }

    /// The number of dynamic entries.
    pub fn len(&self) -> usize {
        self.dynamic.len()
    }

    /// Whether the dynamic table is empty.
    pub fn is_empty(&self) -> bool {
        self.dynamic.is_empty()
    }
}

/// The accounted size of an entry: name + value + 32.
pub fn entry_size(header: &Header) -> usize {
    entry_size_of(header)
}

fn entry_size_of(header: &Header) -> usize {
    header.name.len() + header.value.len() + ENTRY_OVERHEAD
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(name: &str, value_len: usize) -> Header {
        Header {
            name: Bytes::copy_from_slice(name.as_bytes()),
            value: Bytes::from(vec![b'v'; value_len]),
        }
    }

    #[test]
    fn static_table_matches_the_spec_examples() {
        let name_value = |i| {
            let h = static_entry(i).unwrap();
            (h.name, h.value)
        };
        assert_eq!(name_value(2), (":method".into(), "GET".into()));
        assert_eq!(name_value(8), (":status".into(), "200".into()));
        assert_eq!(
            name_value(16),
            ("accept-encoding".into(), "gzip, deflate".into())
        );
        assert_eq!(name_value(23).0, "authorization");
        assert_eq!(name_value(28).0, "content-length");
        assert_eq!(name_value(31).0, "content-type");
        assert_eq!(name_value(38).0, "host");
        assert_eq!(name_value(58).0, "user-agent");
        assert_eq!(name_value(61).0, "www-authenticate");
        assert_eq!(name_value(70), (Bytes::new(), Bytes::new()));
        assert_eq!(
            name_value(80),
            ("trace_id".into(), Bytes::from_static(&[0; 8]))
        );
        assert_eq!(name_value(82).0, "parent_id");
        assert!(static_entry(0).is_none());
        assert!(static_entry(83).is_none());
    }

    #[test]
    fn newest_entry_is_index_83() {
        let mut table = HeaderTable::new();
        table.insert(&header("a", 1));
        table.insert(&header("b", 1));
        assert_eq!(table.get(83).unwrap().name, "b");
        assert_eq!(table.get(84).unwrap().name, "a");
        assert!(table.get(85).is_none());
        assert_eq!(table.size(), 2 * 34);
    }

    #[test]
    fn evicts_oldest_until_the_new_entry_fits() {
        let mut table = HeaderTable::new();
        // Each entry is 1 + 991 + 32 = 1024 bytes: four fill the table exactly.
        for name in ["a", "b", "c", "d"] {
            table.insert(&header(name, 991));
        }
        assert_eq!((table.len(), table.size()), (4, 4096));
        table.insert(&header("e", 991));
        assert_eq!(table.len(), 4);
        assert_eq!(table.get(83).unwrap().name, "e");
        assert_eq!(table.get(86).unwrap().name, "b", "a was evicted");
        // A 2047-byte entry evicts two more.
        table.insert(&header("f", 2014));
        assert_eq!(table.len(), 3);
        assert_eq!(table.size(), 2047 + 2048);
        assert_eq!(table.get(85).unwrap().name, "d");
    }

    #[test]
    fn oversized_entry_empties_the_table() {
        let mut table = HeaderTable::new();
        table.insert(&header("a", 10));
        table.insert(&header("huge", 4096));
        assert!(table.is_empty());
        assert_eq!(table.size(), 0);
        assert!(table.get(83).is_none());
    }
}
