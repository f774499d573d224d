//! What the sandbox's three processes (host side, keeper, pid 1) tell each other: one typed
//! message per packet on a SOCK_SEQPACKET socket pair, descriptors passed alongside.

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::{self, ControlMessage, ControlMessageOwned, MsgFlags};

/// Longest message: a setup error, with room for its context.
const MAX: usize = 16 * 1024;

#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// keeper → pid 1: the maps are written and the run's cgroup holds it; the descriptors are
    /// the detached trees to attach (the root, then one per view mount).
    Trees,
    /// pid 1 → host: the relay listener, bound on the sandbox's own loopback.
    Relay,
    /// pid 1 → host: the sandbox is built; the commands start.
    Ready,
    /// any → host: setting up failed; no guest code ran.
    Failed(String),
    /// pid 1 → host: query command `index` (counted among the queries) ended with `code`.
    Queried { index: u32, code: i32 },
    /// keeper → host: the run ended with this status (128 + N for a signal); `oom` when the
    /// kernel killed a process of the run for its memory limit, `timed_out` when the keeper
    /// killed the run for its time limit.
    Exited { code: i32, oom: bool, timed_out: bool },
}

impl Message {
    fn encode(&self) -> Vec<u8> {
        match self {
            Message::Trees => vec![b'T'],
            Message::Relay => vec![b'L'],
            Message::Ready => vec![b'R'],
            Message::Failed(text) => {
                let mut out = vec![b'F'];
                let mut end = text.len().min(MAX - 1);
                while !text.is_char_boundary(end) {
                    end -= 1;
                }
                out.extend_from_slice(&text.as_bytes()[..end]);
                out
            }
            Message::Queried { index, code } => {
                let mut out = vec![b'Q'];
                out.extend_from_slice(&index.to_le_bytes());
                out.extend_from_slice(&code.to_le_bytes());
                out
            }
            Message::Exited { code, oom, timed_out } => {
                let mut out = vec![b'X', u8::from(*oom) | u8::from(*timed_out) << 1];
                out.extend_from_slice(&code.to_le_bytes());
                out
            }
        }
    }

    fn decode(bytes: &[u8]) -> io::Result<Message> {
        let bad = || io::Error::new(io::ErrorKind::InvalidData, "malformed sandbox message");
        let (&tag, rest) = bytes.split_first().ok_or_else(bad)?;
        Ok(match tag {
            b'T' => Message::Trees,
            b'L' => Message::Relay,
            b'R' => Message::Ready,
            b'F' => Message::Failed(String::from_utf8_lossy(rest).into_owned()),
            b'Q' if rest.len() == 8 => Message::Queried {
                index: u32::from_le_bytes(rest[..4].try_into().map_err(|_| bad())?),
                code: i32::from_le_bytes(rest[4..].try_into().map_err(|_| bad())?),
            },
            b'X' if rest.len() == 5 => {
                let code = i32::from_le_bytes(rest[1..].try_into().map_err(|_| bad())?);
                Message::Exited { code, oom: rest[0] & 1 != 0, timed_out: rest[0] & 2 != 0 }
            }
            _ => return Err(bad()),
        })
    }
}

/// Sends `message` with `fds` attached.
pub fn send(socket: BorrowedFd, message: &Message, fds: &[BorrowedFd]) -> io::Result<()> {
    let bytes = message.encode();
    let raw: Vec<RawFd> = fds.iter().map(|fd| fd.as_raw_fd()).collect();
    let cmsgs = if raw.is_empty() { vec![] } else { vec![ControlMessage::ScmRights(&raw)] };
    socket::sendmsg::<()>(socket.as_raw_fd(), &[IoSlice::new(&bytes)], &cmsgs, MsgFlags::MSG_NOSIGNAL, None)?;
    Ok(())
}

/// The next message and its descriptors; `None` when the other side closed its end.
pub fn receive(socket: BorrowedFd) -> io::Result<Option<(Message, Vec<OwnedFd>)>> {
    let mut bytes = vec![0u8; MAX];
    let mut iov = [IoSliceMut::new(&mut bytes)];
    let mut space = nix::cmsg_space!([RawFd; 4]);
    let msg = loop {
        match socket::recvmsg::<()>(socket.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC) {
            Err(nix::errno::Errno::EINTR) => continue,
            other => break other?,
        }
    };
    let mut fds = Vec::new();
    for cmsg in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(received) = cmsg {
            // SAFETY: the kernel just installed these descriptors for us.
            fds.extend(received.into_iter().map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }));
        }
    }
    let len = msg.bytes;
    if len == 0 {
        return Ok(None);
    }
    Ok(Some((Message::decode(&bytes[..len])?, fds)))
}

/// A connected pair of message sockets, close-on-exec.
pub fn pair() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(socket::socketpair(
        socket::AddressFamily::Unix,
        socket::SockType::SeqPacket,
        None,
        socket::SockFlag::SOCK_CLOEXEC,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn messages_and_descriptors_cross_whole() {
        let (a, b) = pair().unwrap();
        let file = std::fs::File::open("/dev/null").unwrap();
        for message in [
            Message::Trees,
            Message::Relay,
            Message::Ready,
            Message::Failed("mounting /proc: EPERM ✗".into()),
            Message::Exited { code: -3, oom: true, timed_out: false },
            Message::Exited { code: 137, oom: false, timed_out: true },
            Message::Queried { index: 2, code: -1 },
        ] {
            send(a.as_fd(), &message, &[file.as_fd()]).unwrap();
            let (got, fds) = receive(b.as_fd()).unwrap().unwrap();
            assert_eq!(got, message);
            assert_eq!(fds.len(), 1);
        }
        let long = Message::Failed("é".repeat(MAX));
        send(a.as_fd(), &long, &[]).unwrap();
        let Some((Message::Failed(text), _)) = receive(b.as_fd()).unwrap() else { panic!() };
        assert!(text.len() < MAX && text.chars().all(|c| c == 'é'), "cut on a character boundary");
        drop(a);
        assert!(receive(b.as_fd()).unwrap().is_none(), "a closed end reads as None");
    }
}
