//! The tunnel's wire format: one frame per websocket binary message.
//!
//! `kind (1 byte) | stream id (4 bytes, big endian) | payload`. The
//! websocket message carries the length, so frames have no length field.

use bytes::{BufMut, Bytes, BytesMut};

/// What a frame says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// Open stream `id` to `target` (a name the accepting side maps to a
    /// local service, e.g. `kubelet`).
    Connect {
        id: u32,
        target: String,
    },
    /// Bytes on stream `id`; the sender spent that much of its credit.
    Data {
        id: u32,
        data: Bytes,
    },
    /// The receiver consumed `bytes` of stream `id`: the sender may send
    /// that much more.
    Credit {
        id: u32,
        bytes: u32,
    },
    /// The sender will send no more on stream `id` (half close).
    Fin {
        id: u32,
    },
    /// Stream `id` is aborted, with a reason.
    Reset {
        id: u32,
        reason: String,
    },
    /// Keep-alive probe and answer (stream id 0).
    Ping {
        nonce: u64,
    },
    Pong {
        nonce: u64,
    },
}

const CONNECT: u8 = 1;
const DATA: u8 = 2;
const CREDIT: u8 = 3;
const FIN: u8 = 4;
const RESET: u8 = 5;
const PING: u8 = 6;
const PONG: u8 = 7;

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("failed to decode a tunnel frame: {0}")]
pub struct DecodeError(pub &'static str);

impl Frame {
    pub fn encode(&self) -> Bytes {
        let (kind, id, payload): (u8, u32, &[u8]) = match self {
            Frame::Connect { id, target } => (CONNECT, *id, target.as_bytes()),
            Frame::Data { id, data } => (DATA, *id, data),
            Frame::Credit { id, bytes } => {
                let mut b = BytesMut::with_capacity(9);
                b.put_u8(CREDIT);
                b.put_u32(*id);
                b.put_u32(*bytes);
                return b.freeze();
            }
            Frame::Fin { id } => (FIN, *id, &[]),
            Frame::Reset { id, reason } => (RESET, *id, reason.as_bytes()),
            Frame::Ping { nonce } | Frame::Pong { nonce } => {
                let mut b = BytesMut::with_capacity(13);
                b.put_u8(if matches!(self, Frame::Ping { .. }) {
                    PING
                } else {
                    PONG
                });
                b.put_u32(0);
                b.put_u64(*nonce);
                return b.freeze();
            }
        };
        let mut b = BytesMut::with_capacity(5 + payload.len());
        b.put_u8(kind);
        b.put_u32(id);
        b.put_slice(payload);
        b.freeze()
    }

    pub fn decode(mut msg: Bytes) -> Result<Frame, DecodeError> {
        if msg.len() < 5 {
            return Err(DecodeError("shorter than its header"));
        }
        let kind = msg[0];
        let id = u32::from_be_bytes([msg[1], msg[2], msg[3], msg[4]]);
        let payload = msg.split_off(5);
        let text =
            |p: &Bytes| String::from_utf8(p.to_vec()).map_err(|_| DecodeError("text is not UTF-8"));
        let u64_of = |p: &Bytes| -> Result<u64, DecodeError> {
            let a: [u8; 8] = p[..]
                .try_into()
                .map_err(|_| DecodeError("bad ping payload"))?;
            Ok(u64::from_be_bytes(a))
        };
        Ok(match kind {
            CONNECT => Frame::Connect {
                id,
                target: text(&payload)?,
            },
            DATA => Frame::Data { id, data: payload },
            CREDIT => {
                let a: [u8; 4] = payload[..]
                    .try_into()
                    .map_err(|_| DecodeError("bad credit payload"))?;
                Frame::Credit {
                    id,
                    bytes: u32::from_be_bytes(a),
                }
            }
            FIN => Frame::Fin { id },
            RESET => Frame::Reset {
                id,
                reason: text(&payload)?,
            },
            PING => Frame::Ping {
                nonce: u64_of(&payload)?,
            },
            PONG => Frame::Pong {
                nonce: u64_of(&payload)?,
            },
            _ => return Err(DecodeError("unknown frame kind")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_frame_round_trips() {
        for f in [
            Frame::Connect {
                id: 1,
                target: "kubelet".into(),
            },
            Frame::Data {
                id: 7,
                data: Bytes::from_static(b"hello"),
            },
            Frame::Data {
                id: 7,
                data: Bytes::new(),
            },
            Frame::Credit {
                id: 3,
                bytes: 65536,
            },
            Frame::Fin { id: 9 },
            Frame::Reset {
                id: 9,
                reason: "refused".into(),
            },
            Frame::Ping { nonce: 42 },
            Frame::Pong { nonce: u64::MAX },
        ] {
            assert_eq!(Frame::decode(f.encode()).unwrap(), f);
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(Frame::decode(Bytes::from_static(b"\x02\x00")).is_err());
        assert!(Frame::decode(Bytes::from_static(b"\x09\x00\x00\x00\x01")).is_err());
        assert!(Frame::decode(Bytes::from_static(b"\x03\x00\x00\x00\x01\x00")).is_err());
        assert!(Frame::decode(Bytes::from_static(b"\x06\x00\x00\x00\x00\x01")).is_err());
    }
}
