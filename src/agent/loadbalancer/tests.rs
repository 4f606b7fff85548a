use std::collections::HashSet;
use std::sync::Arc;

use async_trait::async_trait;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::proxy::{dial_best, proxy_one, Conn, Dialer};
use super::*;

/// Answers dials to the servers in `up` with a pipe whose far end echoes
/// what it reads prefixed by the server's name; refuses the others.
#[derive(Default)]
struct FakeDialer {
    up: Mutex<HashSet<String>>,
    dials: Mutex<Vec<String>>,
}

impl FakeDialer {
    fn with_up(up: &[&str]) -> Arc<Self> {
        let d = FakeDialer::default();
        d.up.lock().unwrap().extend(up.iter().map(|s| s.to_string()));
        Arc::new(d)
    }
    fn set_up(&self, addr: &str, up: bool) {
        let mut set = self.up.lock().unwrap();
        if up {
            set.insert(addr.into());
        } else {
            set.remove(addr);
        }
    }
    fn dials(&self) -> Vec<String> {
        std::mem::take(&mut self.dials.lock().unwrap())
    }
}

#[async_trait]
impl Dialer for FakeDialer {
    async fn dial(&self, addr: &str) -> std::io::Result<Box<dyn Conn>> {
        self.dials.lock().unwrap().push(addr.to_string());
        if !self.up.lock().unwrap().contains(addr) {
            return Err(std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused"));
        }
        let (near, mut far) = tokio::io::duplex(1024);
        let name = addr.to_string();
        tokio::spawn(async move {
            let mut buf = [0u8; 64];
            while let Ok(n) = far.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                let reply = format!("{name}:{}", String::from_utf8_lossy(&buf[..n]));
                if far.write_all(reply.as_bytes()).await.is_err() {
                    break;
                }
            }
        });
        Ok(Box::new(near))
    }
}

fn list(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn a_dead_seed_fails_over_to_the_next_server_and_sticks_there() {
    let b = Balancer::new("a:6443", None);
    b.set_servers(&list(&["a:6443", "b:6443"]));
    let dialer = FakeDialer::with_up(&["a:6443", "b:6443"]);
    let (addr, _, _) = dial_best(&b, dialer.as_ref()).await.unwrap();
    assert_eq!(addr, "a:6443");
    dialer.set_up("a:6443", false);
    let (addr, _, _) = dial_best(&b, dialer.as_ref()).await.unwrap();
    assert_eq!(addr, "b:6443");
    assert_eq!(b.health("a:6443"), Some(Health::Down));
    dialer.dials();
    // Sticky: the next connections go straight to b, not back to a.
    let (addr, _, _) = dial_best(&b, dialer.as_ref()).await.unwrap();
    assert_eq!(addr, "b:6443");
    assert_eq!(dialer.dials(), ["b:6443"]);
}

#[tokio::test]
async fn no_live_server_is_an_error_naming_what_was_tried() {
    let b = Balancer::new("a:6443", None);
    b.set_servers(&list(&["b:6443"]));
    let dialer = FakeDialer::with_up(&[]);
    let err = dial_best(&b, dialer.as_ref()).await.err().unwrap().to_string();
    assert!(err.contains("b:6443") && err.contains("a:6443"), "{err}");
}

#[test]
fn unhealthy_servers_come_last_and_the_seed_is_always_a_candidate() {
    let b = Balancer::new("seed:6443", None);
    b.set_servers(&list(&["a:6443", "b:6443", "c:6443"]));
    assert_eq!(b.servers(), ["a:6443", "b:6443", "c:6443", "seed:6443"]);
    b.set_health("a:6443", Health::Down);
    b.set_health("b:6443", Health::Up);
    assert_eq!(b.candidates(), ["b:6443", "c:6443", "seed:6443", "a:6443"]);
    // The seed stays even when the servers no longer list it.
    b.set_servers(&list(&["c:6443"]));
    assert_eq!(b.candidates(), ["c:6443", "seed:6443"]);
    // An empty list (a transient read) changes nothing.
    b.set_servers(&[]);
    assert_eq!(b.servers(), ["c:6443", "seed:6443"]);
}

#[tokio::test]
async fn a_server_going_down_closes_the_connections_proxied_to_it() {
    let b = Arc::new(Balancer::new("a:6443", None));
    b.set_servers(&list(&["a:6443", "b:6443"]));
    let dialer = FakeDialer::with_up(&["a:6443", "b:6443"]);
    let (mut client, near) = tokio::io::duplex(1024);
    let shutdown = CancellationToken::new();
    let (b2, d2, s2) = (b.clone(), dialer.clone(), shutdown.clone());
    let task = tokio::spawn(async move { proxy_one(Box::new(near), &b2, d2.as_ref(), &s2).await });
    client.write_all(b"hi").await.unwrap();
    let mut buf = [0u8; 64];
    let n = client.read(&mut buf).await.unwrap();
    assert_eq!(&buf[..n], b"a:6443:hi");
    // The tunnel to a went down: the client sees its connection end and
    // its next one goes to b.
    b.set_health("a:6443", Health::Down);
    task.await.unwrap();
    assert_eq!(client.read(&mut buf).await.unwrap(), 0);
    let (addr, _, _) = dial_best(&b, dialer.as_ref()).await.unwrap();
    assert_eq!(addr, "b:6443");
    // Leaving the list closes connections too.
    let (mut client, near) = tokio::io::duplex(1024);
    let (b2, d2, s2) = (b.clone(), dialer.clone(), shutdown.clone());
    let task = tokio::spawn(async move { proxy_one(Box::new(near), &b2, d2.as_ref(), &s2).await });
    client.write_all(b"x").await.unwrap();
    let n = client.read(&mut buf).await.unwrap();
    assert_eq!(&buf[..n], b"b:6443:x");
    b.set_servers(&list(&["c:6443"]));
    task.await.unwrap();
}

#[test]
fn the_server_list_is_remembered_for_the_same_seed_only() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(STATE_FILE);
    let b = Balancer::new("a:6443", Some(file.clone()));
    b.set_servers(&list(&["b:6443", "c:6443"]));
    drop(b);
    let again = Balancer::new("a:6443", Some(file.clone()));
    assert_eq!(again.servers(), ["b:6443", "c:6443", "a:6443"]);
    // A dead seed after a restart: the remembered servers come first.
    assert_eq!(again.candidates()[0], "b:6443");
    let other = Balancer::new("z:6443", Some(file));
    assert_eq!(other.servers(), ["z:6443"]);
}

#[test]
fn addresses_of_urls() {
    let u: http::Uri = "https://10.0.0.1:6443".parse().unwrap();
    assert_eq!(address_of(&u).unwrap(), "10.0.0.1:6443");
    let u: http::Uri = "https://server".parse().unwrap();
    assert_eq!(address_of(&u).unwrap(), "server:6443");
    let u: http::Uri = "https://[fd00::1]:7443".parse().unwrap();
    assert_eq!(address_of(&u).unwrap(), "[fd00::1]:7443");
}
