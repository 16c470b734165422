//! What belongs to one call of the tracer rather than to what is traced:
//! the caller's bound on the whole trace, how long it may wait to be
//! admitted, and an address it resolved already.

use std::net::IpAddr;
use std::time::Duration;

use super::budget::Rate;
use super::prober::Plan;

/// How a caller runs one [`TraceRequest`](super::TraceRequest). The CLI
/// takes the default; the service bounds each trace by its slot and lets a
/// trace wait a little for busy routers.
#[derive(Clone, Copy, Debug, Default)]
pub struct Call {
    /// Bound on the whole trace; derived from the request's limits and the
    /// routers' prior budget when `None`.
    pub deadline: Option<Duration>,
    /// How long the trace may wait to be admitted when the routers it needs
    /// are busy with other traces; zero refuses at once.
    pub admission_wait: Duration,
    /// The address the host resolved to, when the caller resolved it
    /// already (the service does, outside its trace slots).
    pub resolved: Option<IpAddr>,
}

impl Call {
    /// The bound on one plan of `flows` flows probed together: the caller's,
    /// or the one the plan needs with routers at `router_rate`.
    pub(crate) fn deadline_of(&self, plan: &Plan, router_rate: Rate, flows: u16) -> Duration {
        self.deadline
            .unwrap_or_else(|| plan.deadline(router_rate, flows))
    }
}
