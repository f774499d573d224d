//! The sandbox's only way out. A listener bound inside the sandbox's network namespace (on its
//! own loopback) is handed to the host side, which relays each connection to the proxy. Nothing
//! else is reachable from inside: the namespace has no other interface. The guest may open
//! only so many connections at once; past that, new ones are closed at once.

use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;

/// Connections relayed at once (two threads each); apt opens a few, dnf up to ten.
pub const MAX_CONNECTIONS: usize = 64;

/// Relays every connection accepted on `inside` to `proxy`, in background threads, for as long
/// as the process lives.
pub fn spawn(inside: TcpListener, proxy: SocketAddr) {
    let open = Arc::new(AtomicUsize::new(0));
    thread::spawn(move || {
        for conn in inside.incoming() {
            let Ok(client) = conn else { continue };
            if open.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
                open.fetch_sub(1, Ordering::SeqCst);
                drop(client);
                continue;
            }
            let open = open.clone();
            thread::spawn(move || {
                if let Ok(upstream) = TcpStream::connect(proxy) {
                    let _ = pipe(client, upstream);
                }
                open.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
}

fn pipe(client: TcpStream, upstream: TcpStream) -> io::Result<()> {
    let (mut client_r, mut upstream_w) = (client.try_clone()?, upstream.try_clone()?);
    let uploading = thread::spawn(move || {
        let _ = io::copy(&mut client_r, &mut upstream_w);
        let _ = upstream_w.shutdown(Shutdown::Write);
    });
    let (mut upstream_r, mut client_w) = (upstream, client);
    let _ = io::copy(&mut upstream_r, &mut client_w);
    let _ = client_w.shutdown(Shutdown::Write);
    let _ = uploading.join();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn connections_past_the_cap_are_closed_at_once() {
        // A proxy that accepts every connection and never answers.
        let proxy = TcpListener::bind("127.0.0.1:0").unwrap();
        let proxy_addr = proxy.local_addr().unwrap();
        let held =
            thread::spawn(move || proxy.incoming().take(MAX_CONNECTIONS).map(|c| c.unwrap()).collect::<Vec<_>>());
        let inside = TcpListener::bind("127.0.0.1:0").unwrap();
        let inside_addr = inside.local_addr().unwrap();
        spawn(inside, proxy_addr);

        let open: Vec<TcpStream> = (0..MAX_CONNECTIONS).map(|_| TcpStream::connect(inside_addr).unwrap()).collect();
        let upstream = held.join().unwrap();
        assert_eq!(upstream.len(), MAX_CONNECTIONS, "every connection up to the cap reached the proxy");
        let mut extra = TcpStream::connect(inside_addr).unwrap();
        let mut byte = [0u8; 1];
        assert_eq!(extra.read(&mut byte).unwrap(), 0, "the connection past the cap was closed");
        drop(open);
    }
}
