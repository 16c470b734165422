//! Teardown off the critical path of a one-shot trace.
//!
//! Releasing the capture costs the kernel an RCU grace period per object:
//! each TCX link (the kernel waits for readers of the old program list) and
//! the packet socket of the socket capture (`packet_release` waits for the
//! network stack). Measured here, 11–35 ms after the record is printed, while
//! the shell waits for the command. The grace periods are owed, not the wait:
//! [`leave_to_keeper`] forks a small process that holds the process's copies
//! of those kernel objects until this process has exited, then exits itself,
//! and the final close (the detach) happens in it. The kernel still releases
//! everything whatever happens to either process (a killed keeper's
//! descriptors are closed by the kernel like any other's), so the promise that
//! nothing stays attached holds; it now holds a grace period after the command
//! returns instead of before.
//!
//! Hand-written with fork(2) rather than a crate: the child runs only
//! async-signal-safe calls (the parent has threads), and no spawning crate
//! offers "inherit these descriptors, run no program".

use std::os::fd::{AsRawFd, OwnedFd, RawFd};

/// The keeper's name in `ps` (at most 15 bytes).
const KEEPER_NAME: &[u8] = b"trl-teardown\0";

/// Forks the keeper. Afterwards every capture object this process closes is
/// only a reference dropped; the keeper closes the last one after this
/// process is gone. Does nothing (the process tears down itself, as before)
/// if the keeper cannot be started.
pub fn leave_to_keeper() {
    let (parent_gone, parent_end) = match nix::unistd::pipe() {
        Ok(pipe) => pipe,
        Err(e) => {
            tracing::debug!("teardown stays in this process: pipe: {e}");
            return;
        }
    };
    let close = descriptors_the_keeper_closes(&parent_gone, &parent_end);
    // SAFETY: the child calls only async-signal-safe functions
    // (sigaction, prctl, close, read, _exit) on data prepared before the fork,
    // and never returns.
    match unsafe { nix::unistd::fork() } {
        // SAFETY: in the child, right after the fork.
        Ok(nix::unistd::ForkResult::Child) => unsafe {
            keep_until_eof(parent_gone.as_raw_fd(), &close)
        },
        Ok(nix::unistd::ForkResult::Parent { child }) => {
            tracing::debug!(keeper = child.as_raw(), "teardown handed to the keeper");
            // This end stays open until the process exits: its close is
            // the keeper's signal. Leaked on purpose.
            std::mem::forget(parent_end);
        }
        Err(e) => tracing::debug!("teardown stays in this process: fork: {e}"),
    }
}

/// Every open descriptor but the ones whose close is the costly part
/// (kernel objects: the eBPF programs, maps and links, and sockets) and the
/// keeper's end of the pipe. The standard streams are always closed, so a
/// pipe reading this command's output ends when the command does.
fn descriptors_the_keeper_closes(parent_gone: &OwnedFd, parent_end: &OwnedFd) -> Vec<RawFd> {
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        // Unknown: close the standard streams and the pipe's other end.
        return vec![0, 1, 2, parent_end.as_raw_fd()];
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let fd: RawFd = entry.file_name().to_str()?.parse().ok()?;
            let target = std::fs::read_link(entry.path()).ok()?;
            let target = target.to_string_lossy();
            let kernel_object =
                target.starts_with("socket:") || target.starts_with("anon_inode:bpf");
            let keep = fd > 2 && (kernel_object || fd == parent_gone.as_raw_fd());
            (!keep).then_some(fd)
        })
        .collect()
}

/// The keeper: back to default signal handling (Ctrl-C ends it at once,
/// which is a teardown too), close what is not kept, wait for the end of the
/// pipe, exit. Never returns.
///
/// # Safety
/// Only after fork(2), in the child.
unsafe fn keep_until_eof(parent_gone: RawFd, close: &[RawFd]) -> ! {
    // SAFETY: each call is async-signal-safe and touches only the arguments.
    unsafe {
        for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT] {
            libc::signal(signal, libc::SIG_DFL);
        }
        libc::prctl(libc::PR_SET_NAME, KEEPER_NAME.as_ptr());
        for fd in close {
            libc::close(*fd);
        }
        let mut byte = 0u8;
        loop {
            let n = libc::read(parent_gone, (&raw mut byte).cast(), 1);
            if n == 0 || (n < 0 && *libc::__errno_location() != libc::EINTR) {
                break;
            }
        }
        libc::_exit(0)
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;

    use super::*;

    #[test]
    fn the_keeper_keeps_kernel_objects_and_closes_streams_and_pipes() {
        let (parent_gone, parent_end) = nix::unistd::pipe().unwrap();
        let (other_read, other_write) = nix::unistd::pipe().unwrap();
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let file = std::fs::File::open("/proc/self/status").unwrap();

        let close = descriptors_the_keeper_closes(&parent_gone, &parent_end);

        for fd in [0, 1, 2] {
            assert!(close.contains(&fd), "standard stream {fd} kept: {close:?}");
        }
        for fd in [&parent_end, &other_read, &other_write] {
            assert!(close.contains(&fd.as_raw_fd()), "pipe {fd:?} kept");
        }
        assert!(close.contains(&file.as_raw_fd()), "a file is kept");
        assert!(
            !close.contains(&socket.as_raw_fd()),
            "a socket is closed by the keeper: its release is what it keeps"
        );
        assert!(
            !close.contains(&parent_gone.as_raw_fd()),
            "its own pipe end"
        );
    }
}
