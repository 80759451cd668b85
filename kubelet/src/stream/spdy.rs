//! SPDY/3.1 framing: the subset the Kubernetes port-forward protocol (`portforward.k8s.io`) uses,
//! server side. kubectl opens streams (`SYN_STREAM` with headers), the server answers each with a
//! `SYN_REPLY`, both send `DATA` (`FLAG_FIN` half-closes), `RST_STREAM` aborts a stream, `PING`
//! is echoed, `GOAWAY` ends the session. `SETTINGS` and `WINDOW_UPDATE` are read and ignored:
//! kubectl's SPDY library (moby/spdystream) does no flow control either.
//!
//! Header blocks are one zlib stream per direction with the SPDY/3 preset dictionary, flushed
//! (`Z_SYNC_FLUSH`) after every block.

use bytes::{Buf as _, BufMut as _, Bytes, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use std::io;

const VERSION: u16 = 3;
const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
/// `FLAG_FIN` (data and control frames).
pub(crate) const FLAG_FIN: u8 = 0x01;
/// The largest frame accepted (the length field has 24 bits; kubectl sends at most 32 KiB).
const MAX_FRAME: usize = 1 << 24;
/// The largest decompressed header block accepted.
const MAX_HEADERS: usize = 64 * 1024;

/// `RST_STREAM` status: protocol error.
pub(crate) const PROTOCOL_ERROR: u32 = 1;
/// `RST_STREAM` status: the stream was refused.
pub(crate) const REFUSED_STREAM: u32 = 3;

/// One frame read from the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Frame {
    /// A new stream and its headers (names lowercase).
    SynStream {
        /// Stream id.
        stream_id: u32,
        /// Half-closed by the client at once.
        fin: bool,
        /// Headers.
        headers: Vec<(String, String)>,
    },
    /// Data on a stream.
    Data {
        /// Stream id.
        stream_id: u32,
        /// The client's last data on this stream.
        fin: bool,
        /// Payload.
        data: Bytes,
    },
    /// The client aborted a stream.
    RstStream {
        /// Stream id.
        stream_id: u32,
    },
    /// A ping to echo.
    Ping(u32),
    /// The client ends the session.
    GoAway,
    /// Anything else (SETTINGS, WINDOW_UPDATE, HEADERS, SYN_REPLY, unknown types).
    Ignored,
}

/// Splits frames off a byte buffer and decodes their header blocks.
pub(crate) struct Decoder {
    inflate: Decompress,
}

impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decoder").finish_non_exhaustive()
    }
}

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

impl Decoder {
    /// A decoder for a new session.
    pub(crate) fn new() -> Decoder {
        Decoder {
            inflate: Decompress::new(true),
        }
    }

    /// Takes one whole frame off the front of `buf`, if it holds one.
    pub(crate) fn decode(&mut self, buf: &mut BytesMut) -> io::Result<Option<Frame>> {
        if buf.len() < 8 {
            return Ok(None);
        }
        let len = usize::from(buf[5]) << 16 | usize::from(buf[6]) << 8 | usize::from(buf[7]);
        if len > MAX_FRAME {
            return Err(bad(format!("SPDY frame of {len} bytes")));
        }
        if buf.len() < 8 + len {
            return Ok(None);
        }
        let head = buf.split_to(8);
        let mut body = buf.split_to(len).freeze();
        let first = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        let flags = head[4];
        if first & 0x8000_0000 == 0 {
            return Ok(Some(Frame::Data {
                stream_id: first,
                fin: flags & FLAG_FIN != 0,
                data: body,
            }));
        }
        let version = (first >> 16) & 0x7fff;
        if version != u32::from(VERSION) {
            return Err(bad(format!("SPDY version {version}, want {VERSION}")));
        }
        let ty = u16::try_from(first & 0xffff).unwrap_or(0);
        let need = |n: usize, what: &str| {
            if body.len() < n {
                Err(bad(format!("short {what} frame ({} bytes)", body.len())))
            } else {
                Ok(())
            }
        };
        Ok(Some(match ty {
            SYN_STREAM => {
                need(10, "SYN_STREAM")?;
                let stream_id = body.get_u32() & 0x7fff_ffff;
                body.advance(6); // associated stream, priority, slot
                let block = self.inflate_block(&body)?;
                Frame::SynStream {
                    stream_id,
                    fin: flags & FLAG_FIN != 0,
                    headers: parse_headers(&block)?,
                }
            }
            RST_STREAM => {
                need(8, "RST_STREAM")?;
                Frame::RstStream {
                    stream_id: body.get_u32() & 0x7fff_ffff,
                }
            }
            PING => {
                need(4, "PING")?;
                Frame::Ping(body.get_u32())
            }
            GOAWAY => Frame::GoAway,
            SYN_REPLY | 8 => {
                // Keep the shared zlib stream in step even though the headers are unused.
                if body.len() > 4 {
                    self.inflate_block(&body[4..])?;
                }
                Frame::Ignored
            }
            _ => Frame::Ignored,
        }))
    }

    /// Inflates one header block (a sync-flushed piece of the session's zlib stream).
    fn inflate_block(&mut self, input: &[u8]) -> io::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(input.len() * 4 + 256);
        let mut pos = 0;
        loop {
            if out.len() > MAX_HEADERS {
                return Err(bad("SPDY header block too large"));
            }
            if out.capacity() - out.len() < 1024 {
                out.reserve(4096);
            }
            let (in0, out0) = (self.inflate.total_in(), out.len());
            let res = self
                .inflate
                .decompress_vec(&input[pos..], &mut out, FlushDecompress::Sync);
            let used = usize::try_from(self.inflate.total_in() - in0)
                .map_err(|_| bad("zlib input overflow"))?;
            pos += used;
            match res {
                Ok(_) => {
                    let stalled = used == 0 && out.len() == out0;
                    if stalled || (pos >= input.len() && out.len() < out.capacity()) {
                        return Ok(out);
                    }
                }
                Err(e) if e.needs_dictionary().is_some() => {
                    self.inflate
                        .set_dictionary(DICTIONARY)
                        .map_err(|e| bad(format!("SPDY header dictionary: {e}")))?;
                }
                Err(e) => return Err(bad(format!("SPDY header block: {e}"))),
            }
        }
    }
}

fn parse_headers(mut b: &[u8]) -> io::Result<Vec<(String, String)>> {
    let short = || bad("truncated SPDY header block");
    let take = |b: &mut &[u8]| -> io::Result<String> {
        if b.len() < 4 {
            return Err(short());
        }
        let n = usize::try_from(b.get_u32()).map_err(|_| short())?;
        if b.len() < n {
            return Err(short());
        }
        let s = String::from_utf8_lossy(&b[..n]).into_owned();
        b.advance(n);
        Ok(s)
    };
    if b.len() < 4 {
        return Err(short());
    }
    let n = b.get_u32();
    let mut out = Vec::new();
    for _ in 0..n {
        let name = take(&mut b)?.to_ascii_lowercase();
        let value = take(&mut b)?;
        out.push((name, value));
    }
    Ok(out)
}

/// Encodes the server's frames.
pub(crate) struct Encoder {
    deflate: Compress,
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoder").finish_non_exhaustive()
    }
}

fn control(out: &mut BytesMut, ty: u16, flags: u8, body: &[u8]) -> io::Result<()> {
    let len = u32::try_from(body.len())
        .ok()
        .filter(|l| *l < 1 << 24)
        .ok_or_else(|| bad("SPDY frame too large"))?;
    out.put_u16(0x8000 | VERSION);
    out.put_u16(ty);
    out.put_u32(u32::from(flags) << 24 | len);
    out.put_slice(body);
    Ok(())
}

impl Encoder {
    /// An encoder for a new session.
    pub(crate) fn new() -> io::Result<Encoder> {
        let mut deflate = Compress::new(Compression::default(), true);
        deflate
            .set_dictionary(DICTIONARY)
            .map_err(|e| bad(format!("SPDY header dictionary: {e}")))?;
        Ok(Encoder { deflate })
    }

    fn deflate_block(&mut self, headers: &[(&str, &str)]) -> io::Result<Vec<u8>> {
        let mut plain = BytesMut::new();
        plain.put_u32(u32::try_from(headers.len()).map_err(|_| bad("too many headers"))?);
        for (k, v) in headers {
            for s in [k, v] {
                plain.put_u32(u32::try_from(s.len()).map_err(|_| bad("header too long"))?);
                plain.put_slice(s.as_bytes());
            }
        }
        let mut out = Vec::with_capacity(plain.len() + 64);
        let mut pos = 0;
        loop {
            out.reserve(256);
            let in0 = self.deflate.total_in();
            self.deflate
                .compress_vec(&plain[pos..], &mut out, FlushCompress::Sync)
                .map_err(|e| bad(format!("compressing SPDY headers: {e}")))?;
            pos += usize::try_from(self.deflate.total_in() - in0).unwrap_or(0);
            // Done when all input is in and the flush did not run out of output room.
            if pos >= plain.len() && out.len() < out.capacity() {
                return Ok(out);
            }
        }
    }

    /// `SYN_REPLY` for `stream_id` with `headers`.
    pub(crate) fn syn_reply(
        &mut self,
        out: &mut BytesMut,
        stream_id: u32,
        headers: &[(&str, &str)],
    ) -> io::Result<()> {
        let block = self.deflate_block(headers)?;
        let mut body = Vec::with_capacity(block.len() + 4);
        body.extend_from_slice(&(stream_id & 0x7fff_ffff).to_be_bytes());
        body.extend_from_slice(&block);
        control(out, SYN_REPLY, 0, &body)
    }
}

/// A `DATA` frame (data longer than the 24-bit length field is refused).
pub(crate) fn data(out: &mut BytesMut, stream_id: u32, fin: bool, data: &[u8]) -> io::Result<()> {
    let len = u32::try_from(data.len())
        .ok()
        .filter(|l| *l < 1 << 24)
        .ok_or_else(|| bad("SPDY data frame too large"))?;
    out.put_u32(stream_id & 0x7fff_ffff);
    out.put_u32(u32::from(if fin { FLAG_FIN } else { 0 }) << 24 | len);
    out.put_slice(data);
    Ok(())
}

/// A `RST_STREAM` frame.
pub(crate) fn rst_stream(out: &mut BytesMut, stream_id: u32, status: u32) -> io::Result<()> {
    let mut body = [0u8; 8];
    body[..4].copy_from_slice(&(stream_id & 0x7fff_ffff).to_be_bytes());
    body[4..].copy_from_slice(&status.to_be_bytes());
    control(out, RST_STREAM, 0, &body)
}

/// A `PING` frame (the echo of the client's).
pub(crate) fn ping(out: &mut BytesMut, id: u32) -> io::Result<()> {
    control(out, PING, 0, &id.to_be_bytes())
}

/// The SPDY/3 header compression dictionary (draft-mbelshe-httpbis-spdy-00, section 2.6.10.1).
pub(crate) const DICTIONARY: &[u8] = b"\
    \x00\x00\x00\x07options\x00\x00\x00\x04head\x00\x00\x00\x04post\x00\x00\x00\x03put\x00\
    \x00\x00\x06delete\x00\x00\x00\x05trace\x00\x00\x00\x06accept\x00\x00\x00\x0eaccept-ch\
    arset\x00\x00\x00\x0faccept-encoding\x00\x00\x00\x0faccept-language\x00\x00\x00\x0dacc\
    ept-ranges\x00\x00\x00\x03age\x00\x00\x00\x05allow\x00\x00\x00\x0dauthorization\x00\
    \x00\x00\x0dcache-control\x00\x00\x00\x0aconnection\x00\x00\x00\x0ccontent-base\x00\
    \x00\x00\x10content-encoding\x00\x00\x00\x10content-language\x00\x00\x00\x0econtent-le\
    ngth\x00\x00\x00\x10content-location\x00\x00\x00\x0bcontent-md5\x00\x00\x00\x0dcontent\
    -range\x00\x00\x00\x0ccontent-type\x00\x00\x00\x04date\x00\x00\x00\x04etag\x00\x00\x00\
    \x06expect\x00\x00\x00\x07expires\x00\x00\x00\x04from\x00\x00\x00\x04host\x00\x00\x00\
    \x08if-match\x00\x00\x00\x11if-modified-since\x00\x00\x00\x0dif-none-match\x00\x00\x00\
    \x08if-range\x00\x00\x00\x13if-unmodified-since\x00\x00\x00\x0dlast-modified\x00\x00\
    \x00\x08location\x00\x00\x00\x0cmax-forwards\x00\x00\x00\x06pragma\x00\x00\x00\x12prox\
    y-authenticate\x00\x00\x00\x13proxy-authorization\x00\x00\x00\x05range\x00\x00\x00\x07\
    referer\x00\x00\x00\x0bretry-after\x00\x00\x00\x06server\x00\x00\x00\x02te\x00\x00\x00\
    \x07trailer\x00\x00\x00\x11transfer-encoding\x00\x00\x00\x07upgrade\x00\x00\x00\x0ause\
    r-agent\x00\x00\x00\x04vary\x00\x00\x00\x03via\x00\x00\x00\x07warning\x00\x00\x00\x10w\
    ww-authenticate\x00\x00\x00\x06method\x00\x00\x00\x03get\x00\x00\x00\x06status\x00\x00\
    \x00\x06200\x20OK\x00\x00\x00\x07version\x00\x00\x00\x08HTTP/1.1\x00\x00\x00\x03url\
    \x00\x00\x00\x06public\x00\x00\x00\x0aset-cookie\x00\x00\x00\x0akeep-alive\x00\x00\x00\
    \x06origin1001012012022052063003023033043053063074024054064074084094104114124134144154\
    16417502504505203\x20Non-Authoritative\x20Information204\x20No\x20Content301\x20Moved\
    \x20Permanently400\x20Bad\x20Request401\x20Unauthorized403\x20Forbidden404\x20Not\x20F\
    ound500\x20Internal\x20Server\x20Error501\x20Not\x20Implemented503\x20Service\x20Unava\
    ilableJan\x20Feb\x20Mar\x20Apr\x20May\x20Jun\x20Jul\x20Aug\x20Sept\x20Oct\x20Nov\x20De\
    c\x2000:00:00\x20Mon,\x20Tue,\x20Wed,\x20Thu,\x20Fri,\x20Sat,\x20Sun,\x20GMTchunked,te\
    xt/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain\
    ,text/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1\
    ,utf-,*,enq=0.";

#[cfg(test)]
mod tests {
    use super::*;

    /// What a client's compressor produces: a SYN_STREAM whose headers reference the dictionary.
    fn client_syn_stream(c: &mut Compress, id: u32, headers: &[(&str, &str)]) -> BytesMut {
        let mut plain = BytesMut::new();
        plain.put_u32(u32::try_from(headers.len()).unwrap());
        for (k, v) in headers {
            for s in [k, v] {
                plain.put_u32(u32::try_from(s.len()).unwrap());
                plain.put_slice(s.as_bytes());
            }
        }
        let mut block = Vec::with_capacity(1024);
        c.compress_vec(&plain, &mut block, FlushCompress::Sync)
            .unwrap();
        let mut body = Vec::new();
        body.extend_from_slice(&id.to_be_bytes());
        body.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        body.extend_from_slice(&block);
        let mut out = BytesMut::new();
        control(&mut out, SYN_STREAM, 0, &body).unwrap();
        out
    }

    #[test]
    fn the_dictionary_is_the_spdy3_one() {
        assert_eq!(DICTIONARY.len(), 1423);
        assert!(DICTIONARY.starts_with(b"\x00\x00\x00\x07options"));
        assert!(DICTIONARY.ends_with(b"utf-,*,enq=0."));
    }

    #[test]
    fn syn_streams_decode_across_one_zlib_stream() {
        let mut client = Compress::new(Compression::default(), true);
        client.set_dictionary(DICTIONARY).unwrap();
        let mut buf = client_syn_stream(
            &mut client,
            1,
            &[("streamType", "error"), ("port", "80"), ("requestID", "0")],
        );
        buf.extend_from_slice(&client_syn_stream(
            &mut client,
            3,
            &[("streamType", "data"), ("port", "80"), ("requestID", "0")],
        ));
        data(&mut buf, 3, true, b"hello").unwrap();
        let mut d = Decoder::new();
        let f1 = d.decode(&mut buf).unwrap().unwrap();
        assert_eq!(
            f1,
            Frame::SynStream {
                stream_id: 1,
                fin: false,
                headers: vec![
                    ("streamtype".into(), "error".into()),
                    ("port".into(), "80".into()),
                    ("requestid".into(), "0".into())
                ]
            }
        );
        let Some(Frame::SynStream {
            stream_id: 3,
            headers,
            ..
        }) = d.decode(&mut buf).unwrap()
        else {
            panic!("second SYN_STREAM");
        };
        assert_eq!(headers[0].1, "data");
        assert_eq!(
            d.decode(&mut buf).unwrap(),
            Some(Frame::Data {
                stream_id: 3,
                fin: true,
                data: Bytes::from_static(b"hello")
            })
        );
        assert_eq!(d.decode(&mut buf).unwrap(), None);
    }

    #[test]
    fn partial_and_bad_frames() {
        let mut d = Decoder::new();
        let mut buf = BytesMut::from(&[0x80, 0x03, 0x00, 0x06, 0x00, 0x00, 0x00][..]);
        assert_eq!(d.decode(&mut buf).unwrap(), None, "7 bytes is no frame yet");
        buf.extend_from_slice(&[0x04, 0, 0, 0]);
        assert_eq!(d.decode(&mut buf).unwrap(), None, "PING body incomplete");
        buf.extend_from_slice(&[7]);
        assert_eq!(d.decode(&mut buf).unwrap(), Some(Frame::Ping(7)));
        let mut v2 = BytesMut::from(&[0x80, 0x02, 0x00, 0x06, 0, 0, 0, 4, 0, 0, 0, 1][..]);
        assert!(d.decode(&mut v2).is_err(), "SPDY/2 is refused");
        let mut garbage = BytesMut::from(&[0x80, 0x03, 0x00, 0x01, 0, 0, 0, 12][..]);
        garbage.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xde, 0xad]);
        assert!(
            d.decode(&mut garbage).is_err(),
            "a header block that is not zlib"
        );
    }

    #[test]
    fn replies_inflate_with_the_dictionary() {
        let mut e = Encoder::new().unwrap();
        let mut out = BytesMut::new();
        e.syn_reply(&mut out, 1, &[]).unwrap();
        e.syn_reply(&mut out, 3, &[("x", "y")]).unwrap();
        let mut inflate = Decompress::new(true);
        let mut d = Decoder::new();
        // Decode our own SYN_REPLYs as frames (ignored), and check the blocks inflate.
        let first = out.clone();
        assert_eq!(d.decode(&mut out).unwrap(), Some(Frame::Ignored));
        assert_eq!(d.decode(&mut out).unwrap(), Some(Frame::Ignored));
        let len = usize::from(first[6]) << 8 | usize::from(first[7]);
        let block = &first[12..8 + len];
        let mut plain = Vec::with_capacity(64);
        let err = inflate
            .decompress_vec(block, &mut plain, FlushDecompress::Sync)
            .unwrap_err();
        assert!(err.needs_dictionary().is_some());
        inflate.set_dictionary(DICTIONARY).unwrap();
        let used = usize::try_from(inflate.total_in()).unwrap();
        inflate
            .decompress_vec(&block[used..], &mut plain, FlushDecompress::Sync)
            .unwrap();
        assert_eq!(plain, [0, 0, 0, 0]);
    }
}
