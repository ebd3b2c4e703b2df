//! HTTP GETs of a node's management plane: the node library's minimal client.

pub use nabu_node::http_get::{get, get_status};
