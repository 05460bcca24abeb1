//! Reads the caller's JSON texts (payload, header, claims) without changing them: syntax,
//! object-ness and duplicate members at any depth are checked, and an object's members
//! come back in the caller's order with each value's exact text (serde_json's
//! `RawValue`), so numbers keep their digits.

use std::cell::RefCell;
use std::collections::HashSet;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use super::error::JoseError;

/// One member of an object: its (unescaped) name and its value's exact text.
pub(crate) type Member = (String, Box<RawValue>);

/// Checks that `text` is one JSON object with no member named twice at any depth, and
/// returns its top-level members in order.
pub(crate) fn object(what: &'static str, text: &str) -> Result<Vec<Member>, JoseError> {
    let duplicate = RefCell::new(None);
    let checked = {
        let mut de = serde_json::Deserializer::from_str(text);
        Check(&duplicate)
            .deserialize(&mut de)
            .and_then(|()| de.end())
    };
    if let Err(e) = checked {
        return Err(match duplicate.into_inner() {
            Some(key) => JoseError::DuplicateKey {
                what,
                key: JoseError::name(&key),
            },
            None => JoseError::BadJson {
                what,
                reason: crate::xml::error::sanitise(&e.to_string(), 120),
            },
        });
    }
    serde_json::from_str::<Members>(text)
        .map(|m| m.0)
        .map_err(|_| JoseError::NotAnObject(what))
}

/// Walks any JSON value; at a repeated member name, records it and stops.
struct Check<'a>(&'a RefCell<Option<String>>);

impl<'de> DeserializeSeed<'de> for Check<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Check<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Check(self.0))?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if !seen.insert(key.clone()) {
                *self.0.borrow_mut() = Some(key);
                return Err(de::Error::custom("duplicate member"));
            }
            map.next_value_seed(Check(self.0))?;
        }
        Ok(())
    }
}

/// An object's members in order, each value as its exact text.
struct Members(Vec<Member>);

impl<'de> serde::Deserialize<'de> for Members {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Members;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members, A::Error> {
                let mut out = Vec::new();
                while let Some(member) = map.next_entry::<String, Box<RawValue>>()? {
                    out.push(member);
                }
                Ok(Members(out))
            }
        }
        d.deserialize_map(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_keep_order_and_number_text() {
        let m = object(
            "payload",
            r#"{"z": 1.50, "a": [1e3, {"k": 12345678901234567890123}]}"#,
        )
        .unwrap();
        let got: Vec<(&str, &str)> = m.iter().map(|(k, v)| (k.as_str(), v.get())).collect();
        assert_eq!(
            got,
            [
                ("z", "1.50"),
                ("a", r#"[1e3, {"k": 12345678901234567890123}]"#)
            ]
        );
    }

    #[test]
    fn duplicates_are_found_at_any_depth_and_after_unescaping() {
        for text in [
            r#"{"a":1,"a":2}"#,
            r#"{"x":[{"a":1,"b":2,"a":3}]}"#,
            r#"{"a":1,"\u0061":2}"#,
        ] {
            let err = object("payload", text).unwrap_err();
            assert_eq!(err.code(), "duplicate_key", "{text}");
            assert!(err.to_string().contains("\"a\""), "{err}");
        }
    }

    #[test]
    fn not_json_and_not_objects_are_told_apart() {
        assert_eq!(object("header", "{").unwrap_err().code(), "bad_json");
        assert_eq!(object("header", "{} {}").unwrap_err().code(), "bad_json");
        for text in ["[]", "\"s\"", "1", "null"] {
            assert_eq!(object("header", text).unwrap_err().code(), "not_an_object");
        }
    }
}
