//! `nabustore._native`: the native half of the `nabustore` Python package, a thin wrapper
//! over `nabu-client` with no storage logic of its own.
//!
//! **Why native.** The client erasure-codes, places and verifies shards itself; a Python
//! package gets all of that, and its speed, by calling it. Every call that does I/O releases
//! the GIL (`Python::detach`) and runs on one Tokio runtime owned by the module, so Python
//! threads (and `asyncio.to_thread`) overlap their requests.
//!
//! **Zero copy.** Reads go straight into the caller's memory through the buffer protocol
//! (`get_into`, `Object.read_into`, `get_many_into`, `kv_get_many`): the client copies each
//! stripe's bytes once, from the shards as they arrive into their place in the caller's
//! buffer. Writes (`put`, `put_many`, `kv_put_many`) hold the caller's buffer for the call and
//! hand the client a view of it, no copy at all. `get` allocates the `bytes` it returns and
//! reads into it.
//!
//! The numpy, safetensors, checkpoint, asyncio and fsspec layers are Python
//! (`python/nabustore`); errors become the exception classes of `nabustore.errors`.

mod buffers;
mod client;
mod errors;

use pyo3::prelude::*;

/// The module: the client, an opened object and the object description.
#[pymodule]
fn _native(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_class::<client::PyClient>()?;
    module.add_class::<client::PyObject>()?;
    module.add_class::<client::ObjectInfo>()?;
    module.add(
        "DEFAULT_CLUSTER",
        nabu_client::cluster_file::CLUSTER_DEFAULT,
    )?;
    module.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
