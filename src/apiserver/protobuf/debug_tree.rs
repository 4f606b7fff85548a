//! A parser for the `Debug` rendering of prost-generated messages.
//!
//! prost gives no reflection, but its derived `Debug` prints every message as
//! `Name { field: value, … }` with declaration-ordered field names, `Some(…)`/`None` for optional
//! fields, `[…]` for repeated fields and bytes, `{k: v, …}` for maps, quoted escaped strings, and
//! plain numbers and booleans. That is enough structure to rebuild the value as a tree; the JSON
//! rules live in `to_json`. The grammar is exactly what `core::fmt`'s builders emit, which is
//! stable, and the tests in the parent module pin it against real `k8s-pb` values.

use std::fmt;

/// One value of a rendered message.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Node {
    /// A message: its Rust type name and its fields in declaration order.
    Struct {
        name: String,
        fields: Vec<(String, Node)>,
    },
    Some(Box<Node>),
    None,
    List(Vec<Node>),
    /// A non-empty list of integers (repeated integers, or `bytes`), kept compact because a
    /// megabyte Secret would otherwise become a million nodes.
    Ints(Vec<i64>),
    Map(Vec<(Node, Node)>),
    Str(String),
    /// A number exactly as printed (integer or float).
    Num(String),
    Bool(bool),
}

/// Where and why the rendering could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ParseError {
    pub(super) offset: usize,
    pub(super) expected: &'static str,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "expected {} at offset {}", self.expected, self.offset)
    }
}

/// Parses one complete rendering.
pub(super) fn parse(text: &str) -> Result<Node, ParseError> {
    let mut parser = Parser { text, pos: 0 };
    let node = parser.value()?;
    parser.skip_spaces();
    if parser.pos != text.len() {
        return Err(parser.error("end of input"));
    }
    Ok(node)
}

struct Parser<'a> {
    text: &'a str,
    pos: usize,
}

impl Parser<'_> {
    fn error(&self, expected: &'static str) -> ParseError {
        ParseError {
            offset: self.pos,
            expected,
        }
    }

    fn rest(&self) -> &str {
        &self.text[self.pos..]
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn skip_spaces(&mut self) {
        while self.peek() == Some(' ') {
            self.pos += 1;
        }
    }

    fn eat(&mut self, token: &str) -> bool {
        self.skip_spaces();
        if self.rest().starts_with(token) {
            self.pos += token.len();
            true
        } else {
            false
        }
    }

    fn expect(&mut self, token: &'static str) -> Result<(), ParseError> {
        if self.eat(token) {
            Ok(())
        } else {
            Err(self.error(token))
        }
    }

    fn value(&mut self) -> Result<Node, ParseError> {
        self.skip_spaces();
        match self.peek() {
            Some('"') => self.string().map(Node::Str),
            Some('[') => self.list(),
            Some('{') => self.map(),
            Some(c) if c == '-' || c.is_ascii_digit() => Ok(self.number()),
            Some(c) if c.is_ascii_alphabetic() || c == '_' => self.word(),
            _ => Err(self.error("a value")),
        }
    }

    fn ident(&mut self) -> Result<String, ParseError> {
        self.skip_spaces();
        let start = self.pos;
        if self.rest().starts_with("r#") {
            self.pos += 2;
        }
        let ident_start = self.pos;
        while matches!(self.peek(), Some(c) if c.is_ascii_alphanumeric() || c == '_') {
            self.pos += 1;
        }
        if self.pos == ident_start {
            self.pos = start;
            return Err(self.error("an identifier"));
        }
        Ok(self.text[ident_start..self.pos].to_string())
    }

    /// `true`, `false`, `None`, `Some(…)`, `inf`, `NaN`, or a message `Name { … }` / `Name`.
    fn word(&mut self) -> Result<Node, ParseError> {
        let word = self.ident()?;
        match word.as_str() {
            "true" => return Ok(Node::Bool(true)),
            "false" => return Ok(Node::Bool(false)),
            "None" => return Ok(Node::None),
            "inf" | "NaN" => return Ok(Node::Num(word)),
            _ => {}
        }
        if word == "Some" && self.eat("(") {
            let inner = self.value()?;
            self.expect(")")?;
            return Ok(Node::Some(Box::new(inner)));
        }
        let mut fields = Vec::new();
        if self.eat("{") && !self.eat("}") {
            loop {
                let field = self.ident()?;
                self.expect(":")?;
                fields.push((field, self.value()?));
                if self.eat("}") {
                    break;
                }
                self.expect(",")?;
            }
        }
        Ok(Node::Struct { name: word, fields })
    }

    fn list(&mut self) -> Result<Node, ParseError> {
        self.expect("[")?;
        let mut items = Vec::new();
        if self.eat("]") {
            return Ok(Node::List(items));
        }
        if let Some(ints) = self.ints() {
            return Ok(Node::Ints(ints));
        }
        loop {
            items.push(self.value()?);
            if self.eat("]") {
                return Ok(Node::List(items));
            }
            self.expect(",")?;
        }
    }

    /// The rest of a list made only of integers, or `None` (position unchanged) otherwise.
    fn ints(&mut self) -> Option<Vec<i64>> {
        let start = self.pos;
        let mut ints = Vec::new();
        loop {
            self.skip_spaces();
            let Node::Num(text) = self.number() else {
                unreachable!("number() yields Num")
            };
            match text.parse() {
                Ok(int) => ints.push(int),
                Err(_) => break,
            }
            if self.eat("]") {
                return Some(ints);
            }
            if !self.eat(",") {
                break;
            }
        }
        self.pos = start;
        None
    }

    fn map(&mut self) -> Result<Node, ParseError> {
        self.expect("{")?;
        let mut entries = Vec::new();
        if self.eat("}") {
            return Ok(Node::Map(entries));
        }
        loop {
            let key = self.value()?;
            self.expect(":")?;
            entries.push((key, self.value()?));
            if self.eat("}") {
                return Ok(Node::Map(entries));
            }
            self.expect(",")?;
        }
    }

    fn number(&mut self) -> Node {
        let start = self.pos;
        if self.peek() == Some('-') {
            self.pos += 1;
        }
        while matches!(self.peek(), Some(c) if c.is_ascii_alphanumeric() || c == '.' || c == '+' || c == '-')
        {
            self.pos += 1;
        }
        Node::Num(self.text[start..self.pos].to_string())
    }

    /// A string as `str`'s `Debug` escapes it: `\"`, `\\`, `\'`, `\n`, `\r`, `\t`, `\0`, `\u{…}`.
    fn string(&mut self) -> Result<String, ParseError> {
        self.expect("\"")?;
        let mut out = String::new();
        let mut chars = self.rest().char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    self.pos += i + 1;
                    return Ok(out);
                }
                '\\' => {
                    let escaped = match chars.next() {
                        Some((_, 'n')) => '\n',
                        Some((_, 'r')) => '\r',
                        Some((_, 't')) => '\t',
                        Some((_, '0')) => '\0',
                        Some((_, '\\')) => '\\',
                        Some((_, '"')) => '"',
                        Some((_, '\'')) => '\'',
                        Some((j, 'u')) => {
                            let tail = &self.rest()[j + 1..];
                            let close = tail.find('}').ok_or_else(|| self.error("`}`"))?;
                            let hex = tail.get(1..close).ok_or_else(|| self.error("`{`"))?;
                            let code = u32::from_str_radix(hex, 16)
                                .map_err(|_| self.error("hex digits"))?;
                            for _ in 0..=close {
                                chars.next();
                            }
                            char::from_u32(code).ok_or_else(|| self.error("a unicode scalar"))?
                        }
                        _ => return Err(self.error("an escape")),
                    };
                    out.push(escaped);
                }
                other => out.push(other),
            }
        }
        Err(self.error("closing quote"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_structs_options_lists_and_maps() {
        let node =
            parse(r#"A { r#type: Some("x"), n: [1, -2], m: {"k": B { v: None }}, e: C, t: true }"#)
                .unwrap();
        let Node::Struct { name, fields } = node else {
            panic!("not a struct")
        };
        assert_eq!(name, "A");
        assert_eq!(
            fields[0],
            ("type".into(), Node::Some(Box::new(Node::Str("x".into()))))
        );
        assert_eq!(fields[1].1, Node::Ints(vec![1, -2]));
        let empty = Node::Struct {
            name: "B".into(),
            fields: vec![("v".into(), Node::None)],
        };
        assert_eq!(fields[2].1, Node::Map(vec![(Node::Str("k".into()), empty)]));
        assert_eq!(
            fields[3].1,
            Node::Struct {
                name: "C".into(),
                fields: vec![]
            }
        );
        assert_eq!(fields[4].1, Node::Bool(true));
    }

    #[test]
    fn round_trips_string_escapes() {
        let original = "quote \" back \\ nl \n tab \t nul \0 bell \u{7} é ́ {a: [b]}";
        let node = parse(&format!("{original:?}")).unwrap();
        assert_eq!(node, Node::Str(original.into()));
    }

    #[test]
    fn integer_lists_stay_compact_and_others_fall_back() {
        assert_eq!(parse("[1, 2, 255]").unwrap(), Node::Ints(vec![1, 2, 255]));
        let mixed = Node::List(vec![Node::Num("1".into()), Node::Num("2.5".into())]);
        assert_eq!(parse("[1, 2.5]").unwrap(), mixed);
        assert_eq!(parse("[]").unwrap(), Node::List(vec![]));
    }

    #[test]
    fn parses_floats_as_printed() {
        assert_eq!(parse("1e-7").unwrap(), Node::Num("1e-7".into()));
        assert_eq!(parse("-2.5").unwrap(), Node::Num("-2.5".into()));
    }

    #[test]
    fn rejects_truncated_input() {
        assert!(parse("A { b: Some(1)").is_err());
        assert!(parse("\"open").is_err());
    }
}
