//! Pure JSON logic shared by every operation: the change diff that events carry and the
//! field projection that reads accept.

mod diff;
mod projection;

pub use diff::{Changes, diff};
pub use projection::{Projection, allowed_paths};
