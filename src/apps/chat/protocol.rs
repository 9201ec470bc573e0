//! The chat protocol: requests parsed and checked from JSON, and the frames sent to clients.
//!
//! Parsing is pure (no I/O, no state): it turns a frame's JSON into a [`Request`] or a
//! [`ChatError`] with the code and message the client gets. Frames are encoded once into an
//! [`OutFrame`] that every recipient shares. `docs/protocol.md` documents every frame.

use std::sync::Arc;

use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};
use serde_json::{Map, Value};

use crate::apps::chat::ChatConfig;
use crate::apps::chat::store::{NewMessage, StoredMessage};
use crate::gateway::frame::OutFrame;
use crate::ids::Id;
use crate::time;

/// A room name, checked by [`room`].
pub type Room = Arc<str>;

/// A display name, checked by [`name`].
pub type Name = Arc<str>;

/// The room the articles' clients share.
pub const LOBBY: &str = "lobby";

/// The chat's own actions, each a route key.
pub const ACTIONS: [&str; 8] = [
    "join", "send", "history", "leave", "nick", "who", "react", "rooms",
];

/// The longest room name, in characters.
pub const MAX_ROOM_CHARS: usize = 32;
/// The longest display name, in characters.
pub const MAX_NAME_CHARS: usize = 32;
/// The longest `clientId`, in characters.
pub const MAX_CLIENT_ID_CHARS: usize = 64;
/// The longest `emoji`, in characters.
pub const MAX_EMOJI_CHARS: usize = 16;

/// An error code, the `code` of an error frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// The connection has not joined the room.
    NotMember,
    /// The text is longer than the limit.
    TextTooLong,
    /// The room name breaks the rules.
    BadRoom,
    /// The display name breaks the rules.
    BadName,
    /// A reaction to a message that does not exist (or is no longer kept).
    UnknownMessage,
    /// The connection sends too fast.
    RateLimited,
    /// A field is missing or has the wrong type or range.
    BadRequest,
    /// Storage failed; the request had no effect and may be retried.
    Unavailable,
}

impl ErrorCode {
    /// The code as it appears in the frame.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::NotMember => "not_member",
            ErrorCode::TextTooLong => "text_too_long",
            ErrorCode::BadRoom => "bad_room",
            ErrorCode::BadName => "bad_name",
            ErrorCode::UnknownMessage => "unknown_message",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::Unavailable => "unavailable",
        }
    }
}

/// A refused request: the code and a sentence for people.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", code.as_str())]
pub struct ChatError {
    /// The code.
    pub code: ErrorCode,
    /// What was wrong, in lower case without a trailing period.
    pub message: String,
}

impl ChatError {
    /// An error with this code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ChatError {
            code,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }

    /// The error frame for a request with this action (and, for a `send`, its `clientId`).
    pub fn frame(&self, action: &str, client_id: Option<&str>) -> OutFrame {
        encode(&ErrorFrame {
            kind: "error",
            code: self.code.as_str(),
            message: &self.message,
            action,
            client_id,
        })
    }
}

/// A checked chat request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Join a room (and optionally set the name), recovering messages after `since`.
    Join {
        /// The room.
        room: Room,
        /// The name to use from now on.
        name: Option<Name>,
        /// The last message id the client has.
        since: Option<u64>,
    },
    /// Send a message to a room.
    Send {
        /// The room.
        room: Room,
        /// The text.
        text: Box<str>,
        /// The client's own id for the message, echoed back.
        client_id: Option<Box<str>>,
    },
    /// Older messages of a room.
    History {
        /// The room.
        room: Room,
        /// Only messages with a smaller id.
        before: Option<u64>,
        /// At most this many.
        limit: usize,
    },
    /// Leave a room.
    Leave {
        /// The room.
        room: Room,
    },
    /// Change the display name in every room.
    Nick {
        /// The new name.
        name: Name,
    },
    /// Who is in a room.
    Who {
        /// The room.
        room: Room,
    },
    /// Add one reaction to a message.
    React {
        /// The room.
        room: Room,
        /// The message id.
        id: u64,
        /// The reaction.
        emoji: Box<str>,
    },
    /// The rooms with messages or members.
    Rooms,
}

impl Request {
    /// The action this request came with.
    pub fn action(&self) -> &'static str {
        match self {
            Request::Join { .. } => "join",
            Request::Send { .. } => "send",
            Request::History { .. } => "history",
            Request::Leave { .. } => "leave",
            Request::Nick { .. } => "nick",
            Request::Who { .. } => "who",
            Request::React { .. } => "react",
            Request::Rooms => "rooms",
        }
    }
}

/// Parses and checks a chat request. `action` is the route key that selected it.
pub fn parse(action: &str, body: &Value, config: &ChatConfig) -> Result<Request, ChatError> {
    let Some(map) = body.as_object() else {
        return Err(ChatError::bad_request("the message must be a JSON object"));
    };
    let f = Fields(map);
    Ok(match action {
        "join" => Request::Join {
            room: room(f.required_str("room")?)?,
            name: f.str("name")?.map(name).transpose()?,
            since: f.uint("since")?,
        },
        "send" => {
            let room = room(f.required_str("room")?)?;
            let text = f.required_str("text")?;
            if text.trim().is_empty() {
                return Err(ChatError::bad_request("`text` is empty"));
            }
            let chars = text.chars().count();
            if chars > config.max_text_chars {
                return Err(ChatError::new(
                    ErrorCode::TextTooLong,
                    format!(
                        "the text has {chars} characters; the limit is {}",
                        config.max_text_chars
                    ),
                ));
            }
            let client_id = f.str("clientId")?;
            if client_id.is_some_and(|c| c.chars().count() > MAX_CLIENT_ID_CHARS) {
                return Err(ChatError::bad_request(format!(
                    "`clientId` is longer than {MAX_CLIENT_ID_CHARS} characters"
                )));
            }
            Request::Send {
                room,
                text: text.into(),
                client_id: client_id.map(Into::into),
            }
        }
        "history" => {
            let limit = match f.uint("limit")? {
                None => config.history_default,
                Some(n) if n >= 1 && n <= config.history_max as u64 => n as usize,
                Some(_) => {
                    return Err(ChatError::bad_request(format!(
                        "`limit` must be between 1 and {}",
                        config.history_max
                    )));
                }
            };
            Request::History {
                room: room(f.required_str("room")?)?,
                before: f.uint("before")?,
                limit,
            }
        }
        "leave" => Request::Leave {
            room: room(f.required_str("room")?)?,
        },
        "nick" => Request::Nick {
            name: name(f.required_str("name")?)?,
        },
        "who" => Request::Who {
            room: room(f.required_str("room")?)?,
        },
        "react" => {
            let room = room(f.required_str("room")?)?;
            let Some(id) = f.uint("id")? else {
                return Err(ChatError::bad_request("`id` is required"));
            };
            let emoji = f.required_str("emoji")?;
            let chars = emoji.chars().count();
            if chars == 0
                || chars > MAX_EMOJI_CHARS
                || emoji.chars().any(|c| c.is_whitespace() || c.is_control())
            {
                return Err(ChatError::bad_request(format!(
                    "`emoji` must be 1 to {MAX_EMOJI_CHARS} characters without spaces"
                )));
            }
            Request::React {
                room,
                id,
                emoji: emoji.into(),
            }
        }
        "rooms" => Request::Rooms,
        other => {
            return Err(ChatError::bad_request(format!(
                "unknown chat action {other:?}"
            )));
        }
    })
}

/// Checks a room name: 1 to 32 characters, lower-case ASCII letters, digits, `-` and `_`,
/// starting with a letter or a digit.
pub fn room(s: &str) -> Result<Room, ChatError> {
    let b = s.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= MAX_ROOM_CHARS
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter()
            .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'_');
    if ok {
        Ok(Arc::from(s))
    } else {
        Err(ChatError::new(
            ErrorCode::BadRoom,
            format!(
                "{s:?} is not a room name: use 1 to {MAX_ROOM_CHARS} lower-case letters, digits, `-` or `_`, starting with a letter or digit"
            ),
        ))
    }
}

/// Checks a display name: leading and trailing white space is removed; then 1 to 32
/// characters, none of them a control character or an invisible formatting character
/// (zero-width spaces and joiners, bidirectional overrides, byte order marks).
pub fn name(s: &str) -> Result<Name, ChatError> {
    let trimmed = s.trim();
    let chars = trimmed.chars().count();
    if chars == 0 || chars > MAX_NAME_CHARS {
        return Err(ChatError::new(
            ErrorCode::BadName,
            format!("names are 1 to {MAX_NAME_CHARS} characters, not counting spaces around them"),
        ));
    }
    if let Some(c) = trimmed.chars().find(|&c| c.is_control() || is_invisible(c)) {
        return Err(ChatError::new(
            ErrorCode::BadName,
            format!(
                "names cannot contain control or invisible characters (U+{:04X})",
                c as u32
            ),
        ));
    }
    Ok(Arc::from(trimmed))
}

fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{2028}'..='\u{202E}'
            | '\u{2060}'..='\u{2069}'
            | '\u{FEFF}'
    )
}

/// The name a connection has until it picks one: `guest-` and the start of its id.
pub fn default_name(id: Id) -> Name {
    Arc::from(format!("guest-{}", &id.as_str()[..4]))
}

struct Fields<'a>(&'a Map<String, Value>);

impl<'a> Fields<'a> {
    fn str(&self, key: &str) -> Result<Option<&'a str>, ChatError> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(ChatError::bad_request(format!("`{key}` must be a string"))),
        }
    }

    fn required_str(&self, key: &str) -> Result<&'a str, ChatError> {
        self.str(key)?
            .ok_or_else(|| ChatError::bad_request(format!("`{key}` is required")))
    }

    fn uint(&self, key: &str) -> Result<Option<u64>, ChatError> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) if n.as_u64().is_some() => Ok(n.as_u64()),
            Some(_) => Err(ChatError::bad_request(format!(
                "`{key}` must be a non-negative integer"
            ))),
        }
    }
}

/// A connection as others see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The connection id.
    pub id: Id,
    /// The display name.
    pub name: Name,
}

impl Serialize for Member {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        MemberView {
            connection_id: self.id.as_str(),
            name: &self.name,
        }
        .serialize(s)
    }
}

#[derive(Serialize)]
struct MemberView<'a> {
    #[serde(rename = "connectionId")]
    connection_id: &'a str,
    name: &'a str,
}

/// Reaction counts as a JSON object, `{"👏": 3}`.
struct Reactions<'a>(&'a [(String, u64)]);

impl Serialize for Reactions<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (emoji, count) in self.0 {
            map.serialize_entry(emoji, count)?;
        }
        map.end()
    }
}

/// One message, live or from history: the same shape everywhere.
#[derive(Serialize)]
struct MessageView<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    room: &'a str,
    id: u64,
    from: MemberView<'a>,
    text: &'a str,
    ts: String,
    #[serde(rename = "clientId", skip_serializing_if = "Option::is_none")]
    client_id: Option<&'a str>,
    reactions: Reactions<'a>,
}

impl<'a> MessageView<'a> {
    fn stored(room: &'a str, m: &'a StoredMessage) -> Self {
        MessageView {
            kind: "message",
            room,
            id: m.id,
            from: MemberView {
                connection_id: &m.from_id,
                name: &m.from_name,
            },
            text: &m.text,
            ts: time::iso_ms(m.ts_ms),
            client_id: m.client_id.as_deref(),
            reactions: Reactions(&m.reactions),
        }
    }
}

fn stored_views<'a>(room: &'a str, messages: &'a [StoredMessage]) -> Vec<MessageView<'a>> {
    messages
        .iter()
        .map(|m| MessageView::stored(room, m))
        .collect()
}

fn encode(value: &impl Serialize) -> OutFrame {
    OutFrame::text(&serde_json::to_vec(value).expect("frames always serialise"))
}

/// `message`: a new message, as every member receives it (the sender's acknowledgement).
pub fn message_frame(m: &NewMessage, id: u64) -> OutFrame {
    encode(&MessageView {
        kind: "message",
        room: &m.room,
        id,
        from: MemberView {
            connection_id: m.from.id.as_str(),
            name: &m.from.name,
        },
        text: &m.text,
        ts: time::iso_ms(m.ts_ms),
        client_id: m.client_id.as_deref(),
        reactions: Reactions(&[]),
    })
}

/// What a `joined` frame carries.
#[derive(Debug)]
pub struct Joined<'a> {
    /// The room.
    pub room: &'a str,
    /// The joiner.
    pub you: &'a Member,
    /// Everyone in the room, the joiner included.
    pub members: &'a [Member],
    /// The latest messages, or those after `since`.
    pub messages: &'a [StoredMessage],
    /// The room's last message id.
    pub last_id: u64,
    /// Whether messages after `since` are missing from `messages`.
    pub truncated: bool,
}

/// `joined`: the answer to `join`.
pub fn joined_frame(j: &Joined<'_>) -> OutFrame {
    #[derive(Serialize)]
    struct Frame<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        room: &'a str,
        you: &'a Member,
        members: &'a [Member],
        messages: Vec<MessageView<'a>>,
        #[serde(rename = "lastId")]
        last_id: u64,
        truncated: bool,
    }
    encode(&Frame {
        kind: "joined",
        room: j.room,
        you: j.you,
        members: j.members,
        messages: stored_views(j.room, j.messages),
        last_id: j.last_id,
        truncated: j.truncated,
    })
}

/// `history`: the answer to `history`.
pub fn history_frame(room: &str, messages: &[StoredMessage], has_more: bool) -> OutFrame {
    #[derive(Serialize)]
    struct Frame<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        room: &'a str,
        messages: Vec<MessageView<'a>>,
        #[serde(rename = "hasMore")]
        has_more: bool,
    }
    encode(&Frame {
        kind: "history",
        room,
        messages: stored_views(room, messages),
        has_more,
    })
}

/// A presence event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PresenceEvent {
    /// Someone joined.
    Join,
    /// Someone left (or disconnected).
    Leave,
    /// Someone changed their name.
    Rename,
}

/// `presence`: someone joined, left or changed name; `previous` is the old name of a rename.
pub fn presence_frame(
    room: &str,
    event: PresenceEvent,
    member: &Member,
    previous: Option<&str>,
) -> OutFrame {
    #[derive(Serialize)]
    struct Frame<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        room: &'a str,
        event: &'static str,
        member: &'a Member,
        #[serde(skip_serializing_if = "Option::is_none")]
        previous: Option<&'a str>,
    }
    encode(&Frame {
        kind: "presence",
        room,
        event: match event {
            PresenceEvent::Join => "join",
            PresenceEvent::Leave => "leave",
            PresenceEvent::Rename => "rename",
        },
        member,
        previous,
    })
}

/// `presence` `leave` of several members at once (the node they were connected to died):
/// one frame per room instead of one per member, whose recipients would otherwise get as many
/// frames as members left. Only their ids: a departure needs no name, and each recipient of a
/// dead node's frames gets thousands of ids (names made the frames 2.8 times as large).
pub fn presence_left_frame(room: &str, ids: &[Id]) -> OutFrame {
    #[derive(Serialize)]
    struct Frame<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        room: &'a str,
        event: &'static str,
        #[serde(rename = "connectionIds")]
        connection_ids: Vec<&'a str>,
    }
    encode(&Frame {
        kind: "presence",
        room,
        event: "leave",
        connection_ids: ids.iter().map(Id::as_str).collect(),
    })
}

/// `members`: the answer to `who`.
pub fn members_frame(room: &str, members: &[Member]) -> OutFrame {
    #[derive(Serialize)]
    struct Frame<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        room: &'a str,
        members: &'a [Member],
    }
    encode(&Frame {
        kind: "members",
        room,
        members,
    })
}

/// `reaction`: a message's new count for one emoji.
pub fn reaction_frame(room: &str, id: u64, emoji: &str, count: u64) -> OutFrame {
    #[derive(Serialize)]
    struct Frame<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        room: &'a str,
        id: u64,
        emoji: &'a str,
        count: u64,
    }
    encode(&Frame {
        kind: "reaction",
        room,
        id,
        emoji,
        count,
    })
}

/// `left`: the answer to `leave`.
pub fn left_frame(room: &str) -> OutFrame {
    #[derive(Serialize)]
    struct Frame<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        room: &'a str,
    }
    encode(&Frame { kind: "left", room })
}

/// `nick`: the answer to `nick`.
pub fn nick_frame(you: &Member, previous: &str) -> OutFrame {
    #[derive(Serialize)]
    struct Frame<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        you: &'a Member,
        previous: &'a str,
    }
    encode(&Frame {
        kind: "nick",
        you,
        previous,
    })
}

/// One entry of a `rooms` frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RoomSummary {
    /// The room.
    #[serde(serialize_with = "str_of")]
    pub room: Room,
    /// Members connected now.
    pub members: usize,
    /// The room's last message id (0: no message yet).
    #[serde(rename = "lastId")]
    pub last_id: u64,
}

fn str_of<S: Serializer>(value: &Room, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(value)
}

/// `rooms`: the answer to `rooms`.
pub fn rooms_frame(rooms: &[RoomSummary]) -> OutFrame {
    #[derive(Serialize)]
    struct Frame<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        rooms: &'a [RoomSummary],
    }
    encode(&Frame {
        kind: "rooms",
        rooms,
    })
}

#[derive(Serialize)]
struct ErrorFrame<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    code: &'static str,
    message: &'a str,
    action: &'a str,
    #[serde(rename = "clientId", skip_serializing_if = "Option::is_none")]
    client_id: Option<&'a str>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config() -> ChatConfig {
        ChatConfig::default()
    }

    fn code(action: &str, body: Value) -> ErrorCode {
        parse(action, &body, &config()).unwrap_err().code
    }

    fn payload(frame: &OutFrame) -> Value {
        // Frames here are small: a two-byte header, or four with a 16-bit length.
        let b = frame.bytes();
        let start = if b[1] & 0x7f == 126 { 4 } else { 2 };
        serde_json::from_slice(&b[start..]).unwrap()
    }

    #[test]
    fn room_names() {
        for ok in [
            "lobby",
            "a",
            "0",
            "room-1_b",
            "abcdefghijklmnopqrstuvwxyz012345",
        ] {
            assert!(room(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "Lobby",
            "-a",
            "_a",
            "a b",
            "a/b",
            "é",
            "abcdefghijklmnopqrstuvwxyz0123456",
        ] {
            assert_eq!(room(bad).unwrap_err().code, ErrorCode::BadRoom, "{bad}");
        }
    }

    #[test]
    fn display_names() {
        assert_eq!(&*name("  alice  ").unwrap(), "alice");
        assert_eq!(&*name("Zoë 🎉").unwrap(), "Zoë 🎉");
        assert_eq!(&*name(&"x".repeat(32)).unwrap(), "x".repeat(32));
        for bad in [
            "",
            "   ",
            "a\nb",
            "a\u{0}b",
            "a\u{202E}b",
            "a\u{200B}",
            &"x".repeat(33),
        ] {
            assert_eq!(name(bad).unwrap_err().code, ErrorCode::BadName, "{bad:?}");
        }
    }

    #[test]
    fn requests_parse() {
        let c = config();
        assert_eq!(
            parse(
                "join",
                &json!({"room":"lobby","name":"alice","since":41}),
                &c
            )
            .unwrap(),
            Request::Join {
                room: "lobby".into(),
                name: Some("alice".into()),
                since: Some(41)
            }
        );
        assert_eq!(
            parse("history", &json!({"room":"r"}), &c).unwrap(),
            Request::History {
                room: "r".into(),
                before: None,
                limit: 50
            }
        );
        assert_eq!(
            parse(
                "send",
                &json!({"room":"r","text":"hi","clientId":"c-1"}),
                &c
            )
            .unwrap(),
            Request::Send {
                room: "r".into(),
                text: "hi".into(),
                client_id: Some("c-1".into())
            }
        );
        assert_eq!(parse("rooms", &json!({}), &c).unwrap(), Request::Rooms);
    }

    #[test]
    fn request_errors() {
        assert_eq!(code("join", json!([])), ErrorCode::BadRequest);
        assert_eq!(code("join", json!({})), ErrorCode::BadRequest);
        assert_eq!(code("join", json!({"room": 5})), ErrorCode::BadRequest);
        assert_eq!(code("join", json!({"room": "A"})), ErrorCode::BadRoom);
        assert_eq!(
            code("join", json!({"room": "a", "since": -1})),
            ErrorCode::BadRequest
        );
        assert_eq!(
            code("join", json!({"room": "a", "name": ""})),
            ErrorCode::BadName
        );
        assert_eq!(
            code("send", json!({"room": "a", "text": "x".repeat(4001)})),
            ErrorCode::TextTooLong
        );
        assert_eq!(
            code("send", json!({"room": "a", "text": " "})),
            ErrorCode::BadRequest
        );
        assert_eq!(
            code("history", json!({"room": "a", "limit": 0})),
            ErrorCode::BadRequest
        );
        assert_eq!(
            code("history", json!({"room": "a", "limit": 201})),
            ErrorCode::BadRequest
        );
        assert_eq!(
            code("react", json!({"room": "a", "id": 1, "emoji": "a b"})),
            ErrorCode::BadRequest
        );
        assert_eq!(
            code("react", json!({"room": "a", "emoji": "👏"})),
            ErrorCode::BadRequest
        );
        // Exactly the limit is fine; characters, not bytes, are counted.
        assert!(
            parse(
                "send",
                &json!({"room": "a", "text": "é".repeat(4000)}),
                &config()
            )
            .is_ok()
        );
    }

    #[test]
    fn frames_have_the_documented_shape() {
        let alice = Member {
            id: Id::parse("Tq3mxb7WNjMCFhA=").unwrap(),
            name: "alice".into(),
        };
        let m = NewMessage {
            room: "lobby".into(),
            from: alice.clone(),
            text: "hi <b>".into(),
            client_id: Some("c-1".into()),
            ts_ms: 1588277433236,
            delivery: Default::default(),
        };
        assert_eq!(
            payload(&message_frame(&m, 7)),
            json!({"type":"message","room":"lobby","id":7,
                   "from":{"connectionId":"Tq3mxb7WNjMCFhA=","name":"alice"},
                   "text":"hi <b>","ts":"2020-04-30T20:10:33.236Z","clientId":"c-1","reactions":{}})
        );
        let e = ChatError::new(ErrorCode::NotMember, "join first");
        assert_eq!(
            payload(&e.frame("send", None)),
            json!({"type":"error","code":"not_member","message":"join first","action":"send"})
        );
        assert_eq!(payload(&e.frame("send", Some("c-9")))["clientId"], "c-9");
        assert_eq!(
            payload(&presence_frame(
                "r",
                PresenceEvent::Rename,
                &alice,
                Some("al")
            )),
            json!({"type":"presence","room":"r","event":"rename",
                   "member":{"connectionId":"Tq3mxb7WNjMCFhA=","name":"alice"},"previous":"al"})
        );
        assert_eq!(
            payload(&presence_left_frame("r", &[alice.id])),
            json!({"type":"presence","room":"r","event":"leave",
                   "connectionIds":["Tq3mxb7WNjMCFhA="]})
        );
        let stored = StoredMessage {
            id: 3,
            ts_ms: 0,
            from_id: "x".into(),
            from_name: "bob".into(),
            text: "yo".into(),
            client_id: None,
            reactions: vec![("👏".into(), 2)],
        };
        assert_eq!(
            payload(&history_frame("r", &[stored], true)),
            json!({"type":"history","room":"r","hasMore":true,"messages":[
                {"type":"message","room":"r","id":3,"from":{"connectionId":"x","name":"bob"},
                 "text":"yo","ts":"1970-01-01T00:00:00.000Z","reactions":{"👏":2}}]})
        );
    }
}
