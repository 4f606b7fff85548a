//! Netlink connections bound to a network namespace.
//!
//! A netlink socket stays bound to the namespace it was created in, so a
//! socket opened on a thread that entered a namespace serves every later
//! request there, whatever thread sends it.

use std::io;
use std::os::unix::io::{FromRawFd, IntoRawFd};
use std::path::PathBuf;

use rtnetlink::sys::{protocols::NETLINK_ROUTE, Socket, TokioSocket};
use rtnetlink::Handle;

use super::netns;

/// Opens a route netlink socket inside `netns` (the process's namespace
/// when `None`) and spawns its connection on the current runtime. The
/// connection task ends when the last handle is dropped.
pub async fn open_handle(netns: Option<PathBuf>) -> io::Result<Handle> {
    let fd = netns::run_in(netns, || Ok(Socket::new(NETLINK_ROUTE)?.into_raw_fd())).await?;
    // SAFETY: `fd` is a netlink socket we own, handed over exactly once.
    let socket = unsafe { TokioSocket::from_raw_fd(fd) };
    let (connection, handle, _) = rtnetlink::from_socket(socket);
    tokio::spawn(connection);
    Ok(handle)
}

/// The errno of a netlink error reply, if it is one (positive, like libc's).
pub fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.code.map(|c| -c.get()),
        _ => None,
    }
}
