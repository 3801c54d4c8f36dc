//! The Mesos v1 HTTP scheduler: subscription, offer evaluation, launches, status updates and
//! reconciliation. The single writer of the observed state of nodes.

pub mod offers;
pub mod recordio;
pub mod transport;
