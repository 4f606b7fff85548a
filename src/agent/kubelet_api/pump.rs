//! Copying one forwarded pod connection both ways, shared by the two
//! port-forward framings (SPDY streams in [`super::portforward`], the
//! websocket channel framing in [`super::portforward_channels`]): the
//! client's chunks are written to the pod's socket, and what the pod sends
//! goes out framed by the caller.
//!
//! The two framings end a connection differently, as the kubelet's do:
//! SPDY half-closes (a FIN on the data stream when the pod closes, the
//! client's side still drained), the channel framing ends the port as soon
//! as the pod closes its end.

use futures::{Stream, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// When a pumped connection is over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Ending {
    /// When both directions have ended (SPDY's half-close).
    BothSides,
    /// As soon as the pod closes its end (the websocket channel framing).
    PodSide,
}

/// Copies `from_client` into `tcp` and `tcp` into `out` (each chunk framed
/// by `frame`); `eof`, if any, is sent when the pod closes its end.
pub(super) async fn pump<B, T>(
    tcp: TcpStream,
    mut from_client: impl Stream<Item = B> + Unpin,
    out: &mpsc::Sender<T>,
    frame: impl Fn(&[u8]) -> T,
    eof: Option<T>,
    ending: Ending,
) where
    B: AsRef<[u8]>,
{
    let (mut tr, mut tw) = tcp.into_split();
    let up = async {
        while let Some(chunk) = from_client.next().await {
            if tw.write_all(chunk.as_ref()).await.is_err() {
                break;
            }
        }
        let _ = tw.shutdown().await;
    };
    let down = async {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match tr.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if out.send(frame(&buf[..n])).await.is_err() {
                        return;
                    }
                }
            }
        }
        if let Some(eof) = eof {
            let _ = out.send(eof).await;
        }
    };
    match ending {
        Ending::BothSides => {
            tokio::join!(up, down);
        }
        Ending::PodSide => {
            tokio::select! {
                _ = down => {}
                _ = async { up.await; std::future::pending::<()>().await } => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    async fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let (a, b) = tokio::join!(TcpStream::connect(addr), l.accept());
        (a.unwrap(), b.unwrap().0)
    }

    #[tokio::test]
    async fn bytes_go_both_ways_and_the_pods_close_sends_eof() {
        let (ours, mut pod) = pair().await;
        let (out_tx, mut out_rx) = mpsc::channel::<Vec<u8>>(8);
        let (in_tx, in_rx) = mpsc::channel::<Vec<u8>>(8);
        let task = tokio::spawn(async move {
            pump(
                ours,
                tokio_stream::wrappers::ReceiverStream::new(in_rx),
                &out_tx,
                |b| [b"d:".as_slice(), b].concat(),
                Some(b"eof".to_vec()),
                Ending::BothSides,
            )
            .await
        });
        in_tx.send(b"ping".to_vec()).await.unwrap();
        let mut got = [0u8; 4];
        pod.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ping");
        pod.write_all(b"pong").await.unwrap();
        assert_eq!(out_rx.recv().await.unwrap(), b"d:pong");
        drop(pod);
        assert_eq!(out_rx.recv().await.unwrap(), b"eof");
        // Both sides: the pump waits for the client's side too.
        assert!(!task.is_finished());
        drop(in_tx);
        task.await.unwrap();
    }

    #[tokio::test]
    async fn pod_side_ending_needs_no_client_close() {
        let (ours, pod) = pair().await;
        let (out_tx, _out_rx) = mpsc::channel::<Vec<u8>>(8);
        let (_in_tx, in_rx) = mpsc::channel::<Vec<u8>>(8);
        drop(pod);
        pump(
            ours,
            tokio_stream::wrappers::ReceiverStream::new(in_rx),
            &out_tx,
            |b| b.to_vec(),
            None,
            Ending::PodSide,
        )
        .await;
    }
}
