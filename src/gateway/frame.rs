//! WebSocket frames: server frames encoded once and shared, client frames decoded in place.
//!
//! Header parsing, opcodes and close codes come from `tungstenite`; this module adds what the
//! gateway needs around them: frames encoded once into one `Bytes` (header and payload) that
//! every recipient shares, and a decoder that works on a buffer the connection may free when
//! idle, enforces API Gateway's frame and message limits before buffering a payload, and
//! reassembles fragmented messages.

use std::io::Cursor;

use bytes::{BufMut, Bytes, BytesMut};
use tungstenite::protocol::frame::FrameHeader;
use tungstenite::protocol::frame::coding::{CloseCode, Control, Data, OpCode};

/// An encoded server frame (header and payload in one buffer), cheap to clone and share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutFrame(Bytes);

impl OutFrame {
    /// A text frame.
    pub fn text(payload: &[u8]) -> Self {
        Self::encode(OpCode::Data(Data::Text), payload)
    }

    /// A binary frame.
    pub fn binary(payload: &[u8]) -> Self {
        Self::encode(OpCode::Data(Data::Binary), payload)
    }

    /// A text frame when the payload is UTF-8, else a binary frame.
    pub fn data(payload: &[u8]) -> Self {
        if std::str::from_utf8(payload).is_ok() {
            Self::text(payload)
        } else {
            Self::binary(payload)
        }
    }

    /// Whether `other` is this very frame (a clone of it), not just equal bytes.
    pub(crate) fn shares(&self, other: &OutFrame) -> bool {
        self.0.as_ptr() == other.0.as_ptr() && self.0.len() == other.0.len()
    }

    /// A close frame. Reasons are cut to fit a control frame's 123 bytes.
    pub fn close(code: u16, reason: &str) -> Self {
        let mut cut = reason.len().min(123);
        while !reason.is_char_boundary(cut) {
            cut -= 1;
        }
        let mut payload = Vec::with_capacity(2 + cut);
        payload.extend_from_slice(&code.to_be_bytes());
        payload.extend_from_slice(&reason.as_bytes()[..cut]);
        Self::encode(OpCode::Control(Control::Close), &payload)
    }

    /// A close frame without a status code (the reply to a close that had none).
    pub fn close_empty() -> Self {
        Self::encode(OpCode::Control(Control::Close), &[])
    }

    /// A pong answering a ping's payload.
    pub fn pong(payload: &[u8]) -> Self {
        Self::encode(OpCode::Control(Control::Pong), payload)
    }

    fn encode(opcode: OpCode, payload: &[u8]) -> Self {
        let header = FrameHeader {
            opcode,
            ..FrameHeader::default()
        };
        let len = payload.len() as u64;
        let mut buf = BytesMut::with_capacity(header.len(len) + payload.len());
        header
            .format(len, &mut (&mut buf).writer())
            .expect("writing to memory cannot fail");
        buf.extend_from_slice(payload);
        OutFrame(buf.freeze())
    }

    /// A frame already encoded by another node.
    pub(crate) fn from_encoded(bytes: Bytes) -> Self {
        OutFrame(bytes)
    }

    /// The encoded bytes.
    pub fn bytes(&self) -> &Bytes {
        &self.0
    }

    /// The encoded length.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the frame has no bytes (never true for an encoded frame).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Limits the decoder enforces.
#[derive(Debug, Clone, Copy)]
pub struct DecodeLimits {
    /// Largest frame payload.
    pub max_frame: usize,
    /// Largest reassembled message.
    pub max_message: usize,
    /// Whether binary messages are accepted (API Gateway closes with 1003).
    pub accept_binary: bool,
}

/// What the decoder produced.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// A complete message.
    Message {
        /// The payload.
        data: Bytes,
        /// Whether it was a binary message.
        binary: bool,
    },
    /// A ping, to be answered with a pong carrying the same payload.
    Ping(Bytes),
    /// A pong (ignored, but it is traffic).
    Pong,
    /// A close frame: the code (none when the frame had no payload) and the reason.
    Close(Option<(u16, String)>),
}

/// Why the connection must be closed; carries the close code to send.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason} (close {code})")]
pub struct Violation {
    /// The close code.
    pub code: u16,
    /// The close reason.
    pub reason: &'static str,
}

const fn violation(code: u16, reason: &'static str) -> Violation {
    Violation { code, reason }
}

/// Close code 1002.
const PROTOCOL: u16 = 1002;

/// Decodes client frames and reassembles fragmented messages.
#[derive(Debug, Default)]
pub struct Decoder {
    /// The message being reassembled.
    fragments: Option<Partial>,
    /// Payload bytes of the incomplete frame at the front of the buffer already unmasked and,
    /// for text, checked as UTF-8.
    unmasked: usize,
}

/// A fragmented message so far.
#[derive(Debug)]
struct Partial {
    binary: bool,
    data: BytesMut,
    /// How much of a text message is known to be valid UTF-8: invalid text fails at the
    /// fragment that breaks it, not at the end of the message.
    checked: usize,
}

impl Partial {
    fn new(binary: bool, data: BytesMut) -> Result<Self, Violation> {
        let mut partial = Partial {
            binary,
            data,
            checked: 0,
        };
        partial.check_utf8()?;
        Ok(partial)
    }

    fn check_utf8(&mut self) -> Result<(), Violation> {
        if self.binary {
            return Ok(());
        }
        match std::str::from_utf8(&self.data[self.checked..]) {
            Ok(_) => self.checked = self.data.len(),
            // An incomplete sequence at the end may be finished by the next fragment.
            Err(e) if e.error_len().is_none() => self.checked += e.valid_up_to(),
            Err(_) => return Err(violation(1007, "Text message is not valid UTF-8")),
        }
        Ok(())
    }
}

impl Decoder {
    /// Decodes one frame from the front of `buf`, leaving incomplete input in place.
    pub fn decode(
        &mut self,
        buf: &mut BytesMut,
        limits: &DecodeLimits,
    ) -> Result<Option<Decoded>, Violation> {
        loop {
            let mut cursor = Cursor::new(&buf[..]);
            let (header, len) = match FrameHeader::parse(&mut cursor) {
                Ok(Some(parsed)) => parsed,
                Ok(None) => return Ok(None),
                Err(_) => return Err(violation(PROTOCOL, "Invalid frame header")),
            };
            let header_len = cursor.position() as usize;
            self.check_header(&header, len, limits)?;
            let len = len as usize;
            let mask = header.mask.unwrap_or_default();
            if buf.len() < header_len + len {
                self.check_partial_frame(&header, &mut buf[header_len..], mask)?;
                // Make room for the rest of the frame in one allocation.
                buf.reserve(header_len + len - buf.len());
                return Ok(None);
            }
            let _ = buf.split_to(header_len);
            let mut payload = buf.split_to(len);
            apply_mask_from(&mut payload[self.unmasked..], mask, self.unmasked);
            self.unmasked = 0;
            match header.opcode {
                OpCode::Control(Control::Ping) => return Ok(Some(Decoded::Ping(payload.freeze()))),
                OpCode::Control(Control::Pong) => return Ok(Some(Decoded::Pong)),
                OpCode::Control(Control::Close) => return parse_close(&payload).map(Some),
                OpCode::Control(Control::Reserved(_)) | OpCode::Data(Data::Reserved(_)) => {
                    return Err(violation(PROTOCOL, "Reserved opcode"));
                }
                OpCode::Data(Data::Continue) => {
                    let mut partial = self
                        .fragments
                        .take()
                        .ok_or(violation(PROTOCOL, "Continuation frame without a message"))?;
                    if partial.data.len() + payload.len() > limits.max_message {
                        return Err(violation(1009, "Message too big"));
                    }
                    partial.data.extend_from_slice(&payload);
                    if header.is_final {
                        return finish(partial.data.freeze(), partial.binary).map(Some);
                    }
                    partial.check_utf8()?;
                    self.fragments = Some(partial);
                }
                OpCode::Data(data_kind) => {
                    let binary = data_kind == Data::Binary;
                    if header.is_final {
                        return finish(payload.freeze(), binary).map(Some);
                    }
                    self.fragments = Some(Partial::new(binary, payload)?);
                }
            }
            // A non-final fragment was stored; look for the next frame.
        }
    }

    /// Unmasks what has arrived of an incomplete text frame and checks it is UTF-8 so far, so
    /// that invalid text fails as soon as it arrives.
    fn check_partial_frame(
        &mut self,
        header: &FrameHeader,
        received: &mut [u8],
        mask: [u8; 4],
    ) -> Result<(), Violation> {
        let text = match header.opcode {
            OpCode::Data(Data::Text) => true,
            OpCode::Data(Data::Continue) => self.fragments.as_ref().is_some_and(|p| !p.binary),
            _ => false,
        };
        if !text || received.len() <= self.unmasked {
            return Ok(());
        }
        apply_mask_from(&mut received[self.unmasked..], mask, self.unmasked);
        self.unmasked = received.len();
        // Bytes of the message before this frame that may start an unfinished sequence.
        let carried: &[u8] = match &self.fragments {
            Some(p) => &p.data[p.checked..],
            None => &[],
        };
        let mut probe = Vec::with_capacity(carried.len() + received.len());
        probe.extend_from_slice(carried);
        probe.extend_from_slice(received);
        match std::str::from_utf8(&probe) {
            Err(e) if e.error_len().is_some() => {
                Err(violation(1007, "Text message is not valid UTF-8"))
            }
            _ => Ok(()),
        }
    }

    fn check_header(
        &self,
        header: &FrameHeader,
        len: u64,
        limits: &DecodeLimits,
    ) -> Result<(), Violation> {
        if header.rsv1 || header.rsv2 || header.rsv3 {
            return Err(violation(PROTOCOL, "Reserved bits are set"));
        }
        if header.mask.is_none() {
            return Err(violation(PROTOCOL, "Client frames must be masked"));
        }
        match header.opcode {
            OpCode::Control(Control::Reserved(_)) | OpCode::Data(Data::Reserved(_)) => {
                Err(violation(PROTOCOL, "Reserved opcode"))
            }
            OpCode::Control(_) if !header.is_final => {
                Err(violation(PROTOCOL, "Fragmented control frame"))
            }
            OpCode::Control(_) if len > 125 => Err(violation(PROTOCOL, "Control frame too long")),
            OpCode::Control(_) => Ok(()),
            OpCode::Data(Data::Continue) if self.fragments.is_none() => {
                Err(violation(PROTOCOL, "Continuation frame without a message"))
            }
            OpCode::Data(Data::Text | Data::Binary) if self.fragments.is_some() => Err(violation(
                PROTOCOL,
                "New message before the last one finished",
            )),
            OpCode::Data(data_kind) => {
                let binary = match data_kind {
                    Data::Continue => self.fragments.as_ref().is_some_and(|p| p.binary),
                    kind => kind == Data::Binary,
                };
                if binary && !limits.accept_binary {
                    return Err(violation(1003, "Binary frames are not supported"));
                }
                if len > limits.max_frame as u64 {
                    return Err(violation(1009, "Frame too big"));
                }
                let so_far = self.fragments.as_ref().map_or(0, |p| p.data.len()) as u64;
                if so_far + len > limits.max_message as u64 {
                    return Err(violation(1009, "Message too big"));
                }
                Ok(())
            }
        }
    }
}

fn finish(data: Bytes, binary: bool) -> Result<Decoded, Violation> {
    if !binary && std::str::from_utf8(&data).is_err() {
        return Err(violation(1007, "Text message is not valid UTF-8"));
    }
    Ok(Decoded::Message { data, binary })
}

fn parse_close(payload: &[u8]) -> Result<Decoded, Violation> {
    match payload.len() {
        0 => Ok(Decoded::Close(None)),
        1 => Err(violation(PROTOCOL, "Close frame with a one-byte payload")),
        _ => {
            let code = u16::from_be_bytes([payload[0], payload[1]]);
            if !CloseCode::from(code).is_allowed() || (1016..3000).contains(&code) {
                return Err(violation(PROTOCOL, "Invalid close code"));
            }
            let reason = std::str::from_utf8(&payload[2..])
                .map_err(|_| violation(1007, "Close reason is not valid UTF-8"))?;
            Ok(Decoded::Close(Some((code, reason.to_owned()))))
        }
    }
}

/// Unmasks a client payload in place, starting at payload offset `offset`.
fn apply_mask_from(buf: &mut [u8], mask: [u8; 4], offset: usize) {
    let rotated = [
        mask[offset % 4],
        mask[(offset + 1) % 4],
        mask[(offset + 2) % 4],
        mask[(offset + 3) % 4],
    ];
    apply_mask(buf, rotated);
}

/// Unmasks a client payload in place.
fn apply_mask(buf: &mut [u8], mask: [u8; 4]) {
    let word = u32::from_ne_bytes(mask);
    let (chunks, rest) = buf.split_at_mut(buf.len() & !3);
    for chunk in chunks.chunks_exact_mut(4) {
        let v = u32::from_ne_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]) ^ word;
        chunk.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, b) in rest.iter_mut().enumerate() {
        *b ^= mask[i];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_bench::encode_client_frame;

    const LIMITS: DecodeLimits = DecodeLimits {
        max_frame: 32 * 1024,
        max_message: 128 * 1024,
        accept_binary: false,
    };

    fn decode_all(bytes: &[u8], limits: &DecodeLimits) -> Result<Vec<Decoded>, Violation> {
        let mut buf = BytesMut::from(bytes);
        let mut d = Decoder::default();
        let mut out = Vec::new();
        while let Some(x) = d.decode(&mut buf, limits)? {
            out.push(x);
        }
        Ok(out)
    }

    const M: [u8; 4] = [1, 2, 3, 4];

    #[test]
    fn server_frames_are_encoded_unmasked() {
        assert_eq!(&OutFrame::text(b"hi").bytes()[..], b"\x81\x02hi");
        assert_eq!(
            OutFrame::text(&[b'a'; 200]).bytes()[..4],
            [0x81, 126, 0, 200]
        );
        assert_eq!(
            &OutFrame::close(1000, "ok").bytes()[..],
            b"\x88\x04\x03\xe8ok"
        );
        assert_eq!(&OutFrame::close_empty().bytes()[..], b"\x88\x00");
        assert_eq!(OutFrame::data(&[0xff, 0xfe]).bytes()[0], 0x82);
        let long = "é".repeat(100);
        assert_eq!(OutFrame::close(1001, &long).len(), 2 + 2 + 122);
    }

    #[test]
    fn decodes_a_masked_text_frame_in_pieces() {
        let frame = encode_client_frame(1, true, b"hello", M);
        let mut d = Decoder::default();
        let mut buf = BytesMut::new();
        for (i, byte) in frame.iter().enumerate() {
            buf.extend_from_slice(&[*byte]);
            let r = d.decode(&mut buf, &LIMITS).unwrap();
            if i + 1 < frame.len() {
                assert!(r.is_none());
            } else {
                assert_eq!(
                    r,
                    Some(Decoded::Message {
                        data: Bytes::from_static(b"hello"),
                        binary: false
                    })
                );
            }
        }
        assert!(buf.is_empty());
    }

    #[test]
    fn reassembles_fragments_with_interleaved_control_frames() {
        let mut bytes = encode_client_frame(1, false, b"he", M);
        bytes.extend(encode_client_frame(9, true, b"p", M));
        bytes.extend(encode_client_frame(0, false, b"ll", M));
        bytes.extend(encode_client_frame(0, true, b"o", M));
        let out = decode_all(&bytes, &LIMITS).unwrap();
        assert_eq!(out[0], Decoded::Ping(Bytes::from_static(b"p")));
        assert_eq!(
            out[1],
            Decoded::Message {
                data: Bytes::from_static(b"hello"),
                binary: false
            }
        );
    }

    #[test]
    fn enforces_limits_and_protocol() {
        let code =
            |bytes: Vec<u8>, limits: &DecodeLimits| decode_all(&bytes, limits).unwrap_err().code;
        assert_eq!(code(encode_client_frame(2, true, b"x", M), &LIMITS), 1003);
        let big = vec![b'a'; 32 * 1024 + 1];
        assert_eq!(code(encode_client_frame(1, true, &big, M), &LIMITS), 1009);
        // Five 31 KiB fragments exceed the 128 KiB message limit.
        let part = vec![b'a'; 31 * 1024];
        let mut msg = encode_client_frame(1, false, &part, M);
        for _ in 0..4 {
            msg.extend(encode_client_frame(0, false, &part, M));
        }
        assert_eq!(code(msg, &LIMITS), 1009);
        assert_eq!(
            code(encode_client_frame(1, true, &[0xff], M), &LIMITS),
            1007
        );
        assert_eq!(code(encode_client_frame(0, true, b"x", M), &LIMITS), 1002);
        assert_eq!(code(encode_client_frame(9, false, b"x", M), &LIMITS), 1002);
        assert_eq!(code(encode_client_frame(3, true, b"x", M), &LIMITS), 1002);
        assert_eq!(
            code(encode_client_frame(9, true, &[0; 126], M), &LIMITS),
            1002
        );
        assert_eq!(code(b"\x81\x01a".to_vec(), &LIMITS), 1002, "unmasked");
        assert_eq!(code(encode_client_frame(8, true, &[3], M), &LIMITS), 1002);
        assert_eq!(
            code(encode_client_frame(8, true, &[3, 0xed], M), &LIMITS),
            1002
        );
        assert_eq!(
            code(encode_client_frame(8, true, &[3, 0xe8, 0xff], M), &LIMITS),
            1007
        );
        let mut two = encode_client_frame(1, false, b"a", M);
        two.extend(encode_client_frame(1, true, b"b", M));
        assert_eq!(code(two, &LIMITS), 1002);
        let binary_ok = DecodeLimits {
            accept_binary: true,
            ..LIMITS
        };
        assert_eq!(
            decode_all(&encode_client_frame(2, true, &[0xff], M), &binary_ok).unwrap()[0],
            Decoded::Message {
                data: Bytes::from_static(&[0xff]),
                binary: true
            }
        );
    }

    #[test]
    fn oversize_frames_are_refused_from_the_header_alone() {
        // Only the header of a 1 MiB frame has arrived: refuse it without waiting for the rest.
        let header = &encode_client_frame(1, true, &vec![0; 1 << 20], M)[..14];
        assert_eq!(decode_all(header, &LIMITS).unwrap_err().code, 1009);
    }

    #[test]
    fn invalid_text_fails_at_the_fragment_that_breaks_it() {
        // "κόσμε" split inside a multi-byte sequence is fine...
        let text = "κόσμε".as_bytes();
        let mut ok = encode_client_frame(1, false, &text[..3], M);
        ok.extend(encode_client_frame(0, true, &text[3..], M));
        assert_eq!(
            decode_all(&ok, &LIMITS).unwrap(),
            vec![Decoded::Message {
                data: Bytes::from_static("κόσμε".as_bytes()),
                binary: false
            }]
        );
        // ...but an invalid byte fails before the message ends.
        let mut d = Decoder::default();
        let mut buf = BytesMut::from(&encode_client_frame(1, false, b"ok", M)[..]);
        buf.extend_from_slice(&encode_client_frame(0, false, &[0xff], M));
        assert_eq!(d.decode(&mut buf, &LIMITS).unwrap_err().code, 1007);
    }

    #[test]
    fn invalid_text_fails_before_its_frame_is_complete() {
        let mut payload = b"hello".to_vec();
        payload.push(0xff);
        payload.extend_from_slice(&[b'a'; 100]);
        let frame = encode_client_frame(1, true, &payload, M);
        let mut d = Decoder::default();
        // Only the first 12 bytes have arrived: the invalid byte is among them.
        let mut buf = BytesMut::from(&frame[..12]);
        assert_eq!(d.decode(&mut buf, &LIMITS).unwrap_err().code, 1007);
        // A valid frame that arrives in pieces is unmasked correctly across them.
        let frame = encode_client_frame(1, true, "héllo wörld".as_bytes(), M);
        let mut d = Decoder::default();
        let mut buf = BytesMut::new();
        let mut out = None;
        for byte in frame {
            buf.extend_from_slice(&[byte]);
            if let Some(x) = d.decode(&mut buf, &LIMITS).unwrap() {
                out = Some(x);
            }
        }
        assert_eq!(
            out,
            Some(Decoded::Message {
                data: Bytes::from("héllo wörld"),
                binary: false
            })
        );
    }

    #[test]
    fn close_frames() {
        assert_eq!(
            decode_all(&encode_client_frame(8, true, b"", M), &LIMITS).unwrap(),
            vec![Decoded::Close(None)]
        );
        assert_eq!(
            decode_all(&encode_client_frame(8, true, b"\x0f\xa0bye", M), &LIMITS).unwrap(),
            vec![Decoded::Close(Some((4000, "bye".into())))]
        );
    }

    #[test]
    fn mask_roundtrip_for_every_length() {
        for len in 0..40 {
            let data: Vec<u8> = (0..len as u8).collect();
            let mut masked = data.clone();
            apply_mask(&mut masked, [9, 8, 7, 6]);
            apply_mask(&mut masked, [9, 8, 7, 6]);
            assert_eq!(masked, data);
        }
    }
}
