//! Just enough SPDY/3.1 for `kubectl port-forward`: framing, header blocks
//! (zlib with SPDY/3's preset dictionary, one compression context per
//! direction), SYN_STREAM/SYN_REPLY, DATA with FIN, RST_STREAM, PING and
//! GOAWAY. client-go's spdystream does not enforce flow control, but we
//! still return WINDOW_UPDATE credit for what we consume, as a SPDY/3.1
//! peer must.

use std::collections::BTreeMap;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use tokio::io::{AsyncRead, AsyncReadExt};

pub const SYN_STREAM: u16 = 1;
pub const SYN_REPLY: u16 = 2;
pub const RST_STREAM: u16 = 3;
pub const SETTINGS: u16 = 4;
pub const PING: u16 = 6;
pub const GOAWAY: u16 = 7;
pub const HEADERS: u16 = 8;
pub const WINDOW_UPDATE: u16 = 9;
pub const FLAG_FIN: u8 = 0x01;

/// RST_STREAM status codes used here.
pub const RST_PROTOCOL_ERROR: u32 = 1;
pub const RST_CANCEL: u32 = 5;

/// The largest frame accepted (client-go writes at most 32 KiB of data).
const MAX_FRAME: usize = 16 << 20;

/// SPDY/3's header-compression dictionary (draft-mbelshe-httpbis-spdy-00,
/// section 2.6.10.1): length-prefixed common header names and values,
/// then a run of common text.
pub fn dictionary() -> Vec<u8> {
    const WORDS: &[&str] = &[
        "options",
        "head",
        "post",
        "put",
        "delete",
        "trace",
        "accept",
        "accept-charset",
        "accept-encoding",
        "accept-language",
        "accept-ranges",
        "age",
        "allow",
        "authorization",
        "cache-control",
        "connection",
        "content-base",
        "content-encoding",
        "content-language",
        "content-length",
        "content-location",
        "content-md5",
        "content-range",
        "content-type",
        "date",
        "etag",
        "expect",
        "expires",
        "from",
        "host",
        "if-match",
        "if-modified-since",
        "if-none-match",
        "if-range",
        "if-unmodified-since",
        "last-modified",
        "location",
        "max-forwards",
        "pragma",
        "proxy-authenticate",
        "proxy-authorization",
        "range",
        "referer",
        "retry-after",
        "server",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "user-agent",
        "vary",
        "via",
        "warning",
        "www-authenticate",
        "method",
        "get",
        "status",
        "200 OK",
        "version",
        "HTTP/1.1",
        "url",
        "public",
        "set-cookie",
        "keep-alive",
        "origin",
    ];
    const TAIL: &str = concat!(
        "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505",
        "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request",
        "401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented",
        "503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 ",
        "Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,image/jpg,image/gif,",
        "application/xml,application/xhtml+xml,text/plain,text/javascript,publicprivatemax-age=",
        "gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.",
    );
    let mut d = Vec::with_capacity(1423);
    for w in WORDS {
        d.extend_from_slice(&(w.len() as u32).to_be_bytes());
        d.extend_from_slice(w.as_bytes());
    }
    d.extend_from_slice(TAIL.as_bytes());
    d
}

pub type Headers = BTreeMap<String, String>;

/// One frame as read.
#[derive(Debug, PartialEq)]
pub enum Frame {
    Control {
        kind: u16,
        flags: u8,
        payload: Vec<u8>,
    },
    Data {
        stream: u32,
        flags: u8,
        data: Vec<u8>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum SpdyError {
    #[error("failed to read a SPDY frame: {0}")]
    Io(#[from] std::io::Error),
    #[error("failed to parse a SPDY frame: {0}")]
    Protocol(String),
}

/// Reads the next frame; `None` at a clean end of stream.
pub async fn read_frame(r: &mut (impl AsyncRead + Unpin)) -> Result<Option<Frame>, SpdyError> {
    let mut head = [0u8; 8];
    match r.read_exact(&mut head[..1]).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    r.read_exact(&mut head[1..]).await?;
    let flags = head[4];
    let len = u32::from_be_bytes([0, head[5], head[6], head[7]]) as usize;
    if len > MAX_FRAME {
        return Err(SpdyError::Protocol(format!(
            "frame of {len} bytes is too large"
        )));
    }
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload).await?;
    if head[0] & 0x80 != 0 {
        let version = u16::from_be_bytes([head[0] & 0x7f, head[1]]);
        if version != 3 {
            return Err(SpdyError::Protocol(format!(
                "unsupported SPDY version {version}"
            )));
        }
        Ok(Some(Frame::Control {
            kind: u16::from_be_bytes([head[2], head[3]]),
            flags,
            payload,
        }))
    } else {
        let stream = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) & 0x7fff_ffff;
        Ok(Some(Frame::Data {
            stream,
            flags,
            data: payload,
        }))
    }
}

pub fn control(kind: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(8 + payload.len());
    f.extend_from_slice(&[0x80, 3]);
    f.extend_from_slice(&kind.to_be_bytes());
    f.push(flags);
    f.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    f.extend_from_slice(payload);
    f
}

pub fn data(stream: u32, flags: u8, bytes: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(8 + bytes.len());
    f.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    f.push(flags);
    f.extend_from_slice(&(bytes.len() as u32).to_be_bytes()[1..]);
    f.extend_from_slice(bytes);
    f
}

/// Writes frames in the order they are sent, until every sender is gone;
/// then shuts the write side down.
pub fn frame_writer(
    mut wr: impl tokio::io::AsyncWrite + Send + Unpin + 'static,
) -> (
    tokio::sync::mpsc::Sender<Vec<u8>>,
    tokio::task::JoinHandle<()>,
) {
    use tokio::io::AsyncWriteExt;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(64);
    let task = tokio::spawn(async move {
        while let Some(frame) = rx.recv().await {
            if wr.write_all(&frame).await.is_err() {
                break;
            }
        }
        let _ = wr.shutdown().await;
    });
    (tx, task)
}

/// Answers a SYN_STREAM: its stream id and headers with the SYN_REPLY to
/// send, or, when its headers do not parse, the RST_STREAM to send.
pub fn answer_syn_stream(
    payload: &[u8],
    headers_in: &mut HeaderReader,
    headers_out: &mut HeaderWriter,
) -> Result<(u32, Headers, Vec<u8>), Option<Vec<u8>>> {
    let id = u32_at(payload, 0).map_err(|_| None)? & 0x7fff_ffff;
    match payload.get(10..).map(|b| headers_in.read(b)) {
        Some(Ok(headers)) => {
            let mut reply = id.to_be_bytes().to_vec();
            reply.extend_from_slice(&headers_out.write(&Headers::new()));
            Ok((id, headers, control(SYN_REPLY, 0, &reply)))
        }
        _ => Err(Some(reset(id, RST_PROTOCOL_ERROR))),
    }
}

/// RST_STREAM for `stream` with `status`.
pub fn reset(stream: u32, status: u32) -> Vec<u8> {
    let mut p = stream.to_be_bytes().to_vec();
    p.extend_from_slice(&status.to_be_bytes());
    control(RST_STREAM, 0, &p)
}

/// WINDOW_UPDATE returning `consumed` bytes of credit on `stream`.
pub fn window_update(stream: u32, consumed: usize) -> Vec<u8> {
    let mut credit = stream.to_be_bytes().to_vec();
    credit.extend_from_slice(&(consumed as u32).to_be_bytes());
    control(WINDOW_UPDATE, 0, &credit)
}

pub fn u32_at(p: &[u8], at: usize) -> Result<u32, SpdyError> {
    p.get(at..at + 4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or_else(|| SpdyError::Protocol("frame payload too short".into()))
}

/// Header blocks from the peer: one zlib stream for the whole session.
pub struct HeaderReader {
    z: Decompress,
    dict: Vec<u8>,
}

impl Default for HeaderReader {
    fn default() -> Self {
        HeaderReader {
            z: Decompress::new(true),
            dict: dictionary(),
        }
    }
}

impl HeaderReader {
    pub fn read(&mut self, block: &[u8]) -> Result<Headers, SpdyError> {
        let mut out = Vec::with_capacity(block.len() * 4 + 64);
        let mut input = block;
        loop {
            if out.capacity() - out.len() < 256 {
                out.reserve(4096);
            }
            let before_in = self.z.total_in();
            let res = self
                .z
                .decompress_vec(input, &mut out, FlushDecompress::Sync);
            input = &input[(self.z.total_in() - before_in) as usize..];
            match res {
                Ok(Status::StreamEnd) => break,
                Ok(_) if input.is_empty() && out.capacity() > out.len() => break,
                Ok(_) => continue,
                Err(e) if e.needs_dictionary().is_some() => {
                    self.z
                        .set_dictionary(&self.dict)
                        .map_err(|e| SpdyError::Protocol(format!("header dictionary: {e}")))?;
                }
                Err(e) => return Err(SpdyError::Protocol(format!("header block: {e}"))),
            }
        }
        parse_header_block(&out)
    }
}

fn parse_header_block(b: &[u8]) -> Result<Headers, SpdyError> {
    let n = u32_at(b, 0)? as usize;
    let mut at = 4;
    let mut h = Headers::new();
    let take = |at: &mut usize| -> Result<String, SpdyError> {
        let len = u32_at(b, *at)? as usize;
        let s = b
            .get(*at + 4..*at + 4 + len)
            .ok_or_else(|| SpdyError::Protocol("header block truncated".into()))?;
        *at += 4 + len;
        Ok(String::from_utf8_lossy(s).into_owned())
    };
    for _ in 0..n.min(1024) {
        let k = take(&mut at)?;
        let v = take(&mut at)?;
        h.insert(k.to_ascii_lowercase(), v);
    }
    Ok(h)
}

/// Header blocks to the peer: one zlib stream for the whole session (no
/// preset dictionary: the peer only needs one when the stream asks).
pub struct HeaderWriter {
    z: Compress,
}

impl Default for HeaderWriter {
    fn default() -> Self {
        HeaderWriter {
            z: Compress::new(Compression::default(), true),
        }
    }
}

impl HeaderWriter {
    pub fn write(&mut self, headers: &Headers) -> Vec<u8> {
        let mut raw = Vec::new();
        raw.extend_from_slice(&(headers.len() as u32).to_be_bytes());
        for (k, v) in headers {
            raw.extend_from_slice(&(k.len() as u32).to_be_bytes());
            raw.extend_from_slice(k.as_bytes());
            raw.extend_from_slice(&(v.len() as u32).to_be_bytes());
            raw.extend_from_slice(v.as_bytes());
        }
        let mut out = Vec::with_capacity(raw.len() + 64);
        let mut input = &raw[..];
        loop {
            out.reserve(256);
            let before = self.z.total_in();
            let _ = self.z.compress_vec(input, &mut out, FlushCompress::Sync);
            input = &input[(self.z.total_in() - before) as usize..];
            if input.is_empty() && out.capacity() > out.len() {
                break;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dictionary_has_spdy3s_size_and_checksum() {
        let d = dictionary();
        assert_eq!(d.len(), 1423);
        assert_eq!(&d[..11], b"\x00\x00\x00\x07options");
        assert!(d.ends_with(b",*,enq=0."));
    }

    #[test]
    fn header_blocks_round_trip_across_one_zlib_context_with_the_dictionary() {
        // Compress as a SPDY peer does: zlib with the preset dictionary.
        let dict = dictionary();
        let mut peer = Compress::new(Compression::default(), true);
        peer.set_dictionary(&dict).unwrap();
        let mut w = HeaderWriter { z: peer };
        let mut r = HeaderReader::default();
        for i in 0..3 {
            let mut h = Headers::new();
            h.insert("streamtype".into(), "data".into());
            h.insert("port".into(), "8080".into());
            h.insert("requestid".into(), i.to_string());
            let block = w.write(&h);
            assert_eq!(r.read(&block).unwrap(), h);
        }
        // And ours, without a dictionary, reads back too.
        let mut ours = HeaderWriter::default();
        let mut r = HeaderReader::default();
        let h: Headers = [("a".to_string(), "b".to_string())].into();
        assert_eq!(r.read(&ours.write(&h)).unwrap(), h);
        assert_eq!(
            r.read(&ours.write(&Headers::new())).unwrap(),
            Headers::new()
        );
    }

    #[tokio::test]
    async fn frames_round_trip() {
        let mut bytes = control(PING, 0, &7u32.to_be_bytes());
        bytes.extend(data(5, FLAG_FIN, b"hi"));
        let mut r = &bytes[..];
        assert_eq!(
            read_frame(&mut r).await.unwrap(),
            Some(Frame::Control {
                kind: PING,
                flags: 0,
                payload: 7u32.to_be_bytes().to_vec()
            })
        );
        assert_eq!(
            read_frame(&mut r).await.unwrap(),
            Some(Frame::Data {
                stream: 5,
                flags: FLAG_FIN,
                data: b"hi".to_vec()
            })
        );
        assert_eq!(read_frame(&mut r).await.unwrap(), None);
    }
}
