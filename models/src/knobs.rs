//! Knob structs whose doc comments are also data: [`knobs!`](crate::knobs!) declares a config
//! struct and, from the same `///` lines, its [`Documented::FIELDS`], so a documented config
//! file (the node's `config.toml`) and rustdoc share one text per field.

/// One field of a [`Documented`] struct: its name, its doc comment and what it holds.
#[derive(Debug, Clone, Copy)]
pub struct Field {
    /// The field's name, as serde writes it.
    pub name: &'static str,
    /// The field's `///` lines, each ending in `\n` (rustdoc's leading space kept).
    pub doc: &'static str,
    /// A value, a nested table or a struct flattened into this one.
    pub kind: FieldKind,
}

/// What a [`Field`] holds, so a renderer knows where its documentation goes.
#[derive(Debug, Clone, Copy)]
pub enum FieldKind {
    /// A plain value (number, string, list, ...).
    Value,
    /// A nested knob struct written as its own table (`#[knob(table)]`).
    Table(&'static [Field]),
    /// A knob struct whose fields sit in this one's table (`#[knob(flatten)]`, with
    /// `#[serde(flatten)]`).
    Flatten(&'static [Field]),
}

impl Field {
    /// The doc comment's lines, trimmed.
    pub fn doc_lines(&self) -> impl Iterator<Item = &'static str> {
        self.doc.lines().map(str::trim)
    }
}

/// A struct whose fields carry their doc comments as data (implemented by [`knobs!`](crate::knobs!)).
pub trait Documented {
    /// Every field in declaration order.
    const FIELDS: &'static [Field];
}

/// Declares a struct whose every field has a `///` doc comment, and implements [`Documented`]
/// for it from those same comments.
///
/// A field's attributes come in this order: its doc comment (required: a field without one
/// does not compile), then any `#[serde(...)]`, then optionally `#[knob(table)]` (the field is
/// a nested knob struct with its own table) or `#[knob(flatten)]` (it is a knob struct marked
/// `#[serde(flatten)]`). Field names are the serde names: do not `#[serde(rename)]` a field.
#[macro_export]
macro_rules! knobs {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident {
            $(
                $(#[doc = $doc:literal])+
                $(#[serde $serde:tt])*
                $(#[knob($kind:ident)])?
                $fvis:vis $field:ident : $ty:ty
            ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        $vis struct $name {
            $(
                $(#[doc = $doc])+
                $(#[serde $serde])*
                $fvis $field: $ty,
            )*
        }

        impl $crate::knobs::Documented for $name {
            const FIELDS: &'static [$crate::knobs::Field] = &[
                $(
                    $crate::knobs::Field {
                        name: stringify!($field),
                        doc: concat!($($doc, "\n"),+),
                        kind: $crate::__knob_kind!($ty $(, $kind)?),
                    },
                )*
            ];
        }
    };
}

/// The [`FieldKind`] of a field of type `$ty` with an optional `#[knob(...)]` marker.
#[doc(hidden)]
#[macro_export]
macro_rules! __knob_kind {
    ($ty:ty) => {
        $crate::knobs::FieldKind::Value
    };
    ($ty:ty, table) => {
        $crate::knobs::FieldKind::Table(<$ty as $crate::knobs::Documented>::FIELDS)
    };
    ($ty:ty, flatten) => {
        $crate::knobs::FieldKind::Flatten(<$ty as $crate::knobs::Documented>::FIELDS)
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    crate::knobs! {
        /// Inner knobs.
        #[derive(Debug, Default)]
        pub struct Inner {
            /// Width.
            pub width: usize,
        }
    }

    crate::knobs! {
        /// Outer knobs.
        #[derive(Debug, Default, serde::Serialize)]
        pub struct Outer {
            /// First line,
            /// second line.
            #[serde(default)]
            pub a: f64,
            /// Nested.
            #[serde(skip)]
            #[knob(table)]
            pub inner: Inner,
        }
    }

    #[test]
    fn fields_carry_the_doc_comments_in_order() {
        let f = Outer::FIELDS;
        assert_eq!(f.len(), 2);
        assert_eq!(f[0].name, "a");
        assert_eq!(
            f[0].doc_lines().collect::<Vec<_>>(),
            ["First line,", "second line."]
        );
        assert!(matches!(f[0].kind, FieldKind::Value));
        match f[1].kind {
            FieldKind::Table(inner) => {
                assert_eq!((inner[0].name, inner[0].doc), ("width", " Width.\n"))
            }
            other => panic!("{other:?}"),
        }
        let o = Outer::default();
        assert_eq!((o.a, o.inner.width), (0.0, 0));
    }
}
