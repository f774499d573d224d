//! A terminal of the sandbox's own when vzpkg runs on one: the package manager gets the slave
//! side of a fresh pty, never the operator's terminal, so nothing inside can push keystrokes
//! into the operator's shell (TIOCSTI) or change its settings. The host side copies bytes
//! between the operator's terminal, put in raw mode for the run, and the pty's master side.

use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use anyhow::{Context, Result};
use nix::pty::{openpty, Winsize};
use nix::sys::termios::{self, SetArg, Termios};

pub struct Pty {
    pub master: OwnedFd,
    pub slave: OwnedFd,
}

/// A pty sized like the operator's terminal.
pub fn open() -> Result<Pty> {
    let mut size = Winsize { ws_row: 24, ws_col: 80, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCGWINSZ writes one Winsize into `size`.
    unsafe { libc::ioctl(std::io::stdin().as_raw_fd(), libc::TIOCGWINSZ, &mut size) };
    let pty = openpty(Some(&size), None).context("opening a pty for the sandbox")?;
    Ok(Pty { master: pty.master, slave: pty.slave })
}

/// Puts the operator's terminal in raw mode until dropped.
pub struct RawMode(Option<Termios>);

impl RawMode {
    pub fn enter() -> RawMode {
        let stdin = std::io::stdin();
        let Ok(saved) = termios::tcgetattr(stdin.as_fd()) else { return RawMode(None) };
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        let _ = termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw);
        RawMode(Some(saved))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(saved) = &self.0 {
            let _ = termios::tcsetattr(std::io::stdin().as_fd(), SetArg::TCSANOW, saved);
        }
    }
}

/// Copies the operator's keystrokes to the pty and its output back, in background threads;
/// they end when the pty's last slave is gone.
pub fn relay(master: OwnedFd, tail: crate::container::sandbox::Tail) -> Result<std::thread::JoinHandle<()>> {
    let mut from_pty = std::fs::File::from(master.try_clone()?);
    let mut to_pty = std::fs::File::from(master);
    let output = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        let mut stdout = std::io::stdout();
        // Ends when no process holds the pty's other side any more.
        while let Ok(n @ 1..) = from_pty.read(&mut buf) {
            tail.keep(&buf[..n]);
            if stdout.write_all(&buf[..n]).and_then(|()| stdout.flush()).is_err() {
                break;
            }
        }
    });
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut std::io::stdin(), &mut to_pty);
    });
    Ok(output)
}
