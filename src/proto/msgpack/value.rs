//! Dynamic values, for the few places whose shape is app-defined.

use super::*;

/// Any msgpack value, for the few places whose shape is app-defined
/// (`info` replies, `cluster` maps). Byte strings are zero-copy slices.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// nil.
    Nil,
    /// A boolean.
    Bool(bool),
    /// An integer of any width.
    Int(i128),
    /// A float32 or float64.
    Float(f64),
    /// A str or bin value.
    Bytes(Bytes),
    /// An array.
    Array(Vec<Self>),
    /// A map, in wire order.
    Map(Vec<(Self, Self)>),
    /// An ext value, kept raw (marker included).
    Ext(Bytes),
}

impl Value {
    /// Writes the value back with v4 string forms. Integers outside the
    /// `i64`/`u64` ranges cannot occur (the reader only makes those), and
    /// floats are written as float64.
    pub fn encode(&self, buf: &mut impl BufMut) {
        match self {
            Self::Nil => put_nil(buf),
            Self::Bool(b) => put_bool(buf, *b),
            Self::Int(i) => match (u64::try_from(*i), i64::try_from(*i)) {
                (Ok(u), _) => put_uint(buf, u),
                (_, Ok(s)) => put_int(buf, s),
                _ => put_nil(buf),
            },
            Self::Float(f) => {
                buf.put_u8(0xcb);
                buf.put_f64(*f);
            }
            Self::Bytes(b) => put_str(buf, b),
            Self::Array(items) => {
                put_array_len(buf, items.len());
                for item in items {
                    item.encode(buf);
                }
            }
            Self::Map(pairs) => {
                put_map_len(buf, pairs.len());
                for (k, v) in pairs {
                    k.encode(buf);
                    v.encode(buf);
                }
            }
            Self::Ext(raw) => buf.put_slice(raw),
        }
    }
}
