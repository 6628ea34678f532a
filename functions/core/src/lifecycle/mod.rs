//! The lifecycles: every change of a job, a fleet job or an account
//! registration, in one place each. A lifecycle function takes the ports it
//! uses; the API routes, the steps and the triggers call them.
//!
//! - [`jobs`]: a job from its creation to its end, repair and sweep;
//! - [`fleet`]: fleet jobs, one request over every instance a selector picks;
//! - [`accounts`]: which organisation may act on which AWS account and server;
//! - [`gone`]: what dbroles kept for a server that was deleted, removed.

pub mod accounts;
pub mod fleet;
pub mod gone;
pub mod jobs;
