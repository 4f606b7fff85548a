//! `kubectl port-forward`'s other wire: the kubelet's websocket channel
//! framing (`v4.channel.k8s.io`, its `base64` variant, or no subprotocol),
//! which the Python and JavaScript clients use.
//!
//! The ports come from the query (`port`, as kube-apiserver passes them to
//! the kubelet, or `ports`, as clients send them to the API, which rk3s
//! passes through), each a comma-separated list or repeated. Port `i` gets
//! two channels: `2i` carries data both ways, `2i+1` the errors. The first
//! message on each of them is the port, two bytes little-endian, so a
//! client knows the pairing; after that, data channels carry raw bytes and
//! an error channel the failure's text.
//!
//! Every port is connected at once (inside the pod's network namespace,
//! through [`PortForwardBackend`]); the session ends when every connection
//! has, or when the client goes.

use std::sync::Arc;

use axum::extract::ws::{Message, WebSocket};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::sync::mpsc;

use super::channels::{self, Inbound, Protocol};
use super::portforward::PortForwardBackend;

/// The subprotocols served here (`""`: none offered).
pub fn protocol(name: &str) -> Option<Protocol> {
    match name {
        "" | channels::V4 => Some(Protocol {
            version: 4,
            base64: false,
        }),
        "v4.base64.channel.k8s.io" => Some(Protocol {
            version: 4,
            base64: true,
        }),
        _ => None,
    }
}

/// The forwarded ports of a query, in order; an error says what is wrong.
pub fn ports(query: &str) -> Result<Vec<u16>, String> {
    let mut ports = Vec::new();
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        if k != "port" && k != "ports" {
            continue;
        }
        for p in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match p.parse::<u16>() {
                Ok(n) if n > 0 => ports.push(n),
                _ => return Err(format!("unable to parse \"{p}\" as a port: a port is 1 to 65535")),
            }
        }
    }
    if ports.is_empty() {
        return Err("query parameter \"port\" is required".into());
    }
    Ok(ports)
}

/// Serves one websocket session for `ports` of the pod `(ns, pod, uid)`.
pub async fn serve(
    socket: WebSocket,
    protocol: Protocol,
    ports: Vec<u16>,
    backend: Arc<dyn PortForwardBackend>,
    target: (String, String, String),
) {
    let (mut sink, mut source) = socket.split();
    let (out_tx, mut out_rx) = mpsc::channel::<(u8, Bytes)>(64);
    // One inbox per port, fed by the reader from its data channel.
    let mut inboxes = Vec::new();
    let mut pumps = Vec::new();
    for (i, &port) in ports.iter().enumerate() {
        let (tx, rx) = mpsc::channel::<Bytes>(64);
        inboxes.push(tx);
        let prefix = Bytes::copy_from_slice(&port.to_le_bytes());
        let data = (2 * i) as u8;
        let _ = out_tx.send((data, prefix.clone())).await;
        let _ = out_tx.send((data + 1, prefix)).await;
        pumps.push(tokio::spawn(forward(
            backend.clone(),
            target.clone(),
            port,
            data,
            rx,
            out_tx.clone(),
        )));
    }
    drop(out_tx);
    let reader = tokio::spawn(async move {
        while let Some(Ok(msg)) = source.next().await {
            let raw = match msg {
                Message::Binary(b) => b,
                Message::Text(t) => Bytes::copy_from_slice(t.as_str().as_bytes()),
                Message::Close(_) => break,
                _ => continue,
            };
            let Some(Inbound::Data(ch, data)) = channels::decode_inbound(&raw, protocol) else {
                continue;
            };
            // Only data channels (even numbers) carry anything inward.
            if ch % 2 != 0 {
                continue;
            }
            let Some(inbox) = inboxes.get((ch / 2) as usize) else {
                continue;
            };
            let _ = inbox.send(data).await;
        }
        // Dropping the inboxes ends every connection's upward half.
    });
    while let Some((ch, data)) = out_rx.recv().await {
        if sink.send(channels::encode(protocol, ch, &data)).await.is_err() {
            break;
        }
    }
    let _ = sink
        .send(Message::Close(Some(axum::extract::ws::CloseFrame {
            code: axum::extract::ws::close_code::NORMAL,
            reason: "".into(),
        })))
        .await;
    reader.abort();
    for p in pumps {
        p.abort();
    }
}

/// One port: connects, then copies both ways; a failure goes on the error
/// channel (`data + 1`) in the kubelet's words.
async fn forward(
    backend: Arc<dyn PortForwardBackend>,
    (ns, pod, uid): (String, String, String),
    port: u16,
    data: u8,
    from_client: mpsc::Receiver<Bytes>,
    out: mpsc::Sender<(u8, Bytes)>,
) {
    let tcp = match backend.connect(&ns, &pod, &uid, port).await {
        Ok(t) => t,
        Err(e) => {
            let msg = format!("error forwarding port {port} to pod {pod}, uid {uid}: {e}");
            let _ = out.send((data + 1, Bytes::from(msg))).await;
            return;
        }
    };
    // The pod closing its end finishes the port, as the kubelet's does.
    super::pump::pump(
        tcp,
        tokio_stream::wrappers::ReceiverStream::new(from_client),
        &out,
        |b| (data, Bytes::copy_from_slice(b)),
        None,
        super::pump::Ending::PodSide,
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_come_from_port_or_ports_lists() {
        assert_eq!(ports("ports=8080").unwrap(), vec![8080]);
        assert_eq!(ports("port=80&port=443").unwrap(), vec![80, 443]);
        assert_eq!(ports("ports=80,9090").unwrap(), vec![80, 9090]);
        assert_eq!(
            ports("ports=http").unwrap_err(),
            "unable to parse \"http\" as a port: a port is 1 to 65535"
        );
        assert_eq!(ports("").unwrap_err(), "query parameter \"port\" is required");
    }

    #[test]
    fn only_the_kubelets_port_forward_protocols() {
        assert!(protocol("v4.channel.k8s.io").is_some());
        assert!(protocol("v4.base64.channel.k8s.io").unwrap().base64);
        assert!(protocol("").is_some());
        assert!(protocol("v5.channel.k8s.io").is_none());
    }
}
