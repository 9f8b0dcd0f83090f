//! Cooperative cancellation of long builds.
//!
//! Training an index on a million vectors takes about a minute on two cores.
//! A storage engine that is shutting down should not have to wait for that:
//! it sets a flag, the build notices it at its next step (a k-means
//! iteration, a PQ sub-quantizer, a batch of added rows) and returns
//! [`IndexError::Cancelled`], and the caller builds again later.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::IndexError;

/// A flag that a build polls between steps. [`Cancel::NEVER`] is never set.
#[derive(Debug, Clone, Copy, Default)]
pub struct Cancel<'a>(Option<&'a AtomicBool>);

impl<'a> Cancel<'a> {
    /// A build that always runs to the end.
    pub const NEVER: Cancel<'static> = Cancel(None);

    /// A build that stops once `flag` is true.
    pub fn on(flag: &'a AtomicBool) -> Self {
        Cancel(Some(flag))
    }

    /// `Err(Cancelled)` once the flag is set.
    pub fn check(&self) -> Result<(), IndexError> {
        match self.0 {
            Some(f) if f.load(Ordering::Relaxed) => Err(IndexError::Cancelled),
            _ => Ok(()),
        }
    }
}
