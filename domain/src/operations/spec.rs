//! What an entry of the operation table says, and the macro that turns the table into the
//! [`Method`](super::Method) and [`Request`](super::Request) enums. Plain data: the edges
//! read it to route, document, authorise and key requests, so nothing here knows HTTP,
//! AMQP or OpenAPI types.

use super::{Method, OPERATIONS};

/// One operation of the contract, declared once in [`super::OPERATIONS`].
#[derive(Debug)]
pub struct Operation {
    pub method: Method,
    /// The RPC method name (the `pattern` NestJS sends).
    pub rpc: &'static str,
    /// Its REST routes; the first is the primary one.
    pub rest: &'static [Rest],
    pub effect: Effect,
    /// What a caller needs to be allowed it; a request may ask for more
    /// ([`crate::request::Params::needs`]).
    pub permission: Permission,
    pub doc: Doc,
}

/// Whether an operation changes data. A write takes a request key (the ledger answers a
/// repeat as the first time); a read may be retried freely.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    Read,
    Write,
}

/// What a caller must be allowed ([`crate::call::Rights`] says who is).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// Any authenticated caller.
    Caller,
    /// A caller listed in `EXPORT_READERS` (or a credential reader): everything held about
    /// a user, as one document.
    Exporter,
    /// A caller listed in `CREDENTIAL_READERS`: password hashes.
    CredentialReader,
    /// A caller listed in `AUDIT_READERS`: a user's history of changes.
    AuditReader,
}

/// One REST route of an operation.
#[derive(Debug)]
pub struct Rest {
    pub verb: Verb,
    /// `{name}` segments are path params of that name.
    pub path: &'static str,
    pub input: Input,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verb {
    Get,
    Post,
    Patch,
    Delete,
}

impl Verb {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Get => "GET",
            Self::Post => "POST",
            Self::Patch => "PATCH",
            Self::Delete => "DELETE",
        }
    }
}

/// Where a route's params come from besides its path.
#[derive(Debug, PartialEq, Eq)]
pub enum Input {
    /// The query string (at most [`crate::ParamForm::QUERY_MAX_IDS`] ids).
    Query(&'static [Query]),
    /// A JSON body, of the named schema.
    Body(&'static str),
}

/// A documented query parameter.
#[derive(Debug, PartialEq, Eq)]
pub enum Query {
    /// A boolean flag: its name and what it adds.
    Flag(&'static str, &'static str),
    /// `fields`: which parts of a user to return.
    Fields,
    /// `ids`: comma-separated user ids.
    Ids,
    /// An optional parameter: its name, its kind and what it does.
    Param(&'static str, Kind, &'static str),
}

/// What an optional query parameter holds.
#[derive(Debug, PartialEq, Eq)]
pub enum Kind {
    Bool,
    /// RFC 3339.
    Timestamp,
    /// A whole number from 1 to this.
    Count(u32),
    /// Text of at most this many characters.
    Text(u32),
    OneOf(&'static [&'static str]),
}

/// How an operation is documented besides its routes.
#[derive(Debug)]
pub struct Doc {
    pub tag: &'static str,
    pub summary: &'static str,
    pub answers: &'static [Answer],
    /// Error statuses besides those every operation can give.
    pub errors: &'static [u16],
}

/// A successful answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub description: &'static str,
    pub body: Option<Shape>,
}

/// The shape of an answer's body, by schema names.
#[derive(Debug)]
pub enum Shape {
    Ref(&'static str),
    /// One of these schemas.
    OneOf(&'static [&'static str]),
    /// The schema, or only the `fields` asked for (plus `id`).
    OrPartial(&'static str),
    /// `{<key>: [items found], missing, stats}`; items as [`Shape::OrPartial`].
    Batch {
        key: &'static str,
        item: &'static str,
    },
    /// `{data: [items], nextPageToken}`.
    Page(&'static str),
}

pub const fn get(path: &'static str, query: &'static [Query]) -> Rest {
    Rest {
        verb: Verb::Get,
        path,
        input: Input::Query(query),
    }
}

pub const fn delete(path: &'static str) -> Rest {
    Rest {
        verb: Verb::Delete,
        path,
        input: Input::Query(&[]),
    }
}

pub const fn post(path: &'static str, body: &'static str) -> Rest {
    Rest {
        verb: Verb::Post,
        path,
        input: Input::Body(body),
    }
}

/// A POST without a body: an action on the resource its path names.
pub const fn action(path: &'static str) -> Rest {
    Rest {
        verb: Verb::Post,
        path,
        input: Input::Query(&[]),
    }
}

pub const fn patch(path: &'static str, body: &'static str) -> Rest {
    Rest {
        verb: Verb::Patch,
        path,
        input: Input::Body(body),
    }
}

pub const fn ok(status: u16, description: &'static str, body: Shape) -> Answer {
    Answer {
        status,
        description,
        body: Some(body),
    }
}

/// Declares the operations: `Variant(RequestType) = { fields of Operation but method }`.
/// Generates `Method` (one variant each, in table order), `OPERATIONS` (indexed by
/// `Method as usize`), and `Request` with its parsing, its method, its permission and its
/// content (what the ledger fingerprints of a write).
macro_rules! operations {
    ($( $(#[$attr:meta])* $variant:ident($request:ty) = { $($field:ident: $value:expr),* $(,)? } ),* $(,)?) => {
        /// The contract's operations. Their names and everything else about them are in
        /// [`OPERATIONS`].
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Method {
            $($(#[$attr])* $variant),*
        }

        impl Method {
            pub const ALL: [Method; [$(Method::$variant),*].len()] = [$(Method::$variant),*];
        }

        /// Every operation, in the order of [`Method`].
        pub static OPERATIONS: [Operation; Method::ALL.len()] = [
            $(Operation { method: Method::$variant, $($field: $value),* }),*
        ];

        /// One request, valid in shape; what it asks of the stored data is checked by the
        /// store.
        #[derive(Debug, Clone)]
        pub enum Request {
            $($(#[$attr])* $variant($request)),*
        }

        impl Request {
            /// Decodes `params` (a JSON object, or null for none) as `method`'s request.
            pub fn parse(
                method: Method,
                params: serde_json::Value,
                form: $crate::request::ParamForm,
            ) -> Result<Self, $crate::error::CoreError> {
                let params = $crate::request::object(params)?;
                Ok(match method {
                    $(Method::$variant => Self::$variant(
                        <$request as $crate::request::Params>::parse(params, form)?,
                    )),*
                })
            }

            pub fn method(&self) -> Method {
                match self {
                    $(Self::$variant(_) => Method::$variant),*
                }
            }

            /// What the caller must be allowed: the operation's permission, or more when
            /// this request asks for more.
            pub fn permission(&self) -> Permission {
                let asked = match self {
                    $(Self::$variant(r) => $crate::request::Params::needs(r)),*
                };
                match asked {
                    Permission::Caller => self.method().spec().permission,
                    more => more,
                }
            }

            /// How many users this request writes (see `Params::writes`).
            pub fn writes(&self) -> usize {
                match self {
                    $(Self::$variant(r) => $crate::request::Params::writes(r)),*
                }
            }

            /// What a write asks for, as JSON (null for a read): the ledger fingerprints it,
            /// so that a key reused for another request is told apart.
            pub fn content(&self) -> serde_json::Value {
                if self.method().spec().effect == Effect::Read {
                    return serde_json::Value::Null;
                }
                let value = match self {
                    $(Self::$variant(r) => serde_json::to_value(r)),*
                };
                value.unwrap_or_else(|e| serde_json::Value::String(e.to_string()))
            }
        }
    };
}
pub(crate) use operations;

impl Method {
    /// This operation's entry in [`OPERATIONS`].
    pub fn spec(self) -> &'static Operation {
        &OPERATIONS[self as usize]
    }

    pub fn as_str(self) -> &'static str {
        self.spec().rpc
    }

    /// The operation of an RPC method name.
    pub fn parse(name: &str) -> Option<Self> {
        OPERATIONS.iter().find(|o| o.rpc == name).map(|o| o.method)
    }

    /// Reads change nothing; a caller may retry them freely.
    pub fn is_read(self) -> bool {
        self.spec().effect == Effect::Read
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
