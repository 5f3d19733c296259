//! The service manager's two interfaces: sockets it passes (`activation`) and the
//! state the broker reports to it (`notify`). Leaves: they import nothing of the broker
//! above them.

pub mod activation;
pub mod notify;
