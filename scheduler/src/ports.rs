//! Free ports for Ballista's listeners, which bind by port number.
//!
//! Ballista's executor takes port numbers and binds them itself, so a free
//! port has to be chosen first and bound later. The OS hands out port 0
//! from the ephemeral range (32768–60999 on Linux), where every outgoing
//! connection takes its local port too: a port released between the choice
//! and the bind could be taken by a connection meanwhile, and the executor
//! would fail to start. Ports below that range are only ever taken by
//! listeners, so they are chosen there, at random.

use std::hash::{BuildHasher, Hasher};
use std::net::{IpAddr, SocketAddr, TcpListener};

/// The range ports are chosen from: below Linux's ephemeral ports.
const PORTS: std::ops::Range<u16> = 20_000..32_768;
/// Random ports tried before falling back to one the OS picks.
const ATTEMPTS: usize = 64;

/// A port on `ip` that nothing listens on now, outside the ephemeral range
/// when one is free there.
pub fn free_port(ip: IpAddr) -> std::io::Result<u16> {
    for _ in 0..ATTEMPTS {
        let random = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        let port = PORTS.start + (random % u64::from(PORTS.end - PORTS.start)) as u16;
        if TcpListener::bind(SocketAddr::new(ip, port)).is_ok() {
            return Ok(port);
        }
    }
    TcpListener::bind(SocketAddr::new(ip, 0))?
        .local_addr()
        .map(|address| address.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_free_and_below_the_ephemeral_range() {
        let ip = IpAddr::from([127, 0, 0, 1]);
        let port = free_port(ip).unwrap();
        assert!(PORTS.contains(&port), "{port}");
        TcpListener::bind(SocketAddr::new(ip, port)).expect("still free");
    }
}
