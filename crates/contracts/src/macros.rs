//! The two pieces of boilerplate every event module repeats.

/// Implements [`crate::Event`] for an event struct that has a `version: u64` field.
///
/// The CloudEvents type is the struct's name, so the two cannot drift apart; the
/// subject is the given id field, rendered as text.
macro_rules! impl_event {
    ($event:ident, source = $source:expr, subject = $id:ident) => {
        impl $crate::Event for $event {
            const TYPE: &'static str = stringify!($event);
            const SOURCE: &'static str = $source;

            fn subject(&self) -> String {
                self.$id.to_string()
            }

            fn version(&self) -> u64 {
                self.version
            }
        }
    };
}

/// Declares an enum that travels as a plain JSON string and keeps values it does not
/// know in `Other(String)`, so that a newer producer's value never breaks an older
/// consumer.
///
/// `Other` holding a known spelling (e.g. `Other("timeout")`) is not equal to the
/// named variant; it never comes out of deserialization, which always picks the
/// named variant.
///
/// Its JSON Schema is a string with the known values listed under
/// `x-extensible-enum` (not `enum`, which would refuse every other value): readers
/// must accept values they do not know.
macro_rules! string_enum {
    (
        $(#[doc = $doc:literal])*
        pub enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $text:literal, )+
        }
    ) => {
        $(#[doc = $doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
            /// A value this version of the contracts does not know, kept as sent.
            Other(String),
        }

        impl $name {
            /// The wire spelling.
            pub fn as_str(&self) -> &str {
                match self {
                    $( Self::$variant => $text, )+
                    Self::Other(text) => text,
                }
            }
        }

        impl From<String> for $name {
            fn from(text: String) -> Self {
                match text.as_str() {
                    $( $text => Self::$variant, )+
                    _ => Self::Other(text),
                }
            }
        }

        impl From<&str> for $name {
            fn from(text: &str) -> Self {
                Self::from(text.to_owned())
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                String::deserialize(deserializer).map(Self::from)
            }
        }

        impl schemars::JsonSchema for $name {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($name).into()
            }

            fn schema_id() -> std::borrow::Cow<'static, str> {
                concat!(module_path!(), "::", stringify!($name)).into()
            }

            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                // The doc comment, as the derive writes it for the other types.
                let description = [$($doc),*]
                    .map(|line: &str| line.strip_prefix(' ').unwrap_or(line))
                    .join("\n");
                schemars::json_schema!({
                    "description": description,
                    "type": "string",
                    "x-extensible-enum": [$($text),+],
                })
            }
        }
    };
}
