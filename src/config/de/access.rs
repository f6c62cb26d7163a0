//! serde's side of the reader: the `Deserializer` over the [`Parser`], and the sequence and map
//! accessors that push and pop the field path.

use super::{refuse, Error, Parser, Token};
use crate::formats::json::decimal_f64;
use serde::de::{
    self, DeserializeSeed, IntoDeserializer, MapAccess, SeqAccess, Unexpected, Visitor,
};
use std::borrow::Cow;

impl<'de> de::Deserializer<'de> for &mut Parser<'de> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.token()? {
            Token::Null => visitor.visit_unit(),
            Token::Bool(b) => visitor.visit_bool(b),
            Token::Str(Cow::Borrowed(s)) => visitor.visit_borrowed_str(s),
            Token::Str(Cow::Owned(s)) => visitor.visit_string(s),
            Token::Unsigned(n) => visitor.visit_u64(n),
            Token::Signed(n) => visitor.visit_i64(n),
            token @ (Token::Float(_) | Token::Big(_)) => Err(refuse(&token, &visitor)),
            Token::Array => self.seq(visitor),
            Token::Object => self.map(visitor),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        if self.null()? {
            visitor.visit_none()
        } else {
            visitor.visit_some(self)
        }
    }

    /// A unit variant, by its name. (serde_json also took `{"Name": null}`.)
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        let name = self.string_for(&visitor)?;
        visitor.visit_enum(name.into_deserializer())
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let b = self.bool_for(&visitor)?;
        visitor.visit_bool(b)
    }

    fn deserialize_u64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.integer_for(&visitor)? {
            Ok(n) => visitor.visit_u64(n),
            Err(n) => visitor.visit_i64(n),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.string_for(&visitor)? {
            Cow::Borrowed(s) => visitor.visit_borrowed_str(s),
            Cow::Owned(s) => visitor.visit_string(s),
        }
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.open_for(b'[', &visitor)?;
        self.seq(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.open_for(b'{', &visitor)?;
        self.map(visitor)
    }

    /// A struct as an object. (serde_json also took an array of the fields in order.)
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_map(visitor)
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.null_for(&visitor)?;
        visitor.visit_unit()
    }

    /// A number as `f64`: integers as they are, decimals and exponents by [`decimal_f64`].
    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.token()? {
            Token::Unsigned(n) => visitor.visit_f64(n as f64),
            Token::Signed(n) => visitor.visit_f64(n as f64),
            Token::Float(text) | Token::Big(text) => match decimal_f64(text) {
                Some(f) => visitor.visit_f64(f),
                None => Err(de::Error::invalid_value(
                    Unexpected::Other(&format!("number `{text}`")),
                    &visitor,
                )),
            },
            token => Err(refuse(&token, &visitor)),
        }
    }

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_f64(visitor)
    }

    serde::forward_to_deserialize_any! {
        i128 u128 char bytes byte_buf unit_struct newtype_struct tuple tuple_struct
        identifier ignored_any
    }

    // Integers arrive as `u64` or `i64` as written; the visitor checks the range of its type.
    fn deserialize_i8<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_u64(visitor)
    }

    fn deserialize_i16<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_u64(visitor)
    }

    fn deserialize_i32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_u64(visitor)
    }

    fn deserialize_i64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_u64(visitor)
    }

    fn deserialize_u8<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_u64(visitor)
    }

    fn deserialize_u16<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_u64(visitor)
    }

    fn deserialize_u32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_u64(visitor)
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_string(visitor)
    }
}

pub(super) struct Seq<'a, 'de> {
    pub(super) p: &'a mut Parser<'de>,
    pub(super) index: usize,
}

impl<'de> SeqAccess<'de> for Seq<'_, 'de> {
    type Error = Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Error> {
        if !self.p.more(b']', self.index == 0)? {
            return Ok(None);
        }
        self.p.enter(self.index);
        let value = seed.deserialize(&mut *self.p)?;
        self.p.leave();
        self.index += 1;
        Ok(Some(value))
    }
}

pub(super) struct Map<'a, 'de> {
    pub(super) p: &'a mut Parser<'de>,
    pub(super) first: bool,
}

impl<'de> MapAccess<'de> for Map<'_, 'de> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        if !self.p.more(b'}', self.first)? {
            return Ok(None);
        }
        self.first = false;
        // The key stays in the path until its value has been read. The `:` is checked after the
        // key (so an unknown member is named as such first), here rather than in the more
        // numerous `next_value_seed` instances.
        let key = seed.deserialize(self.p.key()?.into_deserializer())?;
        self.p.expect(b':', "expected `:`")?;
        Ok(Some(key))
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        let value = seed.deserialize(&mut *self.p)?;
        self.p.leave();
        Ok(value)
    }
}
